"""Traffic mirroring on Istio VirtualServices: shadow a percentage of the rollout's requests to the canary.

Istio's ``HTTPRoute.mirror`` (a Destination) with ``mirrorPercentage.value`` (a double, 0..100)
sends a copy of that share of the route's requests to the mirror destination and drops its
answers (Istio ``VirtualService`` reference). The product sets it on the routes it manages and
removes only mirrors that target the canary subset; every other field is kept verbatim.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from airflow_canary.routing.values import RouteTarget, RoutingError, validate_weight
from airflow_canary.routing.virtual_service import (
    _checked_routes,
    _rollout_host,
    _without_mirrors_to,
    rollout_host,
)

Document = dict[str, Any]


def set_mirror(vs: Mapping[str, Any], target: RouteTarget, percent: object = 100) -> Document:
    """Mirror ``percent`` (integer 0..100) of every managed http route to the canary subset.

    An existing mirror to the canary is replaced; a route that already mirrors elsewhere is
    refused with RoutingError (Istio allows one ``mirror`` per route, and it is the user's).
    """
    value = validate_weight(percent)
    out = remove_mirror(vs, target)
    host = rollout_host(out, target)
    for route in _checked_routes(out, target):
        if route.protocol != "http":
            continue
        body = out["spec"]["http"][route.index]
        if isinstance(body.get("mirror"), Mapping):
            raise RoutingError(
                f"http route {route.label!r} of VirtualService "
                f"{(out.get('metadata') or {}).get('name')!r} already mirrors to "
                f"{body['mirror']!r}; Istio allows one mirror per route: remove it first"
            )
        body["mirror"] = {"host": _short(host, out), "subset": target.canary_subset}
        body["mirrorPercentage"] = {"value": float(value)}
    return out


def remove_mirror(vs: Mapping[str, Any], target: RouteTarget) -> Document:
    """Remove every mirror (``mirror`` or ``mirrors`` entry) that targets the canary subset."""
    out = copy.deepcopy(dict(vs))
    host = _rollout_host(out, target, required=False)
    if host is None:
        return out
    return _without_mirrors_to(out, host, target.canary_subset)


def mirror_percent(vs: Mapping[str, Any], target: RouteTarget) -> float:
    """The largest percentage any managed http route mirrors to the canary (0 when none)."""
    host = rollout_host(vs, target)
    found = 0.0
    for route in _checked_routes(vs, target):
        mirror = route.body.get("mirror")
        if (
            route.protocol == "http"
            and isinstance(mirror, Mapping)
            and mirror.get("subset") == target.canary_subset
            and _fqdn_of(mirror, vs) == host
        ):
            found = max(found, float((route.body.get("mirrorPercentage") or {}).get("value", 100)))
    return found


def _namespace(vs: Mapping[str, Any]) -> str:
    return str((vs.get("metadata") or {}).get("namespace") or "default")


def _fqdn_of(destination: Mapping[str, Any], vs: Mapping[str, Any]) -> str:
    from airflow_canary.routing.hosts import fqdn

    return fqdn(str(destination.get("host", "")), _namespace(vs))


def _short(host: str, vs: Mapping[str, Any]) -> str:
    """The host as the VirtualService's own destinations write it (short name in its namespace)."""
    suffix = f".{_namespace(vs)}.svc.cluster.local"
    return host[: -len(suffix)] if host.endswith(suffix) else host
