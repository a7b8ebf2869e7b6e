"""Test session setup: an isolated AIRFLOW_HOME (set before Airflow is imported) and shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
#: Deployable manifests of the seed's flow: Service, DestinationRule, both Deployments, vs-00.
EXAMPLE_MANIFESTS = REPO / "examples" / "manifests"
#: The seed's expected VirtualService states: 99/1, 90/10, 50/50, all-v2 and the header route.
SEED_FLOW = REPO / "tests" / "data" / "seed-flow"

_home = tempfile.mkdtemp(prefix="airflow-canary-tests-")
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(_home) / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")
# ``airflow dags test`` and triggers run in-process have no executor whose report of a deferral
# could race the trigger's event (airflow_canary/triggers/settle.py): no wait. The fault suite's
# deployment, with a real scheduler and executor, sets the default back.
os.environ.setdefault("AIRFLOW__CANARY__TRIGGER_SETTLE_SECONDS", "0")

pytest_plugins = [
    "tests.fixtures.airflow_env",
    "tests.fixtures.crds",
    "tests.fixtures.example_runs",
    "tests.fixtures.mesh",
    "tests.fixtures.prometheus",
    "tests.fixtures.stack",
]


def seed_manifest(name: str) -> Path:
    """A manifest of the seed's flow by file name (``.yaml`` optional).

    Raises:
        FileNotFoundError: when neither ``examples/manifests`` nor ``tests/data/seed-flow`` has it.
    """
    file_name = name if name.endswith(".yaml") else f"{name}.yaml"
    for directory in (EXAMPLE_MANIFESTS, SEED_FLOW):
        if (directory / file_name).is_file():
            return directory / file_name
    raise FileNotFoundError(f"no seed manifest {file_name} in {EXAMPLE_MANIFESTS} or {SEED_FLOW}")


def pytest_collection_modifyitems(config: object, items: list[object]) -> None:
    """Run every test on the shared rollout stack last, together.

    The stack (mesh, model servers, a load generator at 150 requests/s, Prometheus) lives
    for the rest of the session once started; grouped at the end, it neither slows the other
    tests nor runs beside the Gateway API module's own stack. Otherwise the order is kept.
    """
    items.sort(key=lambda item: "rollout_stack" in getattr(item, "fixturenames", ()))
