"""Locating the weighted route, keeping what is not ours, and the errors a user can hit."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from airflow_canary.routing import (
    HeaderRoute,
    MatchType,
    RouteTarget,
    RoutingError,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    remove_product_routes,
    rollback,
    set_canary_weight,
    set_header_route,
)

TARGET = RouteTarget()


def _entry(
    subset: str | None, weight: int | None = None, host: str = "model-service", **extra: Any
) -> dict[str, Any]:
    destination: dict[str, Any] = {"host": host, **extra}
    if subset is not None:
        destination["subset"] = subset
    entry: dict[str, Any] = {"destination": destination}
    if weight is not None:
        entry["weight"] = weight
    return entry


def _vs(*routes: dict[str, Any], name: str = "model-virtual-service") -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": name, "namespace": "ml", "resourceVersion": "12"},
        "spec": {"hosts": ["model-service"], "http": list(routes)},
    }


API_ROUTE = {
    "name": "api",
    "match": [{"uri": {"prefix": "/api"}}],
    "route": [_entry("v1", 100)],
    "retries": {"attempts": 3, "perTryTimeout": "2s"},
}


def test_port_and_entry_fields_are_kept_and_copied_to_new_destinations() -> None:
    weighted = {
        "route": [
            _entry("v1", 100, port={"number": 8080})
            | {"headers": {"request": {"set": {"x-a": "b"}}}}
        ],
        "timeout": "5s",
    }
    out = set_canary_weight(_vs(weighted), TARGET, 10)
    route = out["spec"]["http"][0]
    assert route["timeout"] == "5s"
    assert route["route"] == [
        {
            "destination": {"host": "model-service", "subset": "v1", "port": {"number": 8080}},
            "headers": {"request": {"set": {"x-a": "b"}}},
            "weight": 90,
        },
        {
            "destination": {"host": "model-service", "subset": "v2", "port": {"number": 8080}},
            "weight": 10,
        },
    ]
    header = set_header_route(_vs(weighted), TARGET, HeaderRoute("x-canary", "yes"))
    assert header["spec"]["http"][0]["route"][0]["destination"]["port"] == {"number": 8080}


def test_route_with_match_everything_is_the_weighted_route() -> None:
    for match in (
        [{}],
        [{"name": "all"}],
        [{"uri": {"prefix": "/"}}],
        [{"uri": {"prefix": "/x"}}, {}],
    ):
        vs = _vs(API_ROUTE, {"match": match, "route": [_entry("v1")]})
        out = set_canary_weight(vs, TARGET, 50)
        assert out["spec"]["http"][0] == API_ROUTE
        assert out["spec"]["http"][1]["match"] == match
        assert read_split(out, TARGET).as_dict() == {"v1": 50, "v2": 50}


def test_route_name_picks_a_route_with_a_match() -> None:
    target = RouteTarget(route_name="api")
    vs = _vs(API_ROUTE, {"route": [_entry("v1")]})
    out = set_canary_weight(vs, target, 10)
    assert [e["weight"] for e in out["spec"]["http"][0]["route"]] == [90, 10]
    assert out["spec"]["http"][0]["retries"] == API_ROUTE["retries"]
    assert out["spec"]["http"][1] == vs["spec"]["http"][1]
    with_header = set_header_route(out, target, HeaderRoute("x-canary", "1"))
    assert [r.get("name") for r in with_header["spec"]["http"]] == [
        "airflow-canary-header-x-canary",
        "api",
        None,
    ]


def test_host_narrows_catch_all_routes_and_accepts_fqdn() -> None:
    other = {"route": [_entry(None, host="legacy-service")]}
    fqdn = {"route": [_entry("v1", host="model-service.ml.svc.cluster.local")]}
    vs = _vs(fqdn, other)
    with pytest.raises(RoutingError, match="several catch-all http routes"):
        set_canary_weight(vs, TARGET, 10)
    out = set_canary_weight(vs, RouteTarget(host="model-service"), 10)
    assert out["spec"]["http"][1] == other
    assert {e["destination"]["host"] for e in out["spec"]["http"][0]["route"]} == {
        "model-service.ml.svc.cluster.local"
    }


def test_relative_weights_are_read_as_percentages() -> None:
    vs = _vs({"route": [_entry("v1", 3), _entry("v2", 1)]})
    assert read_split(vs, TARGET).as_dict() == {"v1": 75, "v2": 25}
    vs = _vs({"route": [_entry("v1", 0), _entry("v2", 0)]})
    with pytest.raises(RoutingError, match="sends no traffic: every destination has weight 0"):
        read_split(vs, TARGET)


def test_lone_destination_without_weight_gets_everything() -> None:
    vs = _vs({"route": [_entry("v2")]})
    assert read_split(vs, TARGET).as_dict() == {"v1": 0, "v2": 100}


def test_header_route_replaced_in_place_and_others_kept() -> None:
    vs = _vs(API_ROUTE, {"route": [_entry("v1", 100)]})
    a = set_header_route(vs, TARGET, HeaderRoute("x-a", "1"))
    ab = set_header_route(a, TARGET, HeaderRoute("x-b", "^v[0-9]+$", MatchType.REGEX))
    assert [r.get("name") for r in ab["spec"]["http"]] == [
        "api",
        "airflow-canary-header-x-a",
        "airflow-canary-header-x-b",
        None,
    ]
    replaced = set_header_route(ab, TARGET, HeaderRoute("x-a", "2", MatchType.PREFIX))
    assert [r.get("name") for r in replaced["spec"]["http"]] == [
        r.get("name") for r in ab["spec"]["http"]
    ]
    assert replaced["spec"]["http"][1]["match"] == [{"headers": {"x-a": {"prefix": "2"}}}]
    assert [r.header for r in product_header_routes(replaced)] == ["x-a", "x-b"]
    assert product_header_routes(replaced)[1].match_type is MatchType.REGEX
    only_b = remove_header_route(replaced, TARGET, "x-a")
    assert [r.header for r in product_header_routes(only_b)] == ["x-b"]
    assert remove_product_routes(replaced) == vs


def test_header_route_after_weighted_route_moves_before_it() -> None:
    stale = {
        "name": "airflow-canary-header-x-a",
        "match": [{"headers": {"x-a": {"exact": "old"}}}],
        "route": [_entry("v2", 100)],
    }
    vs = _vs({"route": [_entry("v1", 100)]}, stale)
    out = set_header_route(vs, TARGET, HeaderRoute("x-a", "new"))
    assert [r.get("name") for r in out["spec"]["http"]] == ["airflow-canary-header-x-a", None]
    assert out["spec"]["http"][0]["match"] == [{"headers": {"x-a": {"exact": "new"}}}]


def test_header_route_to_stable_subset_is_allowed() -> None:
    out = set_header_route(
        _vs({"route": [_entry("v2", 100)]}), TARGET, HeaderRoute("x-force-stable", "1", subset="v1")
    )
    assert out["spec"]["http"][0]["route"] == [
        {"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}
    ]


def test_product_routes_identified_only_by_name_prefix() -> None:
    lookalike = {
        "name": "canary-header-x-a",
        "match": [{"headers": {"x-a": {"exact": "1"}}}],
        "route": [_entry("v2", 100)],
    }
    edited = {
        "name": "airflow-canary-header-x-b",
        "match": [{"headers": {"x-b": {"exact": "1"}}}, {"uri": {"prefix": "/b"}}],
        "route": [_entry("v2", 100)],
    }
    vs = _vs(lookalike, edited, {"route": [_entry("v1", 100)]})
    assert (
        product_header_routes(vs) == []
    )  # the edited one is no longer a header route we can describe
    assert [r.get("name") for r in remove_product_routes(vs)["spec"]["http"]] == [
        "canary-header-x-a",
        None,
    ]
    assert rollback(vs, TARGET)["spec"]["http"][0] == lookalike


def test_vs_without_http_section_only_for_route_removal() -> None:
    vs = {
        "metadata": {"name": "tcp-only"},
        "spec": {"hosts": ["db"], "tcp": [{"route": [_entry(None, host="db")]}]},
    }
    assert remove_product_routes(vs) == vs
    with pytest.raises(
        RoutingError,
        match="VirtualService 'tcp-only' has no catch-all http route .* routes are: none",
    ):
        set_canary_weight(vs, TARGET, 1)


# ---- errors -------------------------------------------------------------------------------


def test_error_no_weighted_route_lists_routes() -> None:
    vs = _vs(
        API_ROUTE, {"match": [{"headers": {"x-user": {"exact": "a"}}}], "route": [_entry("v1")]}
    )
    with pytest.raises(RoutingError) as info:
        set_canary_weight(vs, TARGET, 10)
    message = str(info.value)
    assert "VirtualService 'model-virtual-service' has no catch-all http route" in message
    assert '#0 name=\'api\' match=[{"uri":{"prefix":"/api"}}] -> model-service/v1' in message
    assert '#1 match=[{"headers":{"x-user":{"exact":"a"}}}]' in message
    assert "set route_name" in message


def test_error_no_weighted_route_for_host() -> None:
    vs = _vs({"route": [_entry("v1")]})
    with pytest.raises(RoutingError, match="no catch-all http route .* to host 'other-service'"):
        read_split(vs, RouteTarget(host="other-service"))


def test_error_several_catch_all_routes_names_them() -> None:
    vs = _vs({"name": "first", "route": [_entry("v1")]}, {"match": [{}], "route": [_entry("v1")]})
    with pytest.raises(RoutingError) as info:
        set_canary_weight(vs, TARGET, 10)
    message = str(info.value)
    assert "several catch-all http routes" in message
    assert "#0 name='first' no match" in message and "#1 match=[{}]" in message
    assert "set route_name" in message
    assert read_split(vs, RouteTarget(route_name="first")).canary_weight == 0


def test_error_route_name_not_found_lists_names() -> None:
    vs = _vs(API_ROUTE, {"name": "primary", "route": [_entry("v1")]})
    with pytest.raises(RoutingError) as info:
        set_canary_weight(vs, RouteTarget(route_name="main"), 10)
    assert str(info.value) == (
        "VirtualService 'model-virtual-service' has no http route named 'main'; its route names are: 'api', 'primary'"
    )
    with pytest.raises(RoutingError, match="route names are: none"):
        read_split(_vs({"route": [_entry("v1")]}), RouteTarget(route_name="main"))


def test_error_foreign_subset_is_refused_not_dropped() -> None:
    vs = _vs({"name": "primary", "route": [_entry("v1", 80), _entry("v3", 20)]})
    for operation in (
        lambda: set_canary_weight(vs, TARGET, 10),
        lambda: read_split(vs, TARGET),
        lambda: promote(vs, TARGET),
        lambda: rollback(vs, TARGET),
        lambda: set_header_route(vs, TARGET, HeaderRoute("x-a", "1")),
    ):
        with pytest.raises(RoutingError) as info:
            operation()
        assert str(info.value) == (
            "weighted route 'primary' of VirtualService 'model-virtual-service' sends traffic to subset 'v3', "
            "which is neither the stable subset 'v1' nor the canary subset 'v2'; set stable_subset/canary_subset "
            "to match the route or remove that destination first"
        )
    with pytest.raises(RoutingError, match="subset None"):
        read_split(_vs({"route": [_entry(None)]}), TARGET)


def test_error_foreign_host_in_weighted_route() -> None:
    vs = _vs({"route": [_entry("v1", 90), _entry("v2", 10, host="elsewhere")]})
    with pytest.raises(
        RoutingError, match="also sends traffic to host 'elsewhere', not only to 'model-service'"
    ):
        set_canary_weight(vs, TARGET, 10)


def test_error_named_route_without_destinations() -> None:
    vs = _vs({"name": "moved", "redirect": {"uri": "/v2"}}, {"route": [_entry("v1")]})
    with pytest.raises(RoutingError, match="route 'moved' .* has no `route` destinations"):
        set_canary_weight(vs, RouteTarget(route_name="moved"), 10)


def test_error_bad_weight_and_header_subset() -> None:
    vs = _vs({"route": [_entry("v1")]})
    with pytest.raises(RoutingError, match="weight must be an integer 0..100, got 150"):
        set_canary_weight(vs, TARGET, 150)
    with pytest.raises(RoutingError, match="header route subset 'v3' is neither .* subset='v2'"):
        set_header_route(vs, TARGET, HeaderRoute("x-a", "1", subset="v3"))


def test_errors_leave_input_untouched() -> None:
    vs = _vs(API_ROUTE, {"route": [_entry("v1", 80), _entry("v3", 20)]})
    before = copy.deepcopy(vs)
    with pytest.raises(RoutingError):
        set_canary_weight(vs, TARGET, 10)
    assert vs == before
