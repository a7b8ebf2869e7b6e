"""``canary://<namespace>/<virtual_service>``: the asset a rollout updates when it promotes (or rolls back).

A promotion emits an asset event on ``canary://<namespace>/<virtual_service>``; a rollback on
``canary://<namespace>/<virtual_service>/rollback``. A DAG scheduled on the first starts when a
model is promoted behind that VirtualService. The event's ``extra`` (see
:func:`promotion_extra`) carries the versions, the training run that produced the model when
the rollout was started by an asset event, and every step's verdict.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult

SCHEME = "canary"
#: Asset aliases the rollout's promote and rollback tasks emit through: the target's asset is
#: known only once the task has rendered its VirtualService and namespace.
PROMOTIONS_ALIAS = "canary-promotions"
ROLLBACKS_ALIAS = "canary-rollbacks"
ROLLBACK_SUFFIX = "rollback"

# RFC 1123 label (namespaces) and subdomain (object names), as kube-apiserver validates them.
_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


def promotion_uri(namespace: str, virtual_service: str) -> str:
    """``canary://<namespace>/<virtual_service>``; raises ValueError naming a bad part."""
    _check(namespace, virtual_service)
    return f"{SCHEME}://{namespace}/{virtual_service}"


def rollback_uri(namespace: str, virtual_service: str) -> str:
    """``canary://<namespace>/<virtual_service>/rollback``."""
    return f"{promotion_uri(namespace, virtual_service)}/{ROLLBACK_SUFFIX}"


def promotion_asset(namespace: str, virtual_service: str) -> Any:
    """The Airflow ``Asset`` a DAG schedules on to start after each promotion."""
    from airflow.sdk import Asset

    uri = promotion_uri(namespace, virtual_service)
    return Asset(uri=uri, name=uri)


def rollback_asset(namespace: str, virtual_service: str) -> Any:
    from airflow.sdk import Asset

    uri = rollback_uri(namespace, virtual_service)
    return Asset(uri=uri, name=uri)


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler for the ``canary`` scheme (provider info ``asset-uris``).

    :raises ValueError: when the namespace or the VirtualService name is not a valid
        Kubernetes name, or the path has more than ``/<virtual_service>[/rollback]``
    """
    parts = [p for p in uri.path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] != ROLLBACK_SUFFIX):
        raise ValueError(
            f"a canary asset URI is canary://<namespace>/<virtual_service>[/rollback], got "
            f"{uri.geturl()!r}"
        )
    _check(uri.netloc, parts[0])
    return uri._replace(path="/" + "/".join(parts), query="", fragment="")


def _check(namespace: str, virtual_service: str) -> None:
    if not isinstance(namespace, str) or not _LABEL.match(namespace) or len(namespace) > 63:
        raise ValueError(
            f"namespace must be a Kubernetes namespace name (RFC 1123 label), got {namespace!r}"
        )
    if (
        not isinstance(virtual_service, str)
        or not _SUBDOMAIN.match(virtual_service)
        or len(virtual_service) > 253
    ):
        raise ValueError(
            f"virtual_service must be a Kubernetes object name (RFC 1123 subdomain), "
            f"got {virtual_service!r}"
        )


def training_runs(
    triggering_asset_events: Mapping[Any, Sequence[Any]] | None,
) -> list[dict[str, Any]]:
    """The asset events that started this rollout (the training runs), as plain dicts."""
    found: list[dict[str, Any]] = []
    for asset, events in (triggering_asset_events or {}).items():
        for event in events or ():
            found.append(
                {
                    "asset": getattr(asset, "uri", None) or str(asset),
                    "dag_id": getattr(event, "source_dag_id", None),
                    "run_id": getattr(event, "source_run_id", None),
                    "task_id": getattr(event, "source_task_id", None),
                    "timestamp": _iso(getattr(event, "timestamp", None)),
                    "extra": dict(getattr(event, "extra", None) or {}),
                }
            )
    return found


def _iso(value: Any) -> str | None:
    return value.isoformat() if hasattr(value, "isoformat") else None


def promotion_extra(
    *,
    outcome: str,
    namespace: str,
    virtual_service: str,
    stable_version: str | None,
    canary_version: str | None,
    dag_id: str,
    run_id: str,
    verdicts: Mapping[str, Any],
    trained_by: list[dict[str, Any]],
    reason: str | None = None,
) -> dict[str, Any]:
    """The ``extra`` of a promotion or rollback asset event (JSON-able).

    ``version`` is the version now serving: the canary after a promotion, stable after a
    rollback. ``verdicts`` maps each analysis task id to its verdict's status, reason and
    per-check numbers.
    """
    extra: dict[str, Any] = {
        "outcome": outcome,
        "namespace": namespace,
        "virtual_service": virtual_service,
        "version": canary_version if outcome == "promoted" else stable_version,
        "canary_version": canary_version,
        "stable_version": stable_version,
        "rollout": {"dag_id": dag_id, "run_id": run_id},
        "trained_by": trained_by,
        "verdicts": dict(verdicts),
    }
    if reason is not None:
        extra["reason"] = reason
    return extra
