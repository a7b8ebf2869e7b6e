"""Validation of user input: weights, header routes, targets, subsets."""

from __future__ import annotations

from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_canary.routing import (
    HeaderRoute,
    MatchType,
    RouteSplit,
    RouteTarget,
    RoutingError,
    TrafficSplit,
    percent,
    validate_header_route,
    validate_subsets,
    validate_weight,
)
from tests.routing.documents import load


@pytest.mark.parametrize(
    ("raw", "expected"), [(0, 0), (1, 1), (100, 100), ("10", 10), (" 50 ", 50), (10.0, 10)]
)
def test_validate_weight_accepts_integers(raw: object, expected: int) -> None:
    assert validate_weight(raw) == expected


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        (150, "150"),
        (-1, "-1"),
        (101, "101"),
        ("ten", "'ten'"),
        ("", "''"),
        ("10.5", "'10.5'"),
        (10.5, "10.5"),
        (True, "True"),
        (False, "False"),
        (None, "None"),
        ([10], "[10]"),
    ],
)
def test_validate_weight_rejects_with_the_value(raw: object, shown: str) -> None:
    with pytest.raises(RoutingError) as info:
        validate_weight(raw)
    assert str(info.value) == f"weight must be an integer 0..100, got {shown}"


@given(st.integers())
def test_validate_weight_range(value: int) -> None:
    if 0 <= value <= 100:
        assert validate_weight(value) == value
        assert validate_weight(str(value)) == value
    else:
        with pytest.raises(RoutingError, match=r"0\.\.100"):
            validate_weight(value)


def test_routing_error_is_a_value_error() -> None:
    assert issubclass(RoutingError, ValueError)


def test_route_target_defaults_and_validation() -> None:
    assert RouteTarget() == RouteTarget("v1", "v2", None)
    with pytest.raises(
        RoutingError, match="stable_subset and canary_subset must differ, both are 'v1'"
    ):
        RouteTarget("v1", "v1")
    with pytest.raises(RoutingError, match="stable_subset must be a non-empty string, got ''"):
        RouteTarget("", "v2")
    with pytest.raises(RoutingError, match="canary_subset must be a non-empty string, got None"):
        RouteTarget("v1", None)  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="route_name must be a non-empty string, got ' '"):
        RouteTarget(route_name=" ")
    with pytest.raises(
        RoutingError, match="not a product header route .* got 'airflow-canary-header-x'"
    ):
        RouteTarget(route_name="airflow-canary-header-x")
    assert RouteTarget(route_name="primary").route_names == ("primary",)
    assert RouteTarget(route_name=["primary", "tcp[0]"]).route_names == ("primary", "tcp[0]")
    assert RouteTarget().route_names is None
    with pytest.raises(RoutingError, match="route_name must name at least one route"):
        RouteTarget(route_name=[])
    with pytest.raises(RoutingError, match=r"route_name lists \['a'\] more than once"):
        RouteTarget(route_name=["a", "b", "a"])
    with pytest.raises(RoutingError, match="route_name must be a route name, a list"):
        RouteTarget(route_name=3)  # type: ignore[arg-type]


def test_traffic_split_headline_is_the_route_sending_the_canary_most() -> None:
    http = RouteSplit("primary", "http", (("v1", Fraction(1)),))
    tcp = RouteSplit("tcp[0]", "tcp", (("v1", Fraction(9, 10)), ("v2", Fraction(1, 10))))
    split = TrafficSplit("v1", "v2", (http, tcp))
    assert split.as_dict() == {"v1": 90, "v2": 10} and not split.uniform
    assert split.routes_sending_to("v2") == ["tcp[0]"]
    assert TrafficSplit("v1", "v2", ()).as_dict() == {"v1": 0, "v2": 0}


@pytest.mark.parametrize(
    ("share", "shown"),
    [
        (Fraction(1, 10), 10),
        (Fraction(1, 3), 33.3333),
        (Fraction(1, 10**7), 1e-05),
        (1 - Fraction(1, 10**7), 99.99999),
        (Fraction(0), 0),
    ],
)
def test_percent_is_exact_and_never_rounds_live_traffic_away(share: Fraction, shown: float) -> None:
    assert percent(share) == pytest.approx(shown, rel=1e-9, abs=0)
    assert (percent(share) == 0) == (share == 0) and (percent(share) == 100) == (share == 1)


@pytest.mark.parametrize("match_type", ["exact", "prefix", "regex", MatchType.PREFIX, "EXACT"])
def test_validate_header_route_builds_route(match_type: object) -> None:
    route = validate_header_route("X-Canary-Version", "v2", match_type)
    assert route.header == "x-canary-version"
    assert route.route_name == "airflow-canary-header-x-canary-version"
    assert isinstance(route.match_type, MatchType)
    assert route.subset == "v2"
    assert route.as_dict()["match_type"] == route.match_type.value


def test_validate_header_route_subset_keyword() -> None:
    assert validate_header_route("x-canary", "1", subset="green").subset == "green"


