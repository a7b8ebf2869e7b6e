"""``canary://<namespace>/<route>``: the asset a rollout updates when it promotes (or rolls back).

``<route>`` is the route object carrying the split: the Istio VirtualService, or the Gateway API
HTTPRoute. A promotion emits an asset event on ``canary://<namespace>/<route>``; a rollback on
``canary://<namespace>/<route>/rollback``. A DAG scheduled on the first starts when a model is
promoted behind that route object. The event's ``extra`` (see :func:`promotion_extra`) carries
the versions, the training run that produced the model when the rollout was started by an asset
event, and every step's verdict.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import SplitResult

from airflow_canary import names
from airflow_canary.routing.router import route_parameter, router_kind

SCHEME = "canary"
#: Asset aliases the rollout's promote and rollback tasks emit through: the target's asset is
#: known only once the task has rendered its route object and namespace.
PROMOTIONS_ALIAS = "canary-promotions"
ROLLBACKS_ALIAS = "canary-rollbacks"
ROLLBACK_SUFFIX = "rollback"


def _route(route: str | None, virtual_service: str | None, http_route: str | None) -> str:
    """The route object's name, given positionally or under its router's parameter name."""
    given = [v for v in (route, virtual_service, http_route) if v is not None]
    if len(given) != 1:
        raise ValueError(
            "name the route object once: promotion_asset(namespace, route), or "
            f"virtual_service=/http_route=; got route={route!r}, "
            f"virtual_service={virtual_service!r}, http_route={http_route!r}"
        )
    return given[0]


def promotion_uri(
    namespace: str,
    route: str | None = None,
    *,
    virtual_service: str | None = None,
    http_route: str | None = None,
) -> str:
    """``canary://<namespace>/<route>``; raises ValueError naming a bad part.

    ``route`` is the VirtualService's or HTTPRoute's name; ``virtual_service=`` or
    ``http_route=`` may name it instead.
    """
    name = _route(route, virtual_service, http_route)
    _check(namespace, name)
    return f"{SCHEME}://{namespace}/{name}"


def rollback_uri(
    namespace: str,
    route: str | None = None,
    *,
    virtual_service: str | None = None,
    http_route: str | None = None,
) -> str:
    """``canary://<namespace>/<route>/rollback``."""
    name = _route(route, virtual_service, http_route)
    return f"{promotion_uri(namespace, name)}/{ROLLBACK_SUFFIX}"


def promotion_asset(
    namespace: str,
    route: str | None = None,
    *,
    virtual_service: str | None = None,
    http_route: str | None = None,
) -> Any:
    """The Airflow ``Asset`` a DAG schedules on to start after each promotion.

    ``route`` is the name of the rollout's VirtualService or HTTPRoute (or pass it as
    ``virtual_service=`` / ``http_route=``).
    """
    from airflow.sdk import Asset

    uri = promotion_uri(namespace, _route(route, virtual_service, http_route))
    return Asset(uri=uri, name=uri)


def rollback_asset(
    namespace: str,
    route: str | None = None,
    *,
    virtual_service: str | None = None,
    http_route: str | None = None,
) -> Any:
    """The Airflow ``Asset`` of the rollout's rollbacks (``canary://<namespace>/<route>/rollback``)."""
    from airflow.sdk import Asset

    uri = rollback_uri(namespace, _route(route, virtual_service, http_route))
    return Asset(uri=uri, name=uri)


def sanitize_uri(uri: SplitResult) -> SplitResult:
    """Airflow's URI handler for the ``canary`` scheme (provider info ``asset-uris``).

    :raises ValueError: when the namespace or the route object's name is not a valid
        Kubernetes name, or the path has more than ``/<route>[/rollback]``
    """
    parts = [p for p in uri.path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and parts[1] != ROLLBACK_SUFFIX):
        raise ValueError(
            f"a canary asset URI is canary://<namespace>/<route>[/rollback], got {uri.geturl()!r}"
        )
    _check(uri.netloc, parts[0])
    return uri._replace(path="/" + "/".join(parts), query="", fragment="")


def _check(namespace: str, route: str) -> None:
    names.namespace_name("namespace", namespace)
    names.object_name("the route object's name", route)


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
    route: str,
    router: str = "istio",
    stable_version: str | None,
    canary_version: str | None,
    dag_id: str,
    run_id: str,
    verdicts: Mapping[str, Any],
    trained_by: list[dict[str, Any]],
    reason: str | None = None,
) -> dict[str, Any]:
    """The ``extra`` of a promotion or rollback asset event (JSON-able).

    The route object is under its router's parameter name (``virtual_service`` for Istio,
    ``http_route`` for Gateway API), with ``router``.

    ``version`` is the version now serving: the canary after a promotion, stable after a
    rollback. ``verdicts`` maps each analysis task id to its verdict's status, reason and
    per-check numbers.
    """
    extra: dict[str, Any] = {
        "outcome": outcome,
        "namespace": namespace,
        route_parameter(router): route,
        "router": router_kind(router).value,
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
