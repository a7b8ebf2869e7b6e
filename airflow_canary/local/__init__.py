"""The local mesh: a Kubernetes-API-compatible server, a process runner and an Istio-like data plane on loopback.

It needs the ``local`` extra (``pip install 'airflow-provider-canary[local]'``); importing it
without that extra raises an ImportError that names the extra and the missing packages.
"""

from __future__ import annotations

from importlib.util import find_spec

#: import name -> distribution of the ``local`` extra that provides it
LOCAL_EXTRA_MODULES = {
    "sklearn": "scikit-learn",
    "joblib": "joblib",
    "cryptography": "cryptography",
    "prometheus_client": "prometheus-client",
}


def _importable(module: str) -> bool:
    try:
        return find_spec(module) is not None
    except (ImportError, ValueError):  # ValueError: a module set to None in sys.modules
        return False


def _missing() -> list[str]:
    return [dist for module, dist in LOCAL_EXTRA_MODULES.items() if not _importable(module)]


if _missing():
    raise ImportError(
        "airflow_canary.local (the local mesh, model server, load generator and demo) needs the "
        f"'local' extra: pip install 'airflow-provider-canary[local]' (missing: {', '.join(_missing())})"
    )
