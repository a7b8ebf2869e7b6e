"""Route surgery on Gateway API HTTPRoutes: splits, weights, header rules, mirrors, promote, rollback.

Every document written here is validated against the Gateway API CRDs (``gateway_api_crds_dir``),
and header rules are checked to win by routing requests through the local mesh's compiled
HTTPRoute precedence (the same ranking Gateway API implementations apply).
"""

from __future__ import annotations

import copy
import math
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_canary.local.apiserver.schema import CRDSchemas, load_crd_dir
from airflow_canary.local.dataplane.httproute import GatewayRoutes
from airflow_canary.local.dataplane.routes import RequestView
from airflow_canary.routing import HeaderRoute, MatchType, RoutingError
from airflow_canary.routing import gateway_api as gw
from tests.conftest import EXAMPLE_MANIFESTS

TARGET = gw.ServiceTarget("model-v1", "model-v2")
SEED = yaml.safe_load((EXAMPLE_MANIFESTS / "gateway-api" / "httproute-00-all-v1.yaml").read_text())
SERVICES = {
    f"{n}.default.svc.cluster.local": True
    for n in ("model-v1", "model-v2", "other", "model-service")
}


@pytest.fixture(scope="module")
def schemas(gateway_api_crds_dir: Path) -> CRDSchemas:
    return load_crd_dir(gateway_api_crds_dir)


def seed_route() -> dict[str, Any]:
    route = copy.deepcopy(SEED)
    route["metadata"]["namespace"] = "default"
    return route


def ref(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name, "port": 80, **extra}
    if weight is not None:
        out["weight"] = weight
    return out


def two_rule_route() -> dict[str, Any]:
    """A route with two rollout rules (one for /predict, one catch-all) and an unmanaged rule."""
    route = seed_route()
    route["spec"]["rules"] = [
        {
            "name": "predict",
            "matches": [{"path": {"type": "PathPrefix", "value": "/predict"}}],
            "backendRefs": [ref("model-v1", 100), ref("model-v2", 0)],
            "timeouts": {"request": "10s"},
        },
        {
            "matches": [{"path": {"type": "Exact", "value": "/healthz"}}],
            "backendRefs": [ref("other", 1)],
        },
        {"backendRefs": [ref("model-v1", 100), ref("model-v2", 0)]},
    ]
    return route


def valid(schemas: CRDSchemas, doc: dict[str, Any]) -> dict[str, Any]:
    problems = schemas.validate(doc)
    assert problems == [], problems
    return doc


def served(route: dict[str, Any], path: str = "/predict", **headers: str) -> str:
    """The Service a request reaches through the mesh's HTTPRoute ranking (all weight on one)."""
    stored = copy.deepcopy(route)
    stored["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    routes = GatewayRoutes([stored], (), (), SERVICES).routes_for(
        "model-service.default.svc.cluster.local", "model-service"
    )
    assert routes is not None
    view = RequestView("model-service", "GET", path, headers, {})
    chosen = next(r for r in routes if r.matches_request(view))
    live = [t for t, w in zip(chosen.targets, _weights(chosen.cum_weights), strict=True) if w]
    assert len(live) == 1, chosen
    return live[0].service


def _weights(cumulative: tuple[int, ...]) -> list[int]:
    return [b - a for a, b in zip((0, *cumulative), cumulative, strict=False)]


# -- reading ---------------------------------------------------------------------------------------


def test_seed_route_reads_all_stable() -> None:
    split = gw.check_target(seed_route(), TARGET)
    assert split.as_dict() == {"model-v1": 100, "model-v2": 0}
    assert gw.managed_rules(seed_route(), TARGET) == ["primary"]


def test_split_is_exact_for_relative_weights() -> None:
    route = seed_route()
    route["spec"]["rules"][0]["backendRefs"] = [ref("model-v1", 2), ref("model-v2", 1)]
    split = gw.read_split(route, TARGET)
    assert split.canary_share == Fraction(1, 3)
    assert split.as_dict() == {"model-v1": 66.6667, "model-v2": 33.3333}
    route["spec"]["rules"][0]["backendRefs"] = [ref("model-v1", 999_999), ref("model-v2", 1)]
    assert gw.read_split(route, TARGET).as_dict()["model-v2"] == 0.0001


