"""Route surgery on Istio VirtualService documents: weights, header routes, promote, rollback.

A rollout owns every route of the VirtualService, http, tcp and tls alike, whose destinations
include the rollout's stable or canary subset of its service host (its *rollout routes*); a
``RouteTarget.route_name`` list narrows that to the routes named, and then any other route that
still sends to those subsets makes every traffic move refuse, naming it. Weights, promotion and
rollback change all managed routes in one document, so one write moves the whole service.

Every function takes the whole object as returned by the Kubernetes API and returns a new one;
the input is never mutated. Only the destinations (and mirrors) of rollout routes and the
product-owned header routes ever change; every other route and field is kept verbatim.

Rollback is deliberately lenient: it needs no DestinationRule and no valid target shape, and
moves every route's canary share (managed or not) onto the stable subset, so that afterwards
no route sends to the canary, whatever else the document holds.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from airflow_canary.routing.hosts import fqdn
from airflow_canary.routing.split import RouteSplit, TrafficSplit, effective_weights, shares_of
from airflow_canary.routing.values import (
    PRODUCT_ROUTE_PREFIX,
    HeaderRoute,
    MatchType,
    RouteTarget,
    RoutingError,
    product_route_name,
    validate_weight,
)

Document = dict[str, Any]

#: The route lists of a VirtualService spec, in the order Istio documents them.
PROTOCOLS = ("http", "tcp", "tls")
_MIRROR_FIELDS = ("mirror", "mirrorPercentage", "mirrorPercent", "mirror_percent")


@dataclass(frozen=True)
class _Route:
    """One route of ``spec.<protocol>[index]``.

    ``position`` counts only the user's routes, so that the product's header routes, inserted
    and removed during a rollout, never shift the label ``http[i]`` of another route.
    """

    protocol: str
    index: int
    position: int
    body: Mapping[str, Any]

    @property
    def label(self) -> str:
        name = self.body.get("name") if self.protocol == "http" else None
        return name if isinstance(name, str) and name else f"{self.protocol}[{self.position}]"

    def entries(self) -> list[Any]:
        raw = self.body.get("route")
        return raw if isinstance(raw, list) else []


# ---- reading ---------------------------------------------------------------------------------


def read_split(vs: Mapping[str, Any], target: RouteTarget) -> TrafficSplit:
    """The exact split of every route that sends to the rollout's stable or canary subset.

    Product header routes are not part of it (they are listed by ``product_header_routes``).
    Raises RoutingError only when a rollout route's weights cannot be read.
    """
    host = _rollout_host(vs, target, required=False)
    if host is None:
        return TrafficSplit(target.stable_subset, target.canary_subset, ())
    namespace = _namespace(vs)
    splits = []
    for route in _rollout_routes(vs, target, host):
        entries = route.entries()
        weights = effective_weights(entries)
        if weights is None:
            raise RoutingError(
                f"{route.protocol} route {route.label!r} of VirtualService {_vs_name(vs)!r} has "
                f"a destination weight that is not a non-negative integer: "
                f"{[e.get('weight') for e in entries if isinstance(e, Mapping)]}"
            )
        shares = tuple(
            (_entry_key(entry, host, namespace, target), share)
            for entry, share in zip(entries, shares_of(weights), strict=True)
        )
        merged: dict[str, Any] = {}
        for key, share in shares:
            merged[key] = merged.get(key, 0) + share
        splits.append(RouteSplit(route.label, route.protocol, tuple(merged.items())))
    return TrafficSplit(target.stable_subset, target.canary_subset, tuple(splits))


def rollout_host(vs: Mapping[str, Any], target: RouteTarget) -> str:
    """The FQDN of the service whose stable and canary subsets the rollout moves traffic between.

    ``target.host`` when given; otherwise the one host that destinations with the stable or
    canary subset name, or, when they name several, the one of them the VirtualService's own
    ``hosts`` list. Raises RoutingError when there is none or it is ambiguous.
    """
    host = _rollout_host(vs, target, required=True)
    assert host is not None
    return host


def managed_routes(vs: Mapping[str, Any], target: RouteTarget) -> list[str]:
    """Labels of the routes a weight change would rewrite; raises what ``check_target`` raises."""
    return [route.label for route in _checked_routes(vs, target)]


def check_target(vs: Mapping[str, Any], target: RouteTarget) -> TrafficSplit:
    """Raise RoutingError unless the rollout can move every route of its subsets in one write.

    Refused, each with the routes named: no route sending to the subsets; ``route_name`` naming a
    route that does not exist or does not send to them; a route sending to the subsets that
    ``route_name`` leaves out; a managed route that also sends to another host or subset, or
    whose destinations or weights are malformed. Returns the current split.
    """
    _checked_routes(vs, target)
    return read_split(vs, target)


# ---- writing ---------------------------------------------------------------------------------


def set_canary_weight(vs: Mapping[str, Any], target: RouteTarget, weight: int) -> Document:
    """Send ``weight`` percent of every managed route to the canary subset, the rest to stable."""
    canary = validate_weight(weight)
    out = copy.deepcopy(dict(vs))
    for route in _checked_routes(out, target):
        body = out["spec"][route.protocol][route.index]
        body["route"] = _weighted_entries(route.entries(), target, 100 - canary, canary)
    return out


def promote(vs: Mapping[str, Any], target: RouteTarget) -> Document:
    """All traffic of every managed route to the canary subset; header routes and mirrors removed.

    Mirrors to the stable and to the canary subset go (after a promotion a mirror to either
    would copy live requests to a version that serves them already or no longer exists);
    mirrors elsewhere are kept.

    Raises like ``check_target`` when a route sending to the stable subset is not managed, so
    that after a promotion no route sends to stable.
    """
    out = set_canary_weight(remove_product_routes(vs), target, 100)
    host = rollout_host(out, target)
    out = _without_mirrors_to(out, host, target.stable_subset)
    return _without_mirrors_to(out, host, target.canary_subset)


def rollback(vs: Mapping[str, Any], target: RouteTarget) -> Document:
    """Every route's canary share moved to the stable subset; header routes and mirrors removed.

    Mirrors to the canary and to the stable subset go (a mirror to stable on a route that
    sends everything to stable would serve every such request twice); mirrors elsewhere stay.

    Works on any document a rollout could have left behind: routes outside ``route_name``,
    routes mixing other destinations (their shares are kept), a canary-only route (it becomes
    stable-only). A VirtualService that sends nothing to the canary is returned unchanged apart
    from the product's header routes and mirrors to the two subsets. Raises RoutingError only when the rollout's host cannot
    be told or a route's weights cannot be read.
    """
    out = remove_product_routes(vs)
    host = _rollout_host(out, target, required=False)
    if host is None:
        return out
    namespace = _namespace(out)
    for route in _all_routes(out):
        entries = route.entries()
        if not any(_is_subset(e, host, namespace, target.canary_subset) for e in entries):
            continue
        weights = effective_weights(entries)
        if weights is None:
            raise RoutingError(
                f"cannot roll back {route.protocol} route {route.label!r} of VirtualService "
                f"{_vs_name(out)!r}: a destination weight is not a non-negative integer "
                f"({[e.get('weight') for e in entries if isinstance(e, Mapping)]})"
            )
        out["spec"][route.protocol][route.index]["route"] = _rolled_back_entries(
            entries, weights, host, namespace, target
        )
    out = _without_mirrors_to(out, host, target.stable_subset)
    return _without_mirrors_to(out, host, target.canary_subset)


def set_header_route(vs: Mapping[str, Any], target: RouteTarget, route: HeaderRoute) -> Document:
    """Add or replace the product route sending requests matching ``route`` to its subset.

    It is placed just before the first managed http route, so it wins over the weights.
    """
    if route.subset not in (target.stable_subset, target.canary_subset):
        raise RoutingError(
            f"header route subset {route.subset!r} is neither the stable subset "
            f"{target.stable_subset!r} nor the canary subset {target.canary_subset!r}; "
            f"build the HeaderRoute with subset={target.canary_subset!r}"
        )
    out = copy.deepcopy(dict(vs))
    managed = [r for r in _checked_routes(out, target) if r.protocol == "http"]
    if not managed:
        raise RoutingError(
            f"VirtualService {_vs_name(vs)!r} has no http route to subsets "
            f"{target.stable_subset!r}/{target.canary_subset!r} (only tcp or tls ones), so no "
            f"header can be matched; leave the header route out (header_route=None)"
        )
    first = managed[0]
    entries = [e for e in first.entries() if isinstance(e, Mapping)]
    template = next(
        (e["destination"] for e in entries if e["destination"].get("subset") == route.subset),
        entries[0]["destination"],
    )
    new_route = {
        "name": route.route_name,
        "match": [{"headers": {route.header: {route.match_type.value: route.value}}}],
        "route": [{"destination": _new_destination(template, route.subset), "weight": 100}],
    }
    http: list[Any] = out["spec"]["http"]
    existing = _index_of_name(http, route.route_name)
    if existing is not None and existing < first.index:
        # Replacing in place keeps the order of several header routes stable across re-runs.
        http[existing] = new_route
        return out
    if existing is not None:
        del http[existing]  # it sat after the managed route, so that index is unchanged
    http.insert(first.index, new_route)
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
    for route in _routes_of(vs, "http"):
        if isinstance(route, Mapping) and _is_product_route(route):
            parsed = _parse_header_route(route)
            if parsed is not None:
                found.append(parsed)
    return found


# ---- route selection --------------------------------------------------------------------------


def _rollout_host(vs: Mapping[str, Any], target: RouteTarget, *, required: bool) -> str | None:
    namespace = _namespace(vs)
    if target.host is not None:
        return fqdn(target.host, namespace)
    hosts: dict[str, list[str]] = {}
    for route in _all_routes(vs):
        for entry in route.entries():
            destination = _destination(entry)
            if destination is not None and destination.get("subset") in (
                target.stable_subset,
                target.canary_subset,
            ):
                hosts.setdefault(fqdn(destination["host"], namespace), []).append(route.label)
    if len(hosts) > 1:
        # The service the VirtualService is for wins over hosts its other routes borrow.
        spec_hosts = (vs.get("spec") or {}).get("hosts") or []
        own = {fqdn(h, namespace) for h in spec_hosts if isinstance(h, str)}
        if len([h for h in hosts if h in own]) == 1:
            return next(h for h in hosts if h in own)
    if len(hosts) == 1:
        return next(iter(hosts))
    if not required:
        if len(hosts) > 1:
            raise _several_hosts(vs, target, hosts)
        return None
    if not hosts:
        raise RoutingError(
            f"VirtualService {_vs_name(vs)!r} has no http, tcp or tls route to subset "
            f"{target.stable_subset!r} or {target.canary_subset!r}; its routes: "
            f"{_describe_routes(vs)}. Route the service to its stable subset first, or set "
            f"stable_subset/canary_subset to the subsets it uses"
        )
    raise _several_hosts(vs, target, hosts)


def _several_hosts(
    vs: Mapping[str, Any], target: RouteTarget, hosts: Mapping[str, list[str]]
) -> RoutingError:
    listed = "; ".join(f"{h} (routes {', '.join(labels)})" for h, labels in hosts.items())
    return RoutingError(
        f"VirtualService {_vs_name(vs)!r} routes subsets {target.stable_subset!r}/"
        f"{target.canary_subset!r} of several hosts: {listed}; set host to the one to roll out"
    )


def _all_routes(vs: Mapping[str, Any]) -> list[_Route]:
    """Every route of every protocol except the product's header routes."""
    found = []
    for protocol in PROTOCOLS:
        position = 0
        for index, body in enumerate(_routes_of(vs, protocol)):
            if isinstance(body, Mapping) and not _is_product_route(body):
                found.append(_Route(protocol, index, position, body))
                position += 1
    return found


