"""Traffic mirroring on Istio VirtualServices: shadow a percentage of the rollout's requests to the canary.

Istio's ``HTTPRoute.mirror`` (a Destination) with ``mirrorPercentage.value`` (a double, 0..100;
absent means 100) sends a copy of that share of the route's requests to the mirror destination
and drops its answers; ``HTTPRoute.mirrors`` (a list of ``{destination, percentage}``) does the
same for several destinations, and a route may hold one form or the other, never both (Istio
``VirtualService`` reference; ``validateHTTPRoute``: "HTTP route cannot contain both mirror and
mirrors"). The product mirrors the routes it manages (never its own header routes, whose
requests go to the canary already) and removes only mirrors that target the canary subset;
every other field is kept verbatim.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from airflow_canary.routing.hosts import fqdn
from airflow_canary.routing.values import RouteTarget, RoutingError, validate_mirror_percent
from airflow_canary.routing.virtual_service import (
    _checked_routes,
    _rollout_host,
    _without_mirrors_to,
    rollout_host,
)

Document = dict[str, Any]


def set_mirror(vs: Mapping[str, Any], target: RouteTarget, percent: object = 100) -> Document:
    """Mirror ``percent`` (a number 0..100, e.g. 100 or 12.5) of every managed http route to the canary.

    An existing mirror to the canary is replaced; 0 removes it (as ``remove_mirror``). A route
    with a ``mirrors`` list gets the canary as one more entry; a route whose single ``mirror``
    goes elsewhere is refused with RoutingError (Istio allows ``mirror`` or ``mirrors``, not
    both, and that mirror is the user's). tcp and tls routes cannot mirror and are left alone;
    a VirtualService with none but those is refused with RoutingError.
    """
    value = validate_mirror_percent(percent)
    out = remove_mirror(vs, target)
    if value == 0:
        return out
    host = rollout_host(out, target)
    destination = {"host": _short(host, out), "subset": target.canary_subset}
    http = [r for r in _checked_routes(out, target) if r.protocol == "http"]
    if not http:
        raise RoutingError(
            f"VirtualService {(out.get('metadata') or {}).get('name')!r} has no http route to "
            f"subsets {target.stable_subset!r}/{target.canary_subset!r} (only tcp or tls ones), "
            f"and Istio mirrors only http requests: nothing can be mirrored"
        )
    for route in http:
        body = out["spec"]["http"][route.index]
        if isinstance(body.get("mirrors"), list) and body["mirrors"]:
            body["mirrors"].append(
                {"destination": dict(destination), "percentage": {"value": value}}
            )
            continue
        if isinstance(body.get("mirror"), Mapping):
            raise RoutingError(
                f"http route {route.label!r} of VirtualService "
                f"{(out.get('metadata') or {}).get('name')!r} already mirrors to "
                f"{body['mirror']!r}; Istio allows one mirror per route (or a 'mirrors' list): "
                f"move that mirror into 'mirrors' or remove it first"
            )
        body.pop("mirrors", None)  # an empty list: Istio refuses mirror beside mirrors
        body["mirror"] = dict(destination)
        body["mirrorPercentage"] = {"value": value}
    return out


def remove_mirror(vs: Mapping[str, Any], target: RouteTarget) -> Document:
    """Remove every mirror (``mirror`` or ``mirrors`` entry) that targets the canary subset."""
    out = copy.deepcopy(dict(vs))
    host = _rollout_host(out, target, required=False)
    if host is None:
        return out
    return _without_mirrors_to(out, host, target.canary_subset)


def mirror_percent(vs: Mapping[str, Any], target: RouteTarget) -> float:
    """The largest percentage any managed http route mirrors to the canary (0.0 when none).

    Reads both forms: ``mirror`` with ``mirrorPercentage`` (absent: 100) and ``mirrors``
    entries with ``percentage`` (absent: 100).
    """
    host = rollout_host(vs, target)
    namespace = _namespace(vs)
    found = 0.0
    for route in _checked_routes(vs, target):
        if route.protocol != "http":
            continue
        policies: list[tuple[Any, Any]] = [(route.body.get("mirror"), route.body)]
        policies += [
            (m.get("destination"), {"mirrorPercentage": m.get("percentage")})
            for m in route.body.get("mirrors") or []
            if isinstance(m, Mapping)
        ]
        for mirror, holder in policies:
            if (
                isinstance(mirror, Mapping)
                and mirror.get("subset") == target.canary_subset
                and fqdn(str(mirror.get("host", "")), namespace) == host
            ):
                share = (holder.get("mirrorPercentage") or {}).get("value", 100)
                found = max(found, float(share))
    return found


def _namespace(vs: Mapping[str, Any]) -> str:
    return str((vs.get("metadata") or {}).get("namespace") or "default")


def _short(host: str, vs: Mapping[str, Any]) -> str:
    """The host as the VirtualService's own destinations write it (short name in its namespace)."""
    suffix = f".{_namespace(vs)}.svc.cluster.local"
    return host[: -len(suffix)] if host.endswith(suffix) else host