def test_absent_weight_is_one() -> None:
    route = seed_route()
    route["spec"]["rules"][0]["backendRefs"] = [ref("model-v1"), ref("model-v2")]
    assert gw.read_split(route, TARGET).as_dict() == {"model-v1": 50, "model-v2": 50}


# -- bad input -------------------------------------------------------------------------------------


def test_rule_without_both_services_names_the_rule_and_its_refs() -> None:
    route = seed_route()
    route["spec"]["rules"][0]["backendRefs"] = [ref("model-v1", 100)]
    with pytest.raises(RoutingError) as err:
        gw.check_target(route, TARGET)
    message = str(err.value)
    assert "rule 'primary'" in message and "default/model-v1 (weight 100)" in message
    assert "'model-v2' with weight 0" in message


def test_rule_sending_elsewhere_too_is_refused_naming_the_backend() -> None:
    route = seed_route()
    route["spec"]["rules"][0]["backendRefs"].append(ref("other", 5))
    with pytest.raises(RoutingError, match=r"also sends to default/other \(weight 5\)"):
        gw.set_canary_weight(route, TARGET, 10)


def test_no_rule_for_the_services_lists_the_rules() -> None:
    route = seed_route()
    route["spec"]["rules"][0]["backendRefs"] = [ref("other")]
    with pytest.raises(
        RoutingError,
        match=r"no rule with a backendRef to Service 'model-v1'.*primary -> \[default/other",
    ):
        gw.check_target(route, TARGET)


def test_services_in_another_namespace_name_backend_namespace() -> None:
    route = seed_route()
    for backend in route["spec"]["rules"][0]["backendRefs"]:
        backend["namespace"] = "models"
    with pytest.raises(RoutingError) as err:
        gw.check_target(route, TARGET)
    message = str(err.value)
    assert "no rule with a backendRef to Service 'model-v1' or 'model-v2' in namespace" in message
    assert "models/model-v1 (weight 100)" in message
    assert "pass backend_namespace='models'" in message


@pytest.mark.parametrize("weight", [1_000_001, -1, "ten", 2.5, True])
def test_weights_outside_the_crd_range_are_refused_naming_them(weight: object) -> None:
    route = seed_route()
    route["spec"]["rules"][0]["backendRefs"][1]["weight"] = weight
    with pytest.raises(RoutingError) as err:
        gw.check_target(route, TARGET)
    assert "rule 'primary' backendRefs[1].weight must be an integer 0..1,000,000" in str(err.value)
    assert repr(weight) in str(err.value)


@pytest.mark.parametrize("weight", [101, -1, "x"])
def test_canary_percent_must_be_0_to_100(weight: object) -> None:
    with pytest.raises(RoutingError, match="weight must be an integer 0..100"):
        gw.set_canary_weight(seed_route(), TARGET, weight)


def test_cross_namespace_backend_needs_a_reference_grant() -> None:
    target = gw.ServiceTarget("model-v1", "model-v2", namespace="models")
    route = seed_route()
    for backend in route["spec"]["rules"][0]["backendRefs"]:
        backend["namespace"] = "models"
    with pytest.raises(RoutingError) as err:
        gw.check_target(route, target, reference_grants=[])
    assert "Service models/model-v1 in another namespace" in str(err.value)
    assert "ReferenceGrant in 'models'" in str(err.value)
    grant = {
        "metadata": {"name": "g", "namespace": "models"},
        "spec": {
            "from": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": "default"}
            ],
            "to": [{"group": "", "kind": "Service", "name": "model-v1"}],
        },
    }
    with pytest.raises(RoutingError, match="Service models/model-v2"):
        gw.check_target(route, target, reference_grants=[grant])  # the grant names only v1
    del grant["spec"]["to"][0]["name"]
    assert gw.check_target(route, target, reference_grants=[grant]).as_dict() == {
        "model-v1": 100,
        "model-v2": 0,
    }