# Each case below is what Istio's VirtualService validation does with the same match
# (pilot/pkg/config/validation: ValidateHTTPHeaderNameOrJwtClaimRoute, validateStringMatch,
# validateStringMatchRegexp, validateSubsetName): refused here exactly when Istio refuses it.
@pytest.mark.parametrize(
    ("header", "value", "match_type", "message"),
    [
        ("", "v2", "exact", "header must be an HTTP header name .* got ''"),
        ("x canary", "v2", "exact", "header must be an HTTP header name .* got 'x canary'"),
        ("x-canary:", "v2", "exact", "got 'x-canary:'"),
        (":foo", "v2", "exact", "got ':foo'"),
        ("x-ünï", "v2", "exact", "got 'x-ünï'"),
        ("@request.auth.claims", "v2", "exact", "got '@request.auth.claims'"),
        ("@request.auth.claims.", "v2", "exact", "got '@request.auth.claims.'"),
        (None, "v2", "exact", "header must be an HTTP header name string, got None"),
        ("x-canary", None, "exact", "value for 'x-canary' must be a string, got None"),
        ("x-canary", "", "prefix", "prefix for 'x-canary' must not be empty"),
        ("x-canary", "", "regex", "regex for 'x-canary' must not be empty"),
        ("x-canary", "a" * 1025, "regex", "1025 characters long; Istio allows at most 1024"),
        (
            "x-canary",
            "v2",
            "suffix",
            "match_type must be one of exact, prefix, regex, got 'suffix'",
        ),
        ("x-canary", "v2(", "regex", "header regex 'v2\\(' is not valid RE2.*: missing \\)"),
        ("x-canary", "[a-", "regex", "missing \\]"),
        ("x-canary", "(?=v2)v", "regex", "invalid perl operator: \\(\\?="),
        ("x-canary", "(?<!a)b", "regex", "invalid perl operator: \\(\\?<!"),
        ("x-canary", "(a)\\1", "regex", "invalid escape sequence"),
        ("x-canary", "(?>ab)c", "regex", "invalid perl operator"),
        ("x-canary", "a++", "regex", "bad repetition operator: \\+\\+"),
        ("x-canary", "a**", "regex", "bad repetition operator"),
        ("x-canary", "x{1001}", "regex", "invalid repetition size"),
    ],
)
def test_validate_header_route_rejects(
    header: object, value: object, match_type: object, message: str
) -> None:
    with pytest.raises(RoutingError, match=message):
        validate_header_route(header, value, match_type)


@pytest.mark.parametrize(
    ("header", "value", "match_type", "expected_header"),
    [
        ("X-Canary", "v2", "exact", "x-canary"),
        ("x_a!#$%&'*+-.^`|~", "1", "exact", "x_a!#$%&'*+-.^`|~"),
        (":authority", "canary.example.com", "exact", ":authority"),
        ("@request.auth.claims.group", "testers", "exact", "@request.auth.claims.group"),
        ("@request.auth.claims[team][role]", "Tester", "exact", "@request.auth.claims[team][role]"),
        ("x-canary", "", "exact", "x-canary"),  # Istio allows an empty exact match
        # RE2 accepts what Python's re refuses: Unicode classes, POSIX classes, \z, (?<name>).
        ("x-canary", "^\\pL+$", "regex", "x-canary"),
        ("x-canary", "[[:alpha:]]+", "regex", "x-canary"),
        ("x-canary", "v2\\z", "regex", "x-canary"),
        ("x-canary", "(?<version>v[0-9]+)", "regex", "x-canary"),
        ("x-canary", "a" * 1024, "regex", "x-canary"),
    ],
)
def test_validate_header_route_accepts_what_istio_accepts(
    header: str, value: str, match_type: str, expected_header: str
) -> None:
    route = validate_header_route(header, value, match_type)
    assert route.header == expected_header and route.value == value


@pytest.mark.parametrize("subset", ["V2", "v_2", "-v2", "v2-", "a" * 64, "v2.1"])
def test_subset_names_must_be_dns_labels_as_istio_requires(subset: str) -> None:
    with pytest.raises(
        RoutingError, match=f"canary_subset must be a DestinationRule subset name.*got {subset!r}"
    ):
        RouteTarget("v1", subset)
    with pytest.raises(RoutingError, match="subset must be a DestinationRule subset name"):
        validate_header_route("x-canary", "1", subset=subset)
    assert RouteTarget("stable", "canary-2").canary_subset == "canary-2"


def test_escaped_regex_constructs_are_not_mistaken_for_unsupported_ones() -> None:
    assert (
        validate_header_route("x-canary", r"^a\+b\\1[0-9]+$", "regex").match_type is MatchType.REGEX
    )


def test_prefix_and_exact_values_are_not_compiled_as_regex() -> None:
    assert validate_header_route("x-canary", "v2(", "exact").value == "v2("


def test_header_route_direct_construction_normalises_and_validates() -> None:
    assert HeaderRoute("X-Canary", "v2").header == "x-canary"
    assert HeaderRoute("x-canary", "v", "prefix").match_type is MatchType.PREFIX  # type: ignore[arg-type]
    with pytest.raises(RoutingError, match="subset must be a non-empty string"):
        HeaderRoute("x-canary", "v2", MatchType.EXACT, "")


def test_validate_subsets_accepts_seed_destination_rule() -> None:
    validate_subsets(load("destinationrule-model-destination"), RouteTarget())
    validate_subsets(load("destinationrule-model-destination"), RouteTarget("v2", "v1"))


def test_validate_subsets_lists_defined_subsets() -> None:
    dr = load("destinationrule-model-destination")
    with pytest.raises(RoutingError) as info:
        validate_subsets(dr, RouteTarget("v1", "v3"))
    assert str(info.value) == (
        "DestinationRule 'model-destination' does not define subset 'v3'; its subsets are: 'v1', 'v2'"
    )
    with pytest.raises(
        RoutingError, match="subsets 'blue' and 'green'; its subsets are: 'v1', 'v2'"
    ):
        validate_subsets(dr, RouteTarget("blue", "green"))
    empty = {"metadata": {"name": "bare"}, "spec": {"host": "model-service"}}
    with pytest.raises(RoutingError, match="its subsets are: none"):
        validate_subsets(empty, RouteTarget())
