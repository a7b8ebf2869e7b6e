"""Which routes a rollout moves, exact splits, keeping what is not ours, and the errors a user can hit."""

from __future__ import annotations

import copy
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.routing import (
    HeaderRoute,
    MatchType,
    RouteTarget,
    RoutingError,
    check_target,
    managed_routes,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    remove_product_routes,
    rollback,
    rollout_host,
    set_canary_weight,
    set_header_route,
)

TARGET = RouteTarget()
FIELD_CASES = Path(__file__).parents[1] / "data" / "field-cases"


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


def test_every_route_to_the_subsets_moves_together() -> None:
    # A route with a match that sends to the stable subset is part of the service: it moves too.
    catch_all = {"match": [{}], "route": [_entry("v1")]}
    vs = _vs(API_ROUTE, catch_all)
    out = set_canary_weight(vs, TARGET, 50)
    assert out["spec"]["http"][0]["retries"] == API_ROUTE["retries"]
    assert out["spec"]["http"][0]["match"] == API_ROUTE["match"]
    assert out["spec"]["http"][1]["match"] == [{}]
    split = read_split(out, TARGET)
    assert [r.as_dict() for r in split.routes] == [
        {"route": "api", "protocol": "http", "split": {"v1": 50, "v2": 50}},
        {"route": "http[1]", "protocol": "http", "split": {"v1": 50, "v2": 50}},
    ]
    assert split.uniform and managed_routes(vs, TARGET) == ["api", "http[1]"]


def test_route_name_list_must_cover_every_route_of_the_subsets() -> None:
    vs = _vs(API_ROUTE, {"name": "primary", "route": [_entry("v1")]})
    with pytest.raises(RoutingError) as info:
        set_canary_weight(vs, RouteTarget(route_name="primary"), 10)
    assert str(info.value) == (
        "VirtualService 'model-virtual-service': route(s) 'api' also send to subsets 'v1'/'v2' "
        "of model-service.ml.svc.cluster.local but are not in route_name ['primary']; add "
        "them, so that the whole service moves together, or point them elsewhere"
    )
    both = RouteTarget(route_name=["primary", "api"])
    assert set_canary_weight(vs, both, 10) == set_canary_weight(vs, TARGET, 10)
    assert check_target(vs, RouteTarget(route_name=("api", "primary"))).canary_share == 0


def test_route_name_refers_to_tcp_and_tls_routes_by_position() -> None:
    vs = _vs({"name": "primary", "route": [_entry("v1")]})
    vs["spec"]["tcp"] = [
        {"match": [{"port": 9000}], "route": [_entry("v1", port={"number": 9000})]}
    ]
    target = RouteTarget(route_name=["primary", "tcp[0]"])
    out = set_canary_weight(vs, target, 25)
    assert read_split(out, target).describe() == (
        "http primary: v1 75% v2 25%; tcp[0]: v1 75% v2 25%"
    )
    with pytest.raises(RoutingError, match=r"has no route 'tcp\[1\]' .* 'primary', 'tcp\[0\]'"):
        set_canary_weight(vs, RouteTarget(route_name=["primary", "tcp[1]"]), 25)


def test_host_is_the_one_the_subsets_name_or_the_virtual_services_own() -> None:
    other = {"match": [{"uri": {"prefix": "/legacy"}}], "route": [_entry("v1", host="legacy")]}
    fqdn = {"route": [_entry("v1", host="model-service.ml.svc.cluster.local")]}
    vs = _vs(fqdn, other)
    assert rollout_host(vs, TARGET) == "model-service.ml.svc.cluster.local"
    out = set_canary_weight(vs, TARGET, 10)
    assert out["spec"]["http"][1] == other
    vs["spec"]["hosts"] = ["model.example.com"]
    with pytest.raises(RoutingError, match="several hosts: .*legacy.*set host"):
        set_canary_weight(vs, TARGET, 10)
    pinned = set_canary_weight(vs, RouteTarget(host="model-service"), 10)
    assert pinned["spec"]["http"] == out["spec"]["http"]


def test_relative_weights_are_read_exactly() -> None:
    vs = _vs({"route": [_entry("v1", 3), _entry("v2", 1)]})
    assert read_split(vs, TARGET).as_dict() == {"v1": 75, "v2": 25}
    vs = _vs({"route": [_entry("v1", 2), _entry("v2", 1)]})
    assert read_split(vs, TARGET).as_dict() == {"v1": 66.6667, "v2": 33.3333}
    assert read_split(vs, TARGET).canary_share == Fraction(1, 3)
    # A live canary is never rounded away, however small its share.
    vs = _vs({"route": [_entry("v1", 999_999), _entry("v2", 1)]})
    split = read_split(vs, TARGET).as_dict()
    assert 0 < split["v2"] < 0.001 and split["v1"] < 100
    vs = _vs({"route": [_entry("v1", 0), _entry("v2", 0)]})
    assert read_split(vs, TARGET).as_dict() == {"v1": 0, "v2": 0}


