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


def weighted_route(vs: dict[str, Any]) -> dict[str, Any]:
    """The one route without a restricting match in documents built by these strategies."""
    found = [r for r in vs["spec"]["http"] if is_weighted(r)]
    assert len(found) == 1, found
    return found[0]


def is_weighted(route: dict[str, Any]) -> bool:
    return route.get("match") in (None, [{"uri": {"prefix": "/"}}])


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
def _destination_entry(draw: st.DrawFn, host: str, subset: str | None) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host}
    if subset is not None:
        destination["subset"] = subset
    if draw(st.booleans()):
        destination["port"] = draw(_port)
    entry: dict[str, Any] = {"destination": destination}
    if draw(st.booleans()):
        entry["headers"] = {"request": {"set": {"x-from": draw(_names)}}}
    return entry


@st.composite
def _unrelated_route(draw: st.DrawFn) -> dict[str, Any]:
    host = draw(st.one_of(st.just(HOST), _other_hosts))
    subset = draw(st.sampled_from([None, "v1", "v2", "v3"]))
    route: dict[str, Any] = {"match": draw(st.lists(_match_request, min_size=1, max_size=2))}
    if draw(st.booleans()):
        route["name"] = "user-" + draw(_names)
    entries = draw(st.lists(_destination_entry(host, subset), min_size=1, max_size=2))
    if len(entries) > 1:
        for entry in entries:
            entry["weight"] = 50
    route["route"] = entries
    route.update(draw(_route_extras))
    return route


@st.composite
def _weighted(draw: st.DrawFn) -> dict[str, Any]:
    canary = draw(st.integers(0, 100))
    route: dict[str, Any] = {}
    if draw(st.booleans()):
        route["name"] = "primary"
    if draw(st.booleans()):
        route["match"] = [{"uri": {"prefix": "/"}}]
    host = draw(st.sampled_from([HOST, HOST + ".default.svc.cluster.local"]))
    port = draw(st.one_of(st.none(), _port))
    entries = []
    for subset, weight in (("v1", 100 - canary), ("v2", canary)):
        if weight == 0 and draw(st.booleans()):
            continue  # sometimes a zero-weight destination is written, sometimes left out
        entry = draw(_destination_entry(host, subset))
        if port is not None:
            entry["destination"]["port"] = dict(port)
        else:
            entry["destination"].pop("port", None)
        entry["weight"] = weight
        entries.append(entry)
    if draw(st.booleans()):
        entries.reverse()
    route["route"] = entries
    route.update(draw(_route_extras))
    return route


@st.composite
def virtual_services(draw: st.DrawFn) -> dict[str, Any]:
    """VirtualServices with one weighted route among unrelated routes, tcp and tls sections."""
    spec: dict[str, Any] = {
        "hosts": [HOST] + draw(st.lists(st.just("model.example.com"), max_size=1))
    }
    if draw(st.booleans()):
        spec["gateways"] = ["mesh", "istio-system/public-gateway"]
    if draw(st.booleans()):
        spec["exportTo"] = ["."]
    before = draw(st.lists(_unrelated_route(), max_size=3))
    after = draw(st.lists(_unrelated_route(), max_size=2))
    spec["http"] = [*before, draw(_weighted()), *after]
    if draw(st.booleans()):
        spec["tcp"] = [
            {
                "match": [{"port": 9000}],
                "route": [{"destination": {"host": "db-service", "port": {"number": 9000}}}],
            }
        ]
    if draw(st.booleans()):
        spec["tls"] = [
            {
                "match": [{"port": 443, "sniHosts": ["model.example.com"]}],
                "route": [{"destination": {"host": HOST, "port": {"number": 443}}}],
            }
        ]
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