def test_bad_targets_fail_when_built() -> None:
    with pytest.raises(RoutingError, match="must differ"):
        gw.ServiceTarget("model-v1", "model-v1")
    with pytest.raises(RoutingError, match="stable_service must be a Service name.*'Model_V1'"):
        gw.ServiceTarget("Model_V1", "model-v2")


# -- weights ---------------------------------------------------------------------------------------


def test_weights_move_every_managed_rule_in_one_write_and_keep_the_rest(
    schemas: CRDSchemas,
) -> None:
    route = two_rule_route()
    out = valid(schemas, gw.set_canary_weight(route, TARGET, 10))
    assert gw.managed_rules(route, TARGET) == ["predict", "rules[2]"]
    for index in (0, 2):
        assert [r["weight"] for r in out["spec"]["rules"][index]["backendRefs"]] == [90, 10]
    assert out["spec"]["rules"][1] == route["spec"]["rules"][1]
    assert out["spec"]["rules"][0]["timeouts"] == {"request": "10s"}
    assert gw.read_split(out, TARGET).uniform
    assert route == two_rule_route()  # input untouched


def test_rule_names_must_cover_every_rule_of_the_services() -> None:
    with pytest.raises(RoutingError, match=r"rule\(s\) 'rules\[2\]' also send"):
        gw.set_canary_weight(two_rule_route(), gw.ServiceTarget(rule_names=("predict",)), 10)
    with pytest.raises(RoutingError, match="has no rule 'nope'"):
        gw.set_canary_weight(two_rule_route(), gw.ServiceTarget(rule_names=("nope",)), 10)
    both = gw.ServiceTarget(rule_names=("predict", "rules[2]"))
    assert gw.managed_rules(two_rule_route(), both) == ["predict", "rules[2]"]


# -- header rules ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "probe"),
    [
        (HeaderRoute("x-canary-version", "v2", subset="model-v2"), "v2"),
        (HeaderRoute("x-tester", "team-[a-z]+", MatchType.REGEX, subset="model-v2"), "team-ml"),
    ],
)
def test_header_rule_takes_precedence_over_every_managed_match(
    schemas: CRDSchemas, header: HeaderRoute, probe: str
) -> None:
    route = gw.set_canary_weight(two_rule_route(), TARGET, 0)
    out = valid(schemas, gw.set_header_route(route, TARGET, header))
    assert out["spec"]["rules"][0]["name"] == f"airflow-canary-header-{header.header}"
    assert gw.product_header_routes(out) == [header]
    # Gateway API ranks by specificity: the product rule wins wherever a managed rule would.
    for path in ("/predict", "/predict/batch", "/other"):
        assert served(out, path, **{header.header: probe}) == "model-v2"
        assert served(out, path) == "model-v1"
    assert served(out, "/healthz", **{header.header: probe}) == "other"  # unmanaged rule kept
    again = gw.set_header_route(out, TARGET, header)
    assert again == out  # idempotent
    removed = gw.remove_header_route(out, TARGET, header.header)
    assert removed == route
    assert gw.managed_rules(out, TARGET) == ["predict", "rules[2]"]  # positions unshifted


def test_prefix_header_match_is_refused_with_the_regex_to_use() -> None:
    with pytest.raises(RoutingError, match=r"Exact or RegularExpression.*value 'team\\-\.\*'"):
        gw.set_header_route(
            seed_route(), TARGET, HeaderRoute("x-tester", "team-", MatchType.PREFIX, "model-v2")
        )


def test_header_rule_to_an_unknown_service_is_refused() -> None:
    with pytest.raises(RoutingError, match="'model-v3' is neither the stable"):
        gw.set_header_route(seed_route(), TARGET, HeaderRoute("x-a", "1", subset="model-v3"))


# -- mirrors ---------------------------------------------------------------------------------------


