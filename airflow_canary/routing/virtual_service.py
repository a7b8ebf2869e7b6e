"""Route surgery on Istio VirtualService documents: weights, header routes, promote, rollback.

Every function takes the whole object as returned by the Kubernetes API and returns a new
one; the input is never mutated, and only the weighted route's destinations and the
product-owned header routes ever change.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from airflow_canary.routing.values import (
    PRODUCT_ROUTE_PREFIX,
    HeaderRoute,
    MatchType,
    RouteTarget,
    RoutingError,
    TrafficSplit,
    product_route_name,
    validate_weight,
)

Document = dict[str, Any]

# Match keys that only label or tune a match; every other key restricts which requests match.
_NON_RESTRICTING_MATCH_KEYS = frozenset({"name", "ignoreUriCase", "statPrefix"})
_MATCH_ALL_URIS = ({"prefix": "/"}, {"regex": ".*"}, {"regex": "/.*"})


@dataclass(frozen=True)
class _WeightedRoute:
    """The route carrying the split, located in ``spec.http`` of one document."""

    index: int
    host: str
    entries: list[dict[str, Any]]


def read_split(vs: Mapping[str, Any], target: RouteTarget) -> TrafficSplit:
    """Return the stable/canary percentages of the weighted route."""
    weighted = _locate_weighted_route(vs, target)
    weights = {target.stable_subset: 0, target.canary_subset: 0}
    for entry, weight in zip(weighted.entries, _effective_weights(weighted.entries), strict=True):
        weights[entry["destination"]["subset"]] += weight
    total = weights[target.stable_subset] + weights[target.canary_subset]
    if total <= 0:
        raise RoutingError(
            f"weighted route {_route_label(vs, weighted.index)} of VirtualService "
            f"{_vs_name(vs)!r} sends no traffic: every destination has weight 0"
        )
    # Istio weights are relative; report them as percentages rounded half up.
    canary = (weights[target.canary_subset] * 200 + total) // (2 * total)
    return TrafficSplit(target.stable_subset, target.canary_subset, 100 - canary, canary)


def set_canary_weight(vs: Mapping[str, Any], target: RouteTarget, weight: int) -> Document:
    """Send ``weight`` percent to the canary subset and the rest to the stable subset."""
    canary = validate_weight(weight)
    out = copy.deepcopy(dict(vs))
    weighted = _locate_weighted_route(out, target)
    entries = _weighted_entries(weighted, target, 100 - canary, canary)
    http = out["spec"]["http"]
    http[weighted.index] = {**http[weighted.index], "route": entries}
    return out


def set_header_route(vs: Mapping[str, Any], target: RouteTarget, route: HeaderRoute) -> Document:
    """Add or replace the product route sending requests matching ``route`` to its subset."""
    if route.subset not in (target.stable_subset, target.canary_subset):
        raise RoutingError(
            f"header route subset {route.subset!r} is neither the stable subset "
            f"{target.stable_subset!r} nor the canary subset {target.canary_subset!r}; "
            f"build the HeaderRoute with subset={target.canary_subset!r}"
        )
    out = copy.deepcopy(dict(vs))
    weighted = _locate_weighted_route(out, target)
    http: list[Any] = out["spec"]["http"]
    template = next(
        (e["destination"] for e in weighted.entries if e["destination"]["subset"] == route.subset),
        weighted.entries[0]["destination"],
    )
    new_route = {
        "name": route.route_name,
        "match": [{"headers": {route.header: {route.match_type.value: route.value}}}],
        "route": [{"destination": _new_destination(template, route.subset), "weight": 100}],
    }
    existing = _index_of_name(http, route.route_name)
    if existing is not None and existing < weighted.index:
        # Replacing in place keeps the order of several header routes stable across re-runs.
        http[existing] = new_route
        return out
    if existing is not None:
        del http[existing]  # it sat after the weighted route, so that index is unchanged
    http.insert(weighted.index, new_route)
    return out


def remove_header_route(vs: Mapping[str, Any], target: RouteTarget, header: str) -> Document:
    """Remove the product route for ``header``; a VirtualService without it is returned as is.

    ``target`` is accepted so every traffic verb takes the same arguments; the route is found
    by its product-owned name alone.
    """
    name = product_route_name(header)
    return _without_routes(vs, lambda r: r.get("name") == name)


def remove_product_routes(vs: Mapping[str, Any]) -> Document:
    """Remove every http route the product added (named ``airflow-canary-header-*``)."""
    return _without_routes(vs, _is_product_route)


def product_header_routes(vs: Mapping[str, Any]) -> list[HeaderRoute]:
    """The product-owned header routes of ``vs``, in route order.

    A product-named route that someone has edited into a shape the product never writes
    (several matches, several destinations) is not reported as a header route.
    """
    found: list[HeaderRoute] = []
    for route in _http_routes(vs):
        if isinstance(route, Mapping) and _is_product_route(route):
            parsed = _parse_header_route(route)
            if parsed is not None:
                found.append(parsed)
    return found


def promote(vs: Mapping[str, Any], target: RouteTarget) -> Document:
    """All traffic to the canary subset, product header routes removed."""
    return set_canary_weight(remove_product_routes(vs), target, 100)


def rollback(vs: Mapping[str, Any], target: RouteTarget) -> Document:
    """All traffic to the stable subset, product header routes removed."""
    return set_canary_weight(remove_product_routes(vs), target, 0)


def _weighted_entries(
    weighted: _WeightedRoute, target: RouteTarget, stable: int, canary: int
) -> list[dict[str, Any]]:
    """New destinations of the weighted route; keeps each existing entry's other fields."""
    first = weighted.entries[0]["destination"]
    result: list[dict[str, Any]] = []
    for subset, weight in ((target.stable_subset, stable), (target.canary_subset, canary)):
        if weight == 0:
            continue
        existing = next((e for e in weighted.entries if e["destination"]["subset"] == subset), None)
        if existing is not None:
            result.append({**existing, "weight": weight})
        else:
            result.append({"destination": _new_destination(first, subset), "weight": weight})
    return result