def _rollout_routes(vs: Mapping[str, Any], target: RouteTarget, host: str) -> list[_Route]:
    namespace = _namespace(vs)
    subsets = (target.stable_subset, target.canary_subset)
    return [
        route
        for route in _all_routes(vs)
        if any(_is_subset(e, host, namespace, s) for e in route.entries() for s in subsets)
    ]


def _checked_routes(vs: Mapping[str, Any], target: RouteTarget) -> list[_Route]:
    host = rollout_host(vs, target)
    namespace = _namespace(vs)
    rollout = _rollout_routes(vs, target, host)
    if target.route_names is None:
        managed = rollout
    else:
        every = _all_routes(vs)
        by_label = {route.label: route for route in every}
        managed = []
        for name in target.route_names:
            if name not in by_label:
                raise RoutingError(
                    f"VirtualService {_vs_name(vs)!r} has no route {name!r} (route_name); its "
                    f"routes are: {', '.join(repr(r.label) for r in every) or 'none'} (tcp and "
                    f"tls routes have no names: refer to them as 'tcp[0]', 'tls[0]', ...)"
                )
            if by_label[name] not in rollout:
                raise RoutingError(
                    f"route {name!r} of VirtualService {_vs_name(vs)!r} sends to neither subset "
                    f"{target.stable_subset!r} nor {target.canary_subset!r} of {host}; "
                    f"route_name must list routes of the rollout"
                )
            managed.append(by_label[name])
        left_out = [route.label for route in rollout if route not in managed]
        if left_out:
            raise RoutingError(
                f"VirtualService {_vs_name(vs)!r}: route(s) {', '.join(map(repr, left_out))} "
                f"also send to subsets {target.stable_subset!r}/{target.canary_subset!r} of "
                f"{host} but are not in route_name {list(target.route_names)}; add them, so "
                f"that the whole service moves together, or point them elsewhere"
            )
    for route in managed:
        entries = route.entries()
        for entry in entries:
            destination = _destination(entry)
            if destination is None:
                raise RoutingError(
                    f"{route.protocol} route {route.label!r} of VirtualService "
                    f"{_vs_name(vs)!r} has a destination without `destination.host`: "
                    f"{json.dumps(entry)[:160]}; fix the route before shifting traffic"
                )
            if fqdn(destination["host"], namespace) != host or destination.get("subset") not in (
                target.stable_subset,
                target.canary_subset,
            ):
                raise RoutingError(
                    f"{route.protocol} route {route.label!r} of VirtualService "
                    f"{_vs_name(vs)!r} also sends to {destination['host']!r} subset "
                    f"{destination.get('subset')!r}, not only to subsets "
                    f"{target.stable_subset!r}/{target.canary_subset!r} of {host}; the product "
                    f"splits a route only between the two, so move that destination to a "
                    f"route of its own first"
                )
        if effective_weights(entries) is None:
            raise RoutingError(
                f"{route.protocol} route {route.label!r} of VirtualService {_vs_name(vs)!r} has "
                f"a destination weight that is not a non-negative integer: "
                f"{[e.get('weight') for e in entries]}"
            )
    return managed