def test_mirror_on_and_off(schemas: CRDSchemas) -> None:
    route = two_rule_route()
    out = valid(schemas, gw.set_mirror(route, TARGET, 20))
    for index in (0, 2):
        assert out["spec"]["rules"][index]["filters"] == [
            {
                "type": "RequestMirror",
                "requestMirror": {"backendRef": {"name": "model-v2", "port": 80}, "percent": 20},
            }
        ]
    assert "filters" not in out["spec"]["rules"][1]
    assert gw.set_mirror(out, TARGET, 20) == out
    assert gw.mirror_percent(out, TARGET) == 20.0
    assert gw.remove_mirror(out, TARGET) == route
    assert gw.set_mirror(out, TARGET, 0) == route


def test_a_fractional_percentage_is_written_as_the_exact_fraction(schemas: CRDSchemas) -> None:
    # RequestMirror's `percent` is an integer (int32, 0..100); any other share is a `fraction`
    # with numerator <= denominator, and the two never together (the CRD's CEL rules).
    out = valid(schemas, gw.set_mirror(two_rule_route(), TARGET, 12.5))
    mirror = out["spec"]["rules"][0]["filters"][0]["requestMirror"]
    assert mirror == {
        "backendRef": {"name": "model-v2", "port": 80},
        "fraction": {"numerator": 1, "denominator": 8},
    }
    assert gw.mirror_percent(out, TARGET) == 12.5
    tiny = valid(schemas, gw.set_mirror(two_rule_route(), TARGET, 0.001))
    assert gw.mirror_percent(tiny, TARGET) == pytest.approx(0.001)


def test_the_mirror_is_on_managed_rules_never_on_the_product_header_rule(
    schemas: CRDSchemas,
) -> None:
    header = HeaderRoute("x-canary-version", "v2", subset="model-v2")
    route = gw.set_header_route(two_rule_route(), TARGET, header)
    out = valid(schemas, gw.set_mirror(route, TARGET, 100))
    rules = out["spec"]["rules"]
    assert rules[0]["name"] == header.route_name and "filters" not in rules[0]
    assert [r.get("name") for r in rules if "filters" in r] == ["predict", None]
    assert gw.set_header_route(out, TARGET, header) == out
    assert gw.remove_mirror(out, TARGET) == route


def test_a_users_mirror_filter_elsewhere_is_kept(schemas: CRDSchemas) -> None:
    route = two_rule_route()
    audit = {
        "type": "RequestMirror",
        "requestMirror": {"backendRef": {"name": "other", "port": 80}},
    }
    route["spec"]["rules"][0]["filters"] = [audit]
    out = valid(schemas, gw.set_mirror(route, TARGET, 50))
    assert out["spec"]["rules"][0]["filters"][0] == audit
    assert len(out["spec"]["rules"][0]["filters"]) == 2
    for step in (gw.rollback, gw.promote, gw.remove_mirror):
        assert valid(schemas, step(out, TARGET))["spec"]["rules"][0]["filters"] == [audit]


@pytest.mark.parametrize("percent", [150, -1, 100.5, math.nan, math.inf, True, "half", "50", None])
def test_mirror_percent_must_be_a_number_0_to_100_naming_it(percent: object) -> None:
    with pytest.raises(RoutingError, match="0..100") as raised:
        gw.set_mirror(two_rule_route(), TARGET, percent)
    assert repr(percent) in str(raised.value)


# -- promote and rollback --------------------------------------------------------------------------


def test_promote_sends_everything_to_canary_and_drops_product_rules(schemas: CRDSchemas) -> None:
    route = gw.set_header_route(
        gw.set_canary_weight(two_rule_route(), TARGET, 50),
        TARGET,
        HeaderRoute("x-canary-version", "v2", subset="model-v2"),
    )
    out = valid(schemas, gw.promote(route, TARGET))
    assert gw.product_header_routes(out) == []
    split = gw.read_split(out, TARGET)
    assert split.canary_share == 1 and split.stable_share == 0 and split.uniform
    assert served(out, "/predict") == "model-v2"