def _new_destination(template: Mapping[str, Any], subset: str) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": template["host"], "subset": subset}
    if "port" in template:
        destination["port"] = copy.deepcopy(template["port"])
    return destination


def _locate_weighted_route(vs: Mapping[str, Any], target: RouteTarget) -> _WeightedRoute:
    routes = _http_routes(vs)
    if target.route_name is not None:
        index = _index_of_name(routes, target.route_name)
        if index is None:
            names = [r.get("name") for r in routes if isinstance(r, Mapping) and r.get("name")]
            listed = ", ".join(repr(n) for n in names) or "none (no http route has a name)"
            raise RoutingError(
                f"VirtualService {_vs_name(vs)!r} has no http route named "
                f"{target.route_name!r}; its route names are: {listed}"
            )
        candidates = [index]
    else:
        candidates = [
            i
            for i, r in enumerate(routes)
            if isinstance(r, Mapping)
            and _is_catch_all(r)
            and _destinations(r)
            and (target.host is None or any(_same_host(h, target.host) for h in _hosts(r)))
        ]
        if not candidates:
            host = f" to host {target.host!r}" if target.host else ""
            raise RoutingError(
                f"VirtualService {_vs_name(vs)!r} has no catch-all http route (one without "
                f"`match`){host} to carry the weights; its http routes are: "
                f"{_describe_routes(routes)}; add a catch-all route or set route_name"
            )
        if len(candidates) > 1:
            listed = "; ".join(_describe_route(i, routes[i]) for i in candidates)
            raise RoutingError(
                f"VirtualService {_vs_name(vs)!r} has several catch-all http routes ({listed}); "
                f"set route_name to the one that carries the weights"
            )
    index = candidates[0]
    route = routes[index]
    entries = _destinations(route) if isinstance(route, Mapping) else []
    raw = route.get("route") if isinstance(route, Mapping) else None
    if isinstance(raw, list) and len(raw) != len(entries):
        raise RoutingError(
            f"http route {_route_label(vs, index)} of VirtualService {_vs_name(vs)!r} has a "
            f"destination without a `destination.host`; fix the route before shifting traffic"
        )
    if not entries:
        raise RoutingError(
            f"http route {_route_label(vs, index)} of VirtualService {_vs_name(vs)!r} has no "
            f"`route` destinations to weight (it redirects, delegates or responds directly)"
        )
    host = target.host or entries[0]["destination"]["host"]
    allowed = (target.stable_subset, target.canary_subset)
    for entry in entries:
        destination = entry["destination"]
        if not _same_host(destination["host"], host):
            raise RoutingError(
                f"weighted route {_route_label(vs, index)} of VirtualService {_vs_name(vs)!r} "
                f"also sends traffic to host {destination['host']!r}, not only to {host!r}; "
                f"set route_name to a route whose destinations are all {host!r}"
            )
        if destination.get("subset") not in allowed:
            raise RoutingError(
                f"weighted route {_route_label(vs, index)} of VirtualService {_vs_name(vs)!r} "
                f"sends traffic to subset {destination.get('subset')!r}, which is neither the "
                f"stable subset {target.stable_subset!r} nor the canary subset "
                f"{target.canary_subset!r}; set stable_subset/canary_subset to match the "
                f"route or remove that destination first"
            )
    return _WeightedRoute(index=index, host=host, entries=entries)