def test_lone_destination_gets_everything_whatever_its_weight() -> None:
    for weight in (None, 0, 7):
        vs = _vs({"route": [_entry("v2", weight)]})
        assert read_split(vs, TARGET).as_dict() == {"v1": 0, "v2": 100}
        assert rollback(vs, TARGET)["spec"]["http"][0]["route"] == [_entry("v1", 100)]


def test_rollback_keeps_other_destinations_and_moves_only_the_canary_share() -> None:
    mixed = {"route": [_entry("v2", 10), _entry("v1", 60), _entry(None, 30, host="legacy")]}
    out = rollback(_vs(mixed), TARGET)
    assert out["spec"]["http"][0]["route"] == [
        _entry("v1", 70),
        _entry(None, 30, host="legacy"),
    ]
    canary_only = {"route": [_entry("v2", 1, port={"number": 8080}), _entry(None, 3, host="x")]}
    out = rollback(_vs(canary_only), TARGET)
    assert out["spec"]["http"][0]["route"] == [
        _entry("v1", 1, port={"number": 8080}),
        _entry(None, 3, host="x"),
    ]


def test_rollback_and_promote_drop_mirrors_to_either_subset() -> None:
    mirrored = {
        "route": [_entry("v1", 90), _entry("v2", 10)],
        "mirror": {"host": "model-service", "subset": "v2"},
        "mirrorPercentage": {"value": 50.0},
        "mirrors": [
            {"destination": {"host": "model-service", "subset": "v2"}},
            {"destination": {"host": "shadow"}},
        ],
    }
    out = rollback(_vs(mirrored), TARGET)["spec"]["http"][0]
    assert "mirror" not in out and "mirrorPercentage" not in out
    assert out["mirrors"] == [{"destination": {"host": "shadow"}}]
    promoted = promote(_vs(mirrored), TARGET)["spec"]["http"][0]
    # After a promotion v2 serves every request: a mirror to it would serve each one twice.
    assert "mirror" not in promoted and "mirrorPercentage" not in promoted
    assert promoted["mirrors"] == [{"destination": {"host": "shadow"}}]


