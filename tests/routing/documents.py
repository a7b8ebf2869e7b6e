"""Seed manifests and hypothesis strategies for VirtualService documents used by the routing tests."""

from __future__ import annotations

from typing import Any

import yaml
from hypothesis import strategies as st

from tests.conftest import seed_manifest

HOST = "model-service"
SEED_WEIGHTS = {
    "vs-01-canary-1": 1,
    "vs-02-canary-10": 10,
    "vs-03-canary-50": 50,
    "vs-04-all-v2": 100,
}


def load(name: str) -> dict[str, Any]:
    """One seed manifest (file name without ``.yaml``) as the API would return it."""
    with open(seed_manifest(name), encoding="utf-8") as handle:
        doc: dict[str, Any] = yaml.safe_load(handle)
    return doc


def is_rollout_destination(entry: Any) -> bool:
    """Whether a route entry sends to the rollout's stable or canary subset of HOST."""
    destination = entry.get("destination") or {}
    return destination.get("host") in (
        HOST,
        HOST + ".default.svc.cluster.local",
    ) and destination.get("subset") in ("v1", "v2")


def rollout_routes(vs: dict[str, Any]) -> list[tuple[str, int, dict[str, Any]]]:
    """(protocol, index, route) of every non-product route that sends to HOST's v1 or v2."""
    found = []
    for protocol in ("http", "tcp", "tls"):
        for index, route in enumerate(vs["spec"].get(protocol) or []):
            if str(route.get("name", "")).startswith("airflow-canary-header-"):
                continue
            if any(is_rollout_destination(e) for e in route.get("route") or []):
                found.append((protocol, index, route))
    return found


# ---- strategies -------------------------------------------------------------------------

_names = st.from_regex(r"[a-z][a-z0-9-]{0,10}", fullmatch=True)
_durations = st.sampled_from(["1s", "2.5s", "500ms", "30s"])
_other_hosts = st.sampled_from(["other-service", "ratings.default.svc.cluster.local", "httpbin"])
_port = st.builds(lambda n: {"number": n}, st.integers(1, 65535))

_retries = st.fixed_dictionaries(
    {"attempts": st.integers(0, 5)},
    optional={"perTryTimeout": _durations, "retryOn": st.sampled_from(["5xx", "gateway-error"])},
)
_header_ops = st.fixed_dictionaries(
    {},
    optional={
        "request": st.fixed_dictionaries({"set": st.dictionaries(_names, _names, max_size=2)}),
        "response": st.fixed_dictionaries({"remove": st.lists(_names, max_size=2)}),
    },
)
_route_extras = st.fixed_dictionaries(
    {},
    optional={
        "retries": _retries,
        "timeout": _durations,
        "headers": _header_ops,
        "mirror": st.builds(lambda h: {"host": h}, _other_hosts),
        "mirrorPercentage": st.builds(lambda v: {"value": v}, st.sampled_from([1.0, 12.5])),
        "corsPolicy": st.just({"allowOrigins": [{"exact": "https://example.com"}]}),
    },
)
_string_match = st.one_of(
    st.builds(lambda v: {"exact": v}, _names),
    st.builds(lambda v: {"prefix": "/" + v}, _names),
    st.builds(lambda v: {"regex": "^/" + v + ".*"}, _names),
)
# Always at least one restricting condition, so these routes never look like a catch-all.
_match_request = st.one_of(
    st.builds(lambda m: {"uri": m}, _string_match),
    st.builds(lambda h, m: {"headers": {"x-" + h: m}}, _names, _string_match),
    st.builds(lambda m: {"method": m}, st.sampled_from([{"exact": "POST"}, {"exact": "GET"}])),
    st.builds(lambda p: {"port": p, "name": "by-port"}, st.integers(1, 65535)),
)


@st.composite
def _destination_entry(
    draw: st.DrawFn, host: str, subset: str | None, protocol: str = "http"
) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host}
    if subset is not None:
        destination["subset"] = subset
    if draw(st.booleans()):
        destination["port"] = draw(_port)
    entry: dict[str, Any] = {"destination": destination}
    if protocol == "http" and draw(st.booleans()):
        entry["headers"] = {"request": {"set": {"x-from": draw(_names)}}}
    return entry


_mirror = st.one_of(
    st.builds(lambda h: {"host": h}, _other_hosts),
    st.builds(lambda s: {"host": HOST, "subset": s}, st.sampled_from(["v1", "v2"])),
)
_mirrors = st.lists(
    st.builds(
        lambda d, p: {"destination": d, **({"percentage": {"value": p}} if p else {})},
        _mirror,
        st.sampled_from([None, 5.0, 100.0]),
    ),
    min_size=1,
    max_size=2,
)