# ---- entries ----------------------------------------------------------------------------------


def _weighted_entries(
    entries: list[Any], target: RouteTarget, stable: int, canary: int
) -> list[dict[str, Any]]:
    """New destinations of a managed route; keeps each existing entry's other fields."""
    first = entries[0]["destination"]
    result: list[dict[str, Any]] = []
    for subset, weight in ((target.stable_subset, stable), (target.canary_subset, canary)):
        if weight == 0:
            continue
        existing = next((e for e in entries if e["destination"].get("subset") == subset), None)
        if existing is not None:
            result.append({**existing, "weight": weight})
        else:
            result.append({"destination": _new_destination(first, subset), "weight": weight})
    return result


def _rolled_back_entries(
    entries: list[Any],
    weights: list[int],
    host: str,
    namespace: str,
    target: RouteTarget,
) -> list[Any]:
    canary_weight = sum(
        w
        for e, w in zip(entries, weights, strict=True)
        if _is_subset(e, host, namespace, target.canary_subset)
    )
    result: list[Any] = []
    stable_at: int | None = None
    for entry, weight in zip(entries, weights, strict=True):
        if _is_subset(entry, host, namespace, target.canary_subset):
            if stable_at is None and not any(
                _is_subset(e, host, namespace, target.stable_subset) for e in entries
            ):
                # No stable destination yet: the first canary one becomes it, port and all.
                stable = copy.deepcopy(dict(entry))
                stable["destination"] = _new_destination(entry["destination"], target.stable_subset)
                stable["weight"] = 0
                stable_at = len(result)
                result.append(stable)
            continue
        kept = copy.deepcopy(entry)
        if stable_at is None and _is_subset(entry, host, namespace, target.stable_subset):
            stable_at = len(result)
        if isinstance(kept, dict) and len(entries) > 1:
            kept["weight"] = weight
        result.append(kept)
    assert stable_at is not None
    result[stable_at]["weight"] = result[stable_at].get("weight", 0) + canary_weight
    if len(result) == 1:
        result[0]["weight"] = 100
    elif all(_is_subset(e, host, namespace, target.stable_subset) for e in result):
        total = sum(e.get("weight", 0) for e in result)
        result = [{**result[0], "weight": 100}] if total else result
    return result