def test_header_route_replaced_in_place_and_others_kept() -> None:
    other = {
        "name": "legacy",
        "match": [{"uri": {"prefix": "/old"}}],
        "route": [_entry(None, host="legacy")],
    }
    vs = _vs(other, {"route": [_entry("v1", 100)]})
    a = set_header_route(vs, TARGET, HeaderRoute("x-a", "1"))
    ab = set_header_route(a, TARGET, HeaderRoute("x-b", "^v[0-9]+$", MatchType.REGEX))
    assert [r.get("name") for r in ab["spec"]["http"]] == [
        "legacy",
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


def test_header_route_goes_before_the_first_route_of_the_subsets() -> None:
    vs = _vs(API_ROUTE, {"route": [_entry("v1", 100)]})
    out = set_header_route(vs, TARGET, HeaderRoute("x-canary", "1"))
    assert [r.get("name") for r in out["spec"]["http"]] == [
        "airflow-canary-header-x-canary",
        "api",
        None,
    ]


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
    assert product_header_routes(vs) == []  # edited into a shape the product never writes
    assert [r.get("name") for r in remove_product_routes(vs)["spec"]["http"]] == [
        "canary-header-x-a",
        None,
    ]
    # The look-alike is the user's route to the canary: a rollback moves it to stable too.
    rolled_back = rollback(vs, TARGET)["spec"]["http"][0]
    assert rolled_back == {**lookalike, "route": [_entry("v1", 100)]}


def test_tcp_and_tls_only_virtual_services() -> None:
    vs = {
        "metadata": {"name": "tls-only", "namespace": "ml"},
        "spec": {
            "hosts": ["model.example.com"],
            "tls": [
                {
                    "match": [{"port": 443, "sniHosts": ["model.example.com"]}],
                    "route": [_entry("v1", 100), _entry("v2", 0)],
                }
            ],
        },
    }
    assert read_split(vs, TARGET).describe() == "tls[0]: v1 100% v2 0%"
    out = set_canary_weight(vs, TARGET, 10)
    assert out["spec"]["tls"][0]["route"] == [_entry("v1", 90), _entry("v2", 10)]
    assert out["spec"]["tls"][0]["match"] == vs["spec"]["tls"][0]["match"]
    with pytest.raises(
        RoutingError, match=r"no http route to subsets .v1./.v2. .*\(header_route=None\)"
    ):
        set_header_route(vs, TARGET, HeaderRoute("x-a", "1"))
    assert remove_product_routes(vs) == vs


def test_field_case_tcp_route_moves_with_the_http_route() -> None:
    vs, tls_only = _field_case("01-tcp-tls-routes.yaml")
    rolled_back = rollback(vs, TARGET)
    assert read_split(rolled_back, TARGET).describe() == "http primary: v1 100%; tcp[0]: v1 100%"
    assert rolled_back["spec"]["tcp"][0]["route"] == [
        {
            "destination": {"host": "model-service", "subset": "v1", "port": {"number": 9000}},
            "weight": 100,
        }
    ]
    promoted = promote(vs, TARGET)
    assert read_split(promoted, TARGET).describe() == "http primary: v2 100%; tcp[0]: v2 100%"
    assert read_split(vs, TARGET).routes_as_list() == [
        {"route": "primary", "protocol": "http", "split": {"v1": 90, "v2": 10}},
        {"route": "tcp[0]", "protocol": "tcp", "split": {"v1": 90, "v2": 10}},
    ]
    assert read_split(set_canary_weight(tls_only, TARGET, 50), TARGET).describe() == (
        "tls[0]: v1 50% v2 50%"
    )
    assert read_split(rollback(tls_only, TARGET), TARGET).describe() == "tls[0]: v1 100%"


# ---- errors -------------------------------------------------------------------------------


def test_error_no_route_to_the_subsets_lists_routes() -> None:
    vs = _vs(
        {"name": "legacy", "match": [{"uri": {"prefix": "/api"}}], "route": [_entry(None)]},
        {"delegate": {"name": "team-routes", "namespace": "ml"}},
    )
    with pytest.raises(RoutingError) as info:
        set_canary_weight(vs, TARGET, 10)
    message = str(info.value)
    assert "has no http, tcp or tls route to subset 'v1' or 'v2'" in message
    assert 'http \'legacy\' match=[{"uri":{"prefix":"/api"}}] -> model-service/-' in message
    assert "http 'http[1]' no match delegate -> no destinations" in message
    assert rollback(vs, TARGET) == vs
    assert read_split(vs, TARGET).routes == ()


def test_error_route_name_that_does_not_send_to_the_subsets() -> None:
    vs = _vs({"name": "moved", "redirect": {"uri": "/v2"}}, {"route": [_entry("v1")]})
    with pytest.raises(
        RoutingError, match="route 'moved' .* sends to neither subset 'v1' nor 'v2'"
    ):
        set_canary_weight(vs, RouteTarget(route_name="moved"), 10)


def test_error_foreign_destination_in_a_route_of_the_subsets() -> None:
    operations: list[Callable[[dict[str, Any]], object]] = [
        lambda vs: set_canary_weight(vs, TARGET, 10),
        lambda vs: promote(vs, TARGET),
        lambda vs: set_header_route(vs, TARGET, HeaderRoute("x-a", "1")),
        lambda vs: check_target(vs, TARGET),
    ]
    for extra in (_entry("v3", 20), _entry("v2", 20, host="elsewhere"), _entry(None, 20)):
        vs = _vs({"name": "primary", "route": [_entry("v1", 80), extra]})
        for operation in operations:
            with pytest.raises(RoutingError, match="http route 'primary' .* also sends to"):
                operation(vs)
        assert rollback(vs, TARGET)["spec"]["http"][0]["route"][0] == _entry("v1", 80)


def test_error_bad_weight_and_header_subset() -> None:
    vs = _vs({"route": [_entry("v1")]})
    with pytest.raises(RoutingError, match="weight must be an integer 0..100, got 150"):
        set_canary_weight(vs, TARGET, 150)
    with pytest.raises(RoutingError, match="header route subset 'v3' is neither .* subset='v2'"):
        set_header_route(vs, TARGET, HeaderRoute("x-a", "1", subset="v3"))
    with pytest.raises(RoutingError, match="not a non-negative integer"):
        read_split(_vs({"route": [_entry("v1", -1), _entry("v2", 1)]}), TARGET)


def test_errors_leave_input_untouched() -> None:
    vs = _vs(API_ROUTE, {"route": [_entry("v1", 80), _entry("v3", 20)]})
    before = copy.deepcopy(vs)
    with pytest.raises(RoutingError):
        set_canary_weight(vs, TARGET, 10)
    assert vs == before


def _field_case(name: str) -> list[dict[str, Any]]:
    with open(FIELD_CASES / name, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]
