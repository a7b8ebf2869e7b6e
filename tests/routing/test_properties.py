"""Properties of route surgery on generated VirtualServices: the whole service moves, the rest stays."""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.routing import (
    PRODUCT_ROUTE_PREFIX,
    HeaderRoute,
    MatchType,
    RouteTarget,
    RoutingError,
    managed_routes,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    remove_product_routes,
    rollback,
    set_canary_weight,
    set_header_route,
)
from tests.routing.documents import HOST, is_rollout_destination, rollout_routes, virtual_services

TARGET = RouteTarget()
Step = Callable[[dict[str, Any]], dict[str, Any]]

header_routes = st.builds(
    HeaderRoute,
    header=st.sampled_from(["x-canary-version", "x-tester", "X-Model-Variant"]),
    value=st.sampled_from(["v2", "yes", "team-a"]),
    match_type=st.sampled_from(list(MatchType)),
    subset=st.sampled_from(["v1", "v2"]),
)


@st.composite
def steps(draw: st.DrawFn) -> tuple[str, Step]:
    kind = draw(
        st.sampled_from(["weight", "header", "remove-header", "remove-all", "promote", "rollback"])
    )
    if kind == "weight":
        weight = draw(st.integers(0, 100))
        return f"weight {weight}", lambda vs: set_canary_weight(vs, TARGET, weight)
    if kind == "header":
        route = draw(header_routes)
        return f"header {route}", lambda vs: set_header_route(vs, TARGET, route)
    if kind == "remove-header":
        header = draw(st.sampled_from(["x-canary-version", "x-tester", "x-model-variant"]))
        return f"remove {header}", lambda vs: remove_header_route(vs, TARGET, header)
    if kind == "remove-all":
        return "remove all", remove_product_routes
    if kind == "promote":
        return "promote", lambda vs: promote(vs, TARGET)
    return "rollback", lambda vs: rollback(vs, TARGET)


_MIRROR_KEYS = ("mirror", "mirrorPercentage", "mirrors")


def _not_ours(vs: dict[str, Any]) -> dict[str, Any]:
    """Everything the product must not touch: the document minus product routes, the
    destinations of rollout routes and mirrors (which promote and rollback may drop)."""
    out = copy.deepcopy(vs)
    for protocol in ("http", "tcp", "tls"):
        if protocol not in out["spec"]:
            continue
        kept = []
        for route in out["spec"][protocol]:
            if str(route.get("name", "")).startswith(PRODUCT_ROUTE_PREFIX):
                continue
            if any(is_rollout_destination(e) for e in route.get("route") or []):
                route.pop("route")
            for key in _MIRROR_KEYS:
                route.pop(key, None)
            kept.append(route)
        out["spec"][protocol] = kept
    return out


def _mirrored_subsets(vs: dict[str, Any]) -> set[str]:
    found = set()
    for route in vs["spec"].get("http") or []:
        mirrors = [route.get("mirror")] + [m.get("destination") for m in route.get("mirrors") or []]
        for mirror in mirrors:
            if mirror and mirror.get("host") == HOST and mirror.get("subset"):
                found.add(mirror["subset"])
    return found


def _sends_to(vs: dict[str, Any], subset: str) -> list[str]:
    return read_split(vs, TARGET).routes_sending_to(subset)


@settings(max_examples=100, deadline=None)
@given(virtual_services(), st.lists(steps(), min_size=1, max_size=6))
def test_steps_keep_everything_else_and_are_idempotent(
    vs: dict[str, Any], sequence: list[tuple[str, Step]]
) -> None:
    untouched = _not_ours(vs)
    labels = managed_routes(vs, TARGET)
    current = vs
    for _label, step in sequence:
        frozen = copy.deepcopy(current)
        after = step(current)
        assert current == frozen, "input was mutated"
        assert step(after) == after, "applying the same step twice changed the document"
        assert _not_ours(after) == untouched
        assert after["metadata"] == vs["metadata"] and after["apiVersion"] == vs["apiVersion"]
        assert managed_routes(after, TARGET) == labels
        http = after["spec"]["http"]
        first_managed = next(
            i for i, r in enumerate(http) if r in [x[2] for x in rollout_routes(after)]
        )
        for route in product_header_routes(after):
            assert [r.get("name") for r in http].index(route.route_name) < first_managed
        current = after