def _without_mirrors_to(vs: Document, host: str, subset: str) -> Document:
    namespace = _namespace(vs)
    for route in _routes_of(vs, "http"):
        if not isinstance(route, dict):
            continue
        mirror = route.get("mirror")
        if isinstance(mirror, Mapping) and _names_subset(mirror, host, namespace, subset):
            for key in _MIRROR_FIELDS:
                route.pop(key, None)
        mirrors = route.get("mirrors")
        if isinstance(mirrors, list):
            kept = [
                m
                for m in mirrors
                if not (
                    isinstance(m, Mapping)
                    and isinstance(m.get("destination"), Mapping)
                    and _names_subset(m["destination"], host, namespace, subset)
                )
            ]
            if len(kept) != len(mirrors):
                if kept:
                    route["mirrors"] = kept
                else:
                    del route["mirrors"]
    return vs


def _destination(entry: Any) -> Mapping[str, Any] | None:
    if not isinstance(entry, Mapping):
        return None
    destination = entry.get("destination")
    if isinstance(destination, Mapping) and isinstance(destination.get("host"), str):
        return destination
    return None


def _names_subset(destination: Mapping[str, Any], host: str, namespace: str, subset: str) -> bool:
    raw = destination.get("host")
    return (
        isinstance(raw, str)
        and destination.get("subset") == subset
        and fqdn(raw, namespace) == host
    )


