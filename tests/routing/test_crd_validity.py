"""Every VirtualService the routing functions write validates against Istio's published schemas:
the cloudcoil-models-istio models always, and the CRDs of ``$CANARY_ISTIO_CRDS`` when set."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.local.apiserver.schema import CRDSchemas, load_crd_dir
from airflow_canary.routing import (
    HeaderRoute,
    MatchType,
    RouteTarget,
    managed_routes,
    promote,
    remove_product_routes,
    rollback,
    set_canary_weight,
    set_header_route,
)
from airflow_canary.routing.istio_mirror import remove_mirror, set_mirror
from tests.routing.documents import load, virtual_services
from tests.schemas import assert_valid_istio, istio_model_violations

TARGET = RouteTarget()
FIELD_CASES = Path(__file__).parents[1] / "data" / "field-cases"
API_VERSIONS = [
    "networking.istio.io/v1",
    "networking.istio.io/v1beta1",
    "networking.istio.io/v1alpha3",
]
HEADER_ROUTES = [
    HeaderRoute("x-canary-version", "v2"),
    HeaderRoute("x-tester", "team-", MatchType.PREFIX),
    HeaderRoute("user-agent", r"^curl/[0-9.]+$", MatchType.REGEX),
    HeaderRoute("x-force-stable", "1", subset="v1"),
]


@pytest.fixture(scope="session")
def crd_schemas(istio_crds_dir: Path) -> CRDSchemas:
    schemas = load_crd_dir(istio_crds_dir)
    for api_version in API_VERSIONS:
        assert schemas.knows(api_version, "VirtualService"), api_version
    return schemas


def _assert_valid(vs: dict[str, Any]) -> None:
    assert_valid_istio(vs)


def _broken(vs: dict[str, Any]) -> dict[str, Any]:
    broken = copy.deepcopy(vs)
    broken["spec"]["http"][0]["match"][0]["headers"]["x-canary-version"] = {
        "exact": "v2",
        "prefix": "v",
    }
    broken["spec"]["http"][1]["route"][0]["weight"] = "ten"
    broken["spec"]["http"][1]["route"][0]["destination"]["subsett"] = "v1"
    return broken


def _outputs(vs: dict[str, Any]) -> list[dict[str, Any]]:
    out = [set_canary_weight(vs, TARGET, w) for w in (0, 1, 10, 50, 99, 100)]
    for route in HEADER_ROUTES:
        out.append(set_header_route(vs, TARGET, route))
    stacked = vs
    for route in HEADER_ROUTES:
        stacked = set_header_route(stacked, TARGET, route)
    out += [stacked, set_canary_weight(stacked, TARGET, 25), remove_product_routes(stacked)]
    out += [promote(stacked, TARGET), rollback(stacked, TARGET)]
    # The shadow phase: a mirror beside the weights and header routes, changed and removed.
    mirrored = [set_mirror(stacked, TARGET, p) for p in (100, 12.5, 0.1)]
    out += mirrored + [remove_mirror(mirrored[0], TARGET)]
    out += [promote(mirrored[0], TARGET), rollback(mirrored[0], TARGET)]
    return out


def test_the_models_reject_what_istio_would() -> None:
    # Guards against a vacuous pass: a wrong type and an unknown field must be reported. (The
    # models carry no oneOf, so the double header match is left to the CRD test below.)
    vs = set_header_route(load("vs-00-all-v1"), TARGET, HEADER_ROUTES[0])
    problems = istio_model_violations(_broken(vs))
    assert any("weight" in p for p in problems), problems
    broken = copy.deepcopy(vs)
    broken["spec"]["http"][1]["route"][0]["destination"]["subsett"] = "v1"
    assert istio_model_violations(broken) == [
        "spec.http[1].route[0].destination.subsett: unknown field"
    ]


def test_the_crds_reject_what_istio_would(crd_schemas: CRDSchemas) -> None:
    vs = set_header_route(load("vs-00-all-v1"), TARGET, HEADER_ROUTES[0])
    broken = _broken(vs)
    problems = crd_schemas.validate(broken)
    assert any("headers" in p for p in problems), problems
    assert any("weight" in p for p in problems), problems
    assert crd_schemas.unknown_fields(broken) == ["spec.http[1].route[0].destination.subsett"]


@pytest.mark.parametrize("api_version", API_VERSIONS)
@pytest.mark.parametrize(
    "seed", ["vs-00-all-v1", "vs-01-canary-1", "vs-03-canary-50", "vs-04-all-v2", "vs-05-header-v2"]
)
def test_outputs_from_seed_states_are_valid(seed: str, api_version: str) -> None:
    vs = load(seed)
    vs["apiVersion"] = api_version
    _assert_valid(vs)
    for out in _outputs(vs):
        assert out["apiVersion"] == api_version
        _assert_valid(out)


@settings(max_examples=40, deadline=None)
@given(virtual_services(), st.integers(0, 100), st.sampled_from(HEADER_ROUTES))
def test_outputs_from_generated_documents_are_valid(
    vs: dict[str, Any], weight: int, route: HeaderRoute
) -> None:
    _assert_valid(vs)  # the generator itself only writes what Istio accepts
    _assert_valid(set_canary_weight(vs, TARGET, weight))
    with_header = set_header_route(set_canary_weight(vs, TARGET, weight), TARGET, route)
    _assert_valid(with_header)
    _assert_valid(promote(with_header, TARGET))
    _assert_valid(rollback(with_header, TARGET))
    managed_http = [r for r in managed_routes(vs, TARGET) if not r.startswith(("tcp[", "tls["))]
    if managed_http and not any("mirror" in r for r in with_header["spec"].get("http") or []):
        mirrored = set_mirror(with_header, TARGET, 50)
        _assert_valid(mirrored)
        _assert_valid(rollback(mirrored, TARGET))


@pytest.mark.parametrize("case", ["01-tcp-tls-routes.yaml", "14-dr-namespace-rollback.yaml"])
def test_outputs_from_field_cases_are_valid(case: str) -> None:
    with open(FIELD_CASES / case, encoding="utf-8") as handle:
        docs = [d for d in yaml.safe_load_all(handle) if d and d["kind"] == "VirtualService"]
    for vs in docs:
        _assert_valid(vs)
        outputs = [set_canary_weight(vs, TARGET, w) for w in (0, 1, 50, 100)]
        outputs += [promote(vs, TARGET), rollback(vs, TARGET)]
        if vs["spec"].get("http"):
            outputs.append(rollback(set_header_route(vs, TARGET, HEADER_ROUTES[0]), TARGET))
        for out in outputs:
            _assert_valid(out)
