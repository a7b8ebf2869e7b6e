"""Properties of route surgery on generated VirtualServices: what is not ours stays byte-for-byte."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.routing import (
    PRODUCT_ROUTE_PREFIX,
    HeaderRoute,
    MatchType,
    RouteTarget,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    remove_product_routes,
    rollback,
    set_canary_weight,
    set_header_route,
)
from tests.routing.documents import is_weighted, virtual_services, weighted_route

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


def _not_ours(vs: dict[str, Any]) -> dict[str, Any]:
    """Everything the product must not touch: the document minus product routes and weights."""
    out = copy.deepcopy(vs)
    http = []
    for route in out["spec"]["http"]:
        if str(route.get("name", "")).startswith(PRODUCT_ROUTE_PREFIX):
            continue
        if is_weighted(route):
            route.pop("route")
        http.append(route)
    out["spec"]["http"] = http
    return out


def _check_weighted_route(before: dict[str, Any], after: dict[str, Any]) -> None:
    old_entries = weighted_route(before)["route"]
    entries = weighted_route(after)["route"]
    assert sum(e["weight"] for e in entries) == 100
    assert all(e["weight"] > 0 for e in entries)
    subsets = [e["destination"]["subset"] for e in entries]
    assert subsets in (["v1"], ["v2"], ["v1", "v2"])
    old_by_subset = {e["destination"]["subset"]: e for e in old_entries}
    for entry in entries:
        old = old_by_subset.get(entry["destination"]["subset"])
        if old is not None:
            # Existing destinations keep every field but the weight.
            assert {k: v for k, v in entry.items() if k != "weight"} == {
                k: v for k, v in old.items() if k != "weight"
            }
        else:
            template = old_entries[0]["destination"]
            expected = {k: template[k] for k in ("host", "port") if k in template}
            assert {k: v for k, v in entry["destination"].items() if k != "subset"} == expected


@settings(max_examples=150, deadline=None)
@given(virtual_services(), st.lists(steps(), min_size=1, max_size=6))
def test_steps_keep_everything_else_and_are_idempotent(
    vs: dict[str, Any], sequence: list[tuple[str, Step]]
) -> None:
    untouched = _not_ours(vs)
    current = vs
    for _label, step in sequence:
        frozen = copy.deepcopy(current)
        after = step(current)
        assert current == frozen, "input was mutated"
        assert step(after) == after, "applying the same step twice changed the document"
        assert _not_ours(after) == untouched
        assert after["metadata"] == vs["metadata"] and after["apiVersion"] == vs["apiVersion"]
        assert sum(read_split(after, TARGET).as_dict().values()) == 100
        http = after["spec"]["http"]
        weighted_index = next(i for i, r in enumerate(http) if is_weighted(r))
        for route in product_header_routes(after):
            assert [r.get("name") for r in http].index(route.route_name) < weighted_index
        current = after
    if any(r.get("weight") for r in weighted_route(vs)["route"]):
        _check_weighted_route(vs, set_canary_weight(vs, TARGET, 37))


@settings(max_examples=100, deadline=None)
@given(virtual_services(), st.integers(0, 100), header_routes)
def test_weight_reads_back_and_header_routes_do_not_change_it(
    vs: dict[str, Any], weight: int, route: HeaderRoute
) -> None:
    out = set_canary_weight(vs, TARGET, weight)
    _check_weighted_route(vs, out)
    assert read_split(out, TARGET).as_dict() == {"v1": 100 - weight, "v2": weight}
    with_header = set_header_route(out, TARGET, route)
    assert read_split(with_header, TARGET) == read_split(out, TARGET)
    assert product_header_routes(with_header) == [route]
    http = with_header["spec"]["http"]
    index = next(i for i, r in enumerate(http) if r.get("name") == route.route_name)
    assert is_weighted(http[index + 1])
    assert http[index]["route"][0]["weight"] == 100
    assert http[index]["route"][0]["destination"]["subset"] == route.subset
    assert remove_header_route(with_header, TARGET, route.header) == out
    # A destination dropped at weight 0 takes its entry fields with it, so compare with `out`.
    assert rollback(with_header, TARGET) == set_canary_weight(out, TARGET, 0)
    assert promote(with_header, TARGET) == set_canary_weight(out, TARGET, 100)


@settings(max_examples=60, deadline=None)
@given(virtual_services())
def test_read_split_matches_generated_weights(vs: dict[str, Any]) -> None:
    weights = {e["destination"]["subset"]: e["weight"] for e in weighted_route(vs)["route"]}
    split = read_split(vs, TARGET)
    if len(weights) == 1:
        assert split.as_dict()[next(iter(weights))] == 100
    else:
        assert split.as_dict() == {"v1": weights["v1"], "v2": weights["v2"]}