def _is_subset(entry: Any, host: str, namespace: str, subset: str) -> bool:
    destination = _destination(entry)
    return destination is not None and _names_subset(destination, host, namespace, subset)


def _entry_key(entry: Any, host: str, namespace: str, target: RouteTarget) -> str:
    destination = _destination(entry)
    if destination is None:
        return "<no destination>"
    subset = destination.get("subset")
    if fqdn(destination["host"], namespace) == host and subset in (
        target.stable_subset,
        target.canary_subset,
    ):
        return str(subset)
    return f"{destination['host']}/{subset or '*'}"


def _new_destination(template: Mapping[str, Any], subset: str) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": template["host"], "subset": subset}
    if "port" in template:
        destination["port"] = copy.deepcopy(template["port"])
    return destination


# ---- documents --------------------------------------------------------------------------------


def _routes_of(vs: Mapping[str, Any], protocol: str) -> list[Any]:
    spec = vs.get("spec")
    if not isinstance(spec, Mapping):
        raise RoutingError(f"VirtualService {_vs_name(vs)!r} has no spec object")
    routes = spec.get(protocol) or []
    if not isinstance(routes, list):
        raise RoutingError(
            f"VirtualService {_vs_name(vs)!r} spec.{protocol} must be a list, got "
            f"{type(routes).__name__}"
        )
    return routes


def _is_product_route(route: Mapping[str, Any]) -> bool:
    name = route.get("name")
    return isinstance(name, str) and name.startswith(PRODUCT_ROUTE_PREFIX)


def _parse_header_route(route: Mapping[str, Any]) -> HeaderRoute | None:
    matches = route.get("match")
    entries = [e for e in (route.get("route") or []) if _destination(e) is not None]
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


def _without_routes(vs: Mapping[str, Any], drop: Callable[[Mapping[str, Any]], bool]) -> Document:
    out = copy.deepcopy(dict(vs))
    routes = _routes_of(out, "http")
    kept = [r for r in routes if not (isinstance(r, Mapping) and drop(r))]
    if len(kept) != len(routes):
        out["spec"]["http"] = kept
    return out


def _index_of_name(routes: list[Any], name: str) -> int | None:
    for i, route in enumerate(routes):
        if isinstance(route, Mapping) and route.get("name") == name:
            return i
    return None


def _namespace(vs: Mapping[str, Any]) -> str:
    metadata = vs.get("metadata")
    namespace = metadata.get("namespace") if isinstance(metadata, Mapping) else None
    return namespace if isinstance(namespace, str) and namespace else "default"


def _vs_name(vs: Mapping[str, Any]) -> str:
    metadata = vs.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    return name if isinstance(name, str) else "<unnamed>"


def _describe_routes(vs: Mapping[str, Any]) -> str:
    described = []
    for route in _all_routes(vs):
        match = route.body.get("match")
        condition = (
            "match=" + json.dumps(match, sort_keys=True, separators=(",", ":"))[:120]
            if match
            else "no match"
        )
        targets = ", ".join(
            f"{d['host']}/{d.get('subset', '-')}"
            for d in (_destination(e) for e in route.entries())
            if d is not None
        )
        extra = " delegate" if route.body.get("delegate") else ""
        described.append(
            f"{route.protocol} {route.label!r} {condition}{extra} -> {targets or 'no destinations'}"
        )
    return "; ".join(described) or "none"