def test_rollback_needs_only_the_route_and_leaves_nothing_on_canary(schemas: CRDSchemas) -> None:
    route = gw.set_mirror(
        gw.set_header_route(
            gw.set_canary_weight(two_rule_route(), TARGET, 50),
            TARGET,
            HeaderRoute("x-canary-version", "v2", subset="model-v2"),
        ),
        TARGET,
        10,
    )
    # Someone else also points a rule only at the canary, and one mixes in another backend.
    route["spec"]["rules"].append({"name": "canary-only", "backendRefs": [ref("model-v2", 3)]})
    route["spec"]["rules"].append(
        {"name": "mixed", "backendRefs": [ref("other", 2), ref("model-v2", 2)]}
    )
    out = valid(schemas, gw.rollback(route, TARGET))
    assert gw.product_header_routes(out) == []
    assert all("filters" not in rule for rule in out["spec"]["rules"])
    for rule in out["spec"]["rules"]:
        for backend in rule["backendRefs"]:
            if backend["name"] == "model-v2":
                assert backend["weight"] == 0
    assert out["spec"]["rules"][3]["backendRefs"] == [ref("model-v1", 3)]
    assert out["spec"]["rules"][4]["backendRefs"] == [ref("other", 2), ref("model-v1", 2)]
    assert gw.read_split(out, TARGET).canary_share == 0
    assert gw.rollback(out, TARGET) == out


# -- properties ------------------------------------------------------------------------------------

_weights_st = st.integers(min_value=0, max_value=gw.MAX_BACKEND_WEIGHT)


@st.composite
def routes(draw: st.DrawFn) -> dict[str, Any]:
    """HTTPRoutes with 1-3 rollout rules at arbitrary weights and unmanaged rules around them."""
    rules: list[dict[str, Any]] = []
    for i in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            rules.append({"name": f"other-{i}", "backendRefs": [ref("other", draw(_weights_st))]})
        rule: dict[str, Any] = {
            "backendRefs": [ref("model-v1", draw(_weights_st)), ref("model-v2", draw(_weights_st))]
        }
        if draw(st.booleans()):
            rule["matches"] = [{"path": {"type": "PathPrefix", "value": f"/p{i}"}}]
        if draw(st.booleans()):
            rule["name"] = f"rule-{i}"
        rules.append(rule)
    route = seed_route()
    route["spec"]["rules"] = rules
    return route


_settings = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _unmanaged(route: dict[str, Any]) -> list[Any]:
    return [r for r in route["spec"]["rules"] if r["backendRefs"][0]["name"] == "other"]


@_settings
@given(route=routes(), weight=st.integers(0, 100))
def test_property_weights_move_all_rules_and_nothing_else(
    schemas: CRDSchemas, route: dict[str, Any], weight: int
) -> None:
    out = valid(schemas, gw.set_canary_weight(route, TARGET, weight))
    split = gw.read_split(out, TARGET)
    assert all(r.share("model-v2") == Fraction(weight, 100) for r in split.rules)
    assert _unmanaged(out) == _unmanaged(route)
    assert {k: v for k, v in out.items() if k != "spec"} == {
        k: v for k, v in route.items() if k != "spec"
    }


@_settings
@given(
    route=routes(),
    header=st.booleans(),
    mirror=st.one_of(st.integers(0, 100), st.floats(0, 100, allow_nan=False)),
)
def test_property_rollback_and_promote_leave_nothing_behind(
    schemas: CRDSchemas, route: dict[str, Any], header: bool, mirror: float
) -> None:
    if header:
        route = gw.set_header_route(route, TARGET, HeaderRoute("x-canary", "1", subset="model-v2"))
    route = valid(schemas, gw.set_mirror(route, TARGET, mirror))
    assert gw.mirror_percent(route, TARGET) == pytest.approx(mirror, abs=1e-6)
    back = valid(schemas, gw.rollback(route, TARGET))
    assert gw.read_split(back, TARGET).canary_share == 0
    assert gw.product_header_routes(back) == []
    assert _unmanaged(back) == _unmanaged(route)
    ahead = valid(schemas, gw.promote(route, TARGET))
    split = gw.read_split(ahead, TARGET)
    assert all(r.share("model-v1") == 0 and r.share("model-v2") == 1 for r in split.rules)
    assert _unmanaged(ahead) == _unmanaged(route)