@st.composite
def _unrelated_route(draw: st.DrawFn, protocol: str = "http") -> dict[str, Any]:
    """A route that sends nowhere near the rollout's subsets (other hosts, other subsets)."""
    kind = draw(
        st.sampled_from(
            ["route", "route", "delegate", "redirect"] if protocol == "http" else ["route"]
        )
    )
    route: dict[str, Any] = {}
    if protocol == "http":
        route["match"] = draw(st.lists(_match_request, min_size=1, max_size=2))
    elif protocol == "tcp":
        route["match"] = [{"port": draw(st.integers(1, 65535))}]
    else:
        route["match"] = [{"port": 443, "sniHosts": [draw(_names) + ".example.com"]}]
    if kind == "delegate":
        route["delegate"] = {"name": "team-" + draw(_names), "namespace": "default"}
        return route
    if kind == "redirect":
        route["redirect"] = {"uri": "/" + draw(_names)}
        return route
    host = draw(st.one_of(st.just(HOST), _other_hosts))
    # HOST only without a subset or with a third one; other hosts with any subset, even "v1".
    subsets = [None, "v3"] if host == HOST else [None, "v1", "v2", "v3"]
    subset = draw(st.sampled_from(subsets))
    entries = draw(st.lists(_destination_entry(host, subset, protocol), min_size=1, max_size=2))
    if len(entries) > 1:
        for entry in entries:
            entry["weight"] = 50
    route["route"] = entries
    if protocol == "http":
        route.update(draw(_route_extras))
    return route


@st.composite
def _rollout_route(draw: st.DrawFn, protocol: str = "http") -> dict[str, Any]:
    """A route between v1 and v2 of HOST with relative weights, in every form Istio accepts."""
    route: dict[str, Any] = {}
    if protocol == "http" and draw(st.booleans()):
        route["match"] = draw(
            st.one_of(
                st.just([{"uri": {"prefix": "/"}}]),
                st.lists(_match_request, min_size=1, max_size=2),
            )
        )
    elif protocol == "tcp":
        route["match"] = [{"port": draw(st.integers(1, 65535))}]
    elif protocol == "tls":
        route["match"] = [{"port": 443, "sniHosts": ["model.example.com"]}]
    host = draw(st.sampled_from([HOST, HOST + ".default.svc.cluster.local"]))
    port = draw(st.one_of(st.none(), _port)) if protocol == "http" else draw(_port)
    form = draw(st.sampled_from(["lone", "percent", "relative"]))
    if form == "lone":
        subset = draw(st.sampled_from(["v1", "v2"]))
        pairs: list[tuple[str, int | None]] = [(subset, draw(st.sampled_from([None, 0, 100, 7])))]
    elif form == "percent":
        canary = draw(st.integers(0, 100))
        pairs = [("v1", 100 - canary), ("v2", canary)]
    else:
        pairs = [("v1", draw(st.integers(0, 10**6))), ("v2", draw(st.integers(0, 10**6)))]
        if pairs[0][1] == pairs[1][1] == 0:
            pairs[0] = ("v1", 1)
    if draw(st.booleans()):
        pairs.reverse()
    entries = []
    for subset, weight in pairs:
        entry = draw(_destination_entry(host, subset, protocol))
        if port is not None:
            entry["destination"]["port"] = dict(port)
        else:
            entry["destination"].pop("port", None)
        if weight is not None:
            entry["weight"] = weight
        entries.append(entry)
    route["route"] = entries
    if protocol == "http":
        extras = draw(_route_extras)
        if draw(st.booleans()):
            extras.pop("mirror", None)
            extras.pop("mirrorPercentage", None)
            extras["mirrors"] = draw(_mirrors)
        elif "mirror" in extras and draw(st.booleans()):
            extras["mirror"] = draw(_mirror)
        route.update(extras)
    return route


@st.composite
def virtual_services(draw: st.DrawFn) -> dict[str, Any]:
    """VirtualServices with one or more http, tcp and tls routes between v1 and v2 of HOST,
    interleaved with routes the rollout must not touch (other hosts or subsets, delegates,
    redirects), matches, mirrors and extra fields, in every weight form Istio accepts."""
    spec: dict[str, Any] = {
        "hosts": [HOST] + draw(st.lists(st.just("model.example.com"), max_size=1))
    }
    if draw(st.booleans()):
        spec["gateways"] = ["mesh", "istio-system/public-gateway"]
    if draw(st.booleans()):
        spec["exportTo"] = ["."]
    for protocol in ("http", "tcp", "tls"):
        ours = draw(st.lists(_rollout_route(protocol), max_size=3 if protocol == "http" else 2))
        others = draw(st.lists(_unrelated_route(protocol), max_size=3 if protocol == "http" else 1))
        routes = draw(st.permutations(ours + others))
        if protocol == "http" and not any(r in ours for r in routes):
            routes = [*routes, draw(_rollout_route("http"))]
        if routes:
            spec[protocol] = list(routes)
    names = draw(
        st.lists(_names, min_size=len(spec["http"]), max_size=len(spec["http"]), unique=True)
    )
    for route, name in zip(spec["http"], names, strict=True):
        if draw(st.booleans()):
            route["name"] = "user-" + name
    metadata: dict[str, Any] = {
        "name": "model-virtual-service",
        "namespace": "default",
        "resourceVersion": str(draw(st.integers(1, 10**6))),
        "uid": "6f1e0c52-2b0c-4d1e-9a57-1f6e2c1d9a10",
        "labels": {"app": "model"},
    }
    api_version = draw(
        st.sampled_from(
            [
                "networking.istio.io/v1",
                "networking.istio.io/v1beta1",
                "networking.istio.io/v1alpha3",
            ]
        )
    )
    return {"apiVersion": api_version, "kind": "VirtualService", "metadata": metadata, "spec": spec}