def _effective_weights(entries: list[dict[str, Any]]) -> list[int]:
    # Istio gives a lone destination all traffic whatever its weight field says.
    if len(entries) == 1:
        return [100]
    weights = []
    for entry in entries:
        raw = entry.get("weight", 0)
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            raise RoutingError(
                f"destination weight must be a non-negative integer, got {raw!r} "
                f"for subset {entry['destination'].get('subset')!r}"
            )
        weights.append(raw)
    return weights


def _http_routes(vs: Mapping[str, Any]) -> list[Any]:
    spec = vs.get("spec")
    if not isinstance(spec, Mapping):
        raise RoutingError(f"VirtualService {_vs_name(vs)!r} has no spec object")
    http = spec.get("http") or []
    if not isinstance(http, list):
        raise RoutingError(
            f"VirtualService {_vs_name(vs)!r} spec.http must be a list, got {type(http).__name__}"
        )
    return http


def _destinations(route: Mapping[str, Any]) -> list[dict[str, Any]]:
    entries = route.get("route") or []
    if not isinstance(entries, list):
        return []
    return [
        e
        for e in entries
        if isinstance(e, dict)
        and isinstance(e.get("destination"), dict)
        and isinstance(e["destination"].get("host"), str)
    ]


def _hosts(route: Mapping[str, Any]) -> list[str]:
    return [e["destination"]["host"] for e in _destinations(route)]


def _same_host(a: str, b: str) -> bool:
    """Short names and their namespace-qualified forms name the same service."""
    return a == b or a.startswith(b + ".") or b.startswith(a + ".")


def _is_catch_all(route: Mapping[str, Any]) -> bool:
    matches = route.get("match")
    if not matches:
        return True
    # Match entries are ORed: one unrestricted entry makes the whole route match everything.
    return isinstance(matches, list) and any(_matches_everything(m) for m in matches)


def _matches_everything(match: object) -> bool:
    if not isinstance(match, Mapping):
        return False
    restricting = {
        k: v
        for k, v in match.items()
        if k not in _NON_RESTRICTING_MATCH_KEYS and v not in (None, {}, [], "", 0)
    }
    if not restricting:
        return True
    return set(restricting) == {"uri"} and restricting["uri"] in _MATCH_ALL_URIS


def _is_product_route(route: Mapping[str, Any]) -> bool:
    name = route.get("name")
    return isinstance(name, str) and name.startswith(PRODUCT_ROUTE_PREFIX)


def _parse_header_route(route: Mapping[str, Any]) -> HeaderRoute | None:
    matches = route.get("match")
    entries = _destinations(route)
    if not isinstance(matches, list) or len(matches) != 1 or len(entries) != 1:
        return None
    headers = matches[0].get("headers") if isinstance(matches[0], Mapping) else None
    if not isinstance(headers, Mapping) or len(headers) != 1:
        return None
    ((header, condition),) = headers.items()
    if not isinstance(condition, Mapping) or len(condition) != 1:
        return None
    ((kind, value),) = condition.items()
    subset = entries[0]["destination"].get("subset")
    try:
        return HeaderRoute(header, value, MatchType(kind), subset)
    except (RoutingError, ValueError):
        return None


def _without_routes(vs: Mapping[str, Any], drop: Any) -> Document:
    out = copy.deepcopy(dict(vs))
    routes = _http_routes(out)
    kept = [r for r in routes if not (isinstance(r, Mapping) and drop(r))]
    if len(kept) != len(routes):
        out["spec"]["http"] = kept
    return out


def _index_of_name(routes: list[Any], name: str) -> int | None:
    for i, route in enumerate(routes):
        if isinstance(route, Mapping) and route.get("name") == name:
            return i
    return None


def _vs_name(vs: Mapping[str, Any]) -> str:
    metadata = vs.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else "<unnamed>"


def _route_label(vs: Mapping[str, Any], index: int) -> str:
    route = _http_routes(vs)[index]
    name = route.get("name") if isinstance(route, Mapping) else None
    return repr(name) if name else f"#{index}"


def _describe_routes(routes: list[Any]) -> str:
    if not routes:
        return "none"
    return "; ".join(_describe_route(i, r) for i, r in enumerate(routes))


def _describe_route(index: int, route: Any) -> str:
    if not isinstance(route, Mapping):
        return f"#{index} (not an object)"
    name = route.get("name")
    match = route.get("match")
    label = f"#{index}" + (f" name={name!r}" if name else "")
    condition = (
        "match=" + json.dumps(match, sort_keys=True, separators=(",", ":"))[:160]
        if match
        else "no match"
    )
    targets = ", ".join(
        f"{e['destination']['host']}/{e['destination'].get('subset', '-')}"
        for e in _destinations(route)
    )
    return f"{label} {condition} -> {targets or 'no destinations'}"
