"""Mirroring on Istio VirtualServices: set on the weighted route, removed only when it targets the canary.

Every written document is validated against Istio's published models (and its CRDs when
``$CANARY_ISTIO_CRDS`` is set).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.routing import (
    HeaderRoute,
    RouteTarget,
    RoutingError,
    promote,
    rollback,
    set_canary_weight,
    set_header_route,
)
from airflow_canary.routing.istio_mirror import mirror_percent, remove_mirror, set_mirror
from airflow_canary.routing.router import router_for
from tests.conftest import seed_manifest
from tests.routing.documents import HOST, virtual_services
from tests.schemas import assert_valid_istio

TARGET = RouteTarget()
VS = yaml.safe_load(seed_manifest("vs-00-all-v1").read_text())
CANARY = {"host": "model-service", "subset": "v2"}


def test_mirror_on_replace_and_off() -> None:
    out = set_mirror(VS, TARGET, 5)
    assert_valid_istio(out)
    assert out["spec"]["http"][0]["mirror"] == CANARY
    assert out["spec"]["http"][0]["mirrorPercentage"] == {"value": 5.0}
    assert mirror_percent(out, TARGET) == 5.0
    changed = set_mirror(out, TARGET, 40)
    assert_valid_istio(changed)
    assert mirror_percent(changed, TARGET) == 40.0
    assert set_mirror(changed, TARGET, 40) == changed  # idempotent: nothing to write again
    assert remove_mirror(out, TARGET) == VS
    assert remove_mirror(VS, TARGET) == VS
    assert VS == yaml.safe_load(seed_manifest("vs-00-all-v1").read_text())  # input untouched


def test_fractional_percentage_is_kept_as_istio_double() -> None:
    # Istio's mirrorPercentage.value is a double: 0.5 mirrors one request in two hundred.
    out = set_mirror(VS, TARGET, 0.5)
    assert_valid_istio(out)
    assert out["spec"]["http"][0]["mirrorPercentage"] == {"value": 0.5}
    assert mirror_percent(out, TARGET) == 0.5


def test_zero_percent_removes_the_mirror() -> None:
    assert set_mirror(set_mirror(VS, TARGET, 30), TARGET, 0) == VS


def test_mirror_is_on_the_weighted_route_never_on_the_product_header_route() -> None:
    header = HeaderRoute("x-canary-version", "v2", subset="v2")
    vs = set_header_route(set_canary_weight(VS, TARGET, 10), TARGET, header)
    out = set_mirror(vs, TARGET, 100)
    assert_valid_istio(out)
    header_route, weighted = out["spec"]["http"][0], out["spec"]["http"][1]
    assert header_route["name"] == header.route_name
    assert "mirror" not in header_route and "mirrorPercentage" not in header_route
    assert weighted["mirror"] == CANARY
    # The header route comes and goes without touching the mirror, and the other way round.
    assert set_header_route(out, TARGET, header) == out
    assert remove_mirror(out, TARGET) == vs


def test_a_users_mirror_elsewhere_is_kept_and_not_overwritten() -> None:
    vs = copy.deepcopy(VS)
    vs["spec"]["http"][0]["mirror"] = {"host": "audit-service"}
    assert remove_mirror(vs, TARGET) == vs
    with pytest.raises(RoutingError, match="already mirrors to .*audit-service.*'mirrors'"):
        set_mirror(vs, TARGET, 10)


def test_a_users_mirrors_list_gets_the_canary_as_one_more_entry() -> None:
    # Istio refuses a route with both `mirror` and `mirrors` ("HTTP route cannot contain both
    # mirror and mirrors", validateHTTPRoute), so the canary joins the user's list.
    vs = copy.deepcopy(VS)
    audit = {"destination": {"host": "audit-service"}, "percentage": {"value": 1.0}}
    vs["spec"]["http"][0]["mirrors"] = [audit]
    out = set_mirror(vs, TARGET, 25)
    assert_valid_istio(out)
    route = out["spec"]["http"][0]
    assert "mirror" not in route
    assert route["mirrors"] == [audit, {"destination": CANARY, "percentage": {"value": 25.0}}]
    assert mirror_percent(out, TARGET) == 25.0
    assert remove_mirror(out, TARGET) == vs
    assert rollback(out, TARGET)["spec"]["http"][0]["mirrors"] == [audit]


@pytest.mark.parametrize("step", [promote, rollback])
def test_promote_and_rollback_remove_mirrors_to_either_subset_and_keep_others(step: Any) -> None:
    vs = set_mirror(set_canary_weight(VS, TARGET, 50), TARGET, 100)
    out = step(vs, TARGET)
    assert_valid_istio(out)
    assert all("mirror" not in r and "mirrorPercentage" not in r for r in out["spec"]["http"])
    stable_mirror = copy.deepcopy(VS)
    stable_mirror["spec"]["http"][0]["mirror"] = {"host": "model-service", "subset": "v1"}
    assert "mirror" not in step(stable_mirror, TARGET)["spec"]["http"][0]
    elsewhere = copy.deepcopy(VS)
    elsewhere["spec"]["http"][0]["mirror"] = {"host": "audit-service"}
    assert step(elsewhere, TARGET)["spec"]["http"][0]["mirror"] == {"host": "audit-service"}


def test_a_virtual_service_with_only_tcp_routes_cannot_be_mirrored() -> None:
    vs = copy.deepcopy(VS)
    vs["spec"]["tcp"] = [{"route": vs["spec"].pop("http")[0]["route"]}]
    with pytest.raises(RoutingError, match="no http route .* Istio mirrors only http requests"):
        set_mirror(vs, TARGET, 100)
    assert remove_mirror(vs, TARGET) == vs


def test_the_router_seam_sets_reads_and_removes_the_mirror() -> None:
    router = router_for("istio")
    out = router.set_mirror(VS, 12.5)
    assert router.mirror_percent(out) == 12.5
    assert router.mirror_percent(router.remove_mirror(out)) == 0.0


@pytest.mark.parametrize(
    "percent",
    [101, -1, 100.5, math.nan, math.inf, -math.inf, True, False, "half", "50", None, [50]],
)
def test_percent_must_be_a_number_0_to_100_and_the_error_names_it(percent: object) -> None:
    with pytest.raises(RoutingError, match="0..100") as raised:
        set_mirror(VS, TARGET, percent)
    assert repr(percent) in str(raised.value)
    with pytest.raises(RoutingError, match="0..100"):
        router_for("istio").set_mirror(VS, percent)


def _mirrors_to(vs: dict[str, Any], subsets: tuple[str, ...]) -> list[Any]:
    found = []
    for route in vs["spec"].get("http") or []:
        policies = [route.get("mirror")] + [
            m.get("destination") for m in route.get("mirrors") or []
        ]
        found += [m for m in policies if m and m.get("host") == HOST and m.get("subset") in subsets]
    return found


@settings(max_examples=60, deadline=None)
@given(
    virtual_services(),
    st.one_of(st.integers(1, 100), st.floats(0.01, 100, allow_nan=False)),
)
def test_property_mirror_touches_only_mirrors_and_promote_rollback_clear_it(
    vs: dict[str, Any], percent: float
) -> None:
    vs = copy.deepcopy(vs)
    for route in vs["spec"].get("http") or []:
        if "mirror" not in route:
            # A mirrorPercentage without a mirror means nothing; setting a mirror replaces it.
            route.pop("mirrorPercentage", None)
    try:
        out = set_mirror(vs, TARGET, percent)
    except RoutingError as err:
        # Only a user's own single `mirror` (not to the canary) on a managed route, or no http
        # route to mirror at all, refuses.
        assert "already mirrors" in str(err) or "Istio mirrors only http" in str(err)
        return
    assert mirror_percent(out, TARGET) == float(percent)
    assert remove_mirror(out, TARGET) == remove_mirror(vs, TARGET)
    for route in out["spec"]["http"]:
        assert not ("mirror" in route and "mirrors" in route), route
    for step in (promote, rollback):
        cleared = step(out, TARGET)
        assert _mirrors_to(cleared, ("v1", "v2")) == []
        assert cleared == step(vs, TARGET)