@settings(max_examples=100, deadline=None)
@given(virtual_services(), st.integers(0, 100), header_routes)
def test_every_route_of_the_service_gets_the_weight_in_one_document(
    vs: dict[str, Any], weight: int, route: HeaderRoute
) -> None:
    out = set_canary_weight(vs, TARGET, weight)
    split = read_split(out, TARGET)
    assert [r.route for r in split.routes] == managed_routes(vs, TARGET)
    for route_split in split.routes:
        assert route_split.share("v2") == Fraction(weight, 100), route_split
        assert route_split.share("v1") == Fraction(100 - weight, 100), route_split
    assert split.uniform and split.as_dict() == {"v1": 100 - weight, "v2": weight}
    for _protocol, _index, body in rollout_routes(out):
        # Writes are integer percentages, zero-weight destinations left out, as the seed does.
        assert sum(e["weight"] for e in body["route"]) == 100
        assert all(e["weight"] > 0 for e in body["route"])
    with_header = set_header_route(out, TARGET, route)
    assert read_split(with_header, TARGET) == split
    assert product_header_routes(with_header) == [route]
    assert remove_header_route(with_header, TARGET, route.header) == out


@settings(max_examples=100, deadline=None)
@given(virtual_services(), st.lists(steps(), max_size=4), header_routes)
def test_after_rollback_nothing_sends_to_canary_and_after_promote_nothing_to_stable(
    vs: dict[str, Any], sequence: list[tuple[str, Step]], route: HeaderRoute
) -> None:
    current = set_header_route(vs, TARGET, route)
    for _label, step in sequence:
        current = step(current)
    rolled_back = rollback(current, TARGET)
    assert _sends_to(rolled_back, "v2") == []
    assert _mirrored_subsets(rolled_back) == set()
    assert product_header_routes(rolled_back) == []
    assert all(r.share("v1") == 1 for r in read_split(rolled_back, TARGET).routes)
    promoted = promote(current, TARGET)
    assert _sends_to(promoted, "v1") == []
    assert _mirrored_subsets(promoted) == set()
    assert all(r.share("v2") == 1 for r in read_split(promoted, TARGET).routes)
    # From a document the product wrote, a rollback equals a weight of 0 without header routes
    # and without mirrors to either subset.
    stepped = set_canary_weight(vs, TARGET, 30)
    expected = set_canary_weight(stepped, TARGET, 0)
    assert rollback(stepped, TARGET)["spec"]["http"] == [
        r for r in _strip_rollout_mirrors(expected)["spec"]["http"]
    ]


def _strip_rollout_mirrors(vs: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(vs)
    for route in out["spec"]["http"]:
        if (route.get("mirror") or {}).get("host") == HOST and route["mirror"].get("subset") in (
            "v1",
            "v2",
        ):
            for key in ("mirror", "mirrorPercentage"):
                route.pop(key, None)
        if "mirrors" in route:
            kept = [
                m
                for m in route["mirrors"]
                if not (
                    m["destination"].get("host") == HOST
                    and m["destination"].get("subset") in ("v1", "v2")
                )
            ]
            if kept:
                route["mirrors"] = kept
            else:
                del route["mirrors"]
    return out


@settings(max_examples=100, deadline=None)
@given(virtual_services())
def test_read_split_keeps_true_relative_shares(vs: dict[str, Any]) -> None:
    split = read_split(vs, TARGET)
    assert [r.route for r in split.routes] == managed_routes(vs, TARGET)
    for route_split, (_protocol, _index, body) in zip(
        split.routes, rollout_routes(vs), strict=True
    ):
        entries = body["route"]
        if len(entries) == 1:
            expected = {entries[0]["destination"]["subset"]: Fraction(1)}
        else:
            total = sum(e.get("weight", 0) for e in entries)
            expected = {
                e["destination"]["subset"]: Fraction(e.get("weight", 0), total or 1)
                for e in entries
            }
        for subset in ("v1", "v2"):
            assert route_split.share(subset) == expected.get(subset, 0)
            shown = route_split.as_dict()["split"].get(subset, 0)
            assert (shown == 0) == (expected.get(subset, 0) == 0), (route_split, shown)


@settings(max_examples=60, deadline=None)
@given(virtual_services(), st.data())
def test_route_name_lists_must_name_every_route_of_the_service(
    vs: dict[str, Any], data: st.DataObject
) -> None:
    labels = managed_routes(vs, TARGET)
    order = data.draw(st.permutations(labels))
    everything = RouteTarget(route_name=list(order))
    assert set_canary_weight(vs, everything, 40) == set_canary_weight(vs, TARGET, 40)
    if len(labels) > 1:
        fewer = RouteTarget(route_name=list(order[:-1]))
        with pytest.raises(RoutingError, match=re.escape(f"route(s) {order[-1]!r}")):
            set_canary_weight(vs, fewer, 40)
        with pytest.raises(RoutingError, match="not in route_name"):
            promote(vs, fewer)
        # A rollback is never refused for the shape of the target: it cleans every route.
        assert _sends_to(rollback(vs, fewer), "v2") == []
