"""The router seam: the same rollout, step by step, on Istio and on Gateway API.

Each step is applied through ``router_for(kind)`` alone, then the written document is routed by
the local mesh's data plane (VirtualService + DestinationRule, or HTTPRoute), so both backends
are shown to send the same requests to the same version, not just to write plausible YAML.
"""

from __future__ import annotations

import collections
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.local.apiserver.schema import CRDSchemas, load_crd_dir
from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey
from airflow_canary.local.dataplane.proxy import Outcome, RoutingTable
from airflow_canary.local.dataplane.routes import RequestView
from airflow_canary.routing import HeaderRoute, RoutingError
from airflow_canary.routing.router import (
    GatewayAPIRouter,
    IstioRouter,
    Router,
    RouterKind,
    route_object_name,
    route_parameter,
    router_for,
    router_kind,
)
from tests.conftest import EXAMPLE_MANIFESTS, seed_manifest
from tests.schemas import assert_valid_istio

GATEWAY_API = EXAMPLE_MANIFESTS / "gateway-api"


def _load(path: Path) -> dict[str, Any]:
    doc = dict(yaml.safe_load(path.read_text()))
    doc["metadata"]["namespace"] = "default"
    return doc


def _setup(kind: RouterKind) -> tuple[Router, dict[str, Any], list[dict[str, Any]]]:
    """The router, its seed route document, and the objects the mesh needs beside it."""
    if kind is RouterKind.ISTIO:
        return (
            router_for("istio"),
            _load(seed_manifest("vs-00-all-v1")),
            [_load(seed_manifest("destinationrule-model-destination"))],
        )
    return (
        router_for("gateway-api"),
        _load(GATEWAY_API / "httproute-00-all-v1.yaml"),
        [_load(GATEWAY_API / f"service-model-{v}.yaml") for v in ("v1", "v2")],
    )


_PLURALS = {
    "Service": ("", "services"),
    "DestinationRule": ("networking.istio.io", "destinationrules"),
    "VirtualService": ("networking.istio.io", "virtualservices"),
    "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
}


def versions_served(
    route: dict[str, Any], extra: list[dict[str, Any]], n: int = 400, **headers: str
) -> collections.Counter[str]:
    """Which version (v1/v2) ``n`` requests to model-service reach through the mesh's routing."""
    store = ObjectStore()
    for obj in [_load(seed_manifest("service-model-service")), *extra, route]:
        group, plural = _PLURALS[obj["kind"]]
        store.create(ResourceKey(group, plural, "default", obj["metadata"]["name"]), obj)
    table = RoutingTable(store)
    seen: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        decision = table.decide(RequestView("model-service", "GET", "/predict", headers, {}))
        assert decision.outcome is Outcome.ROUTED and decision.target is not None, decision
        target = decision.target
        seen[target.subset or target.service.removeprefix("model-")] += 1
    return seen


@pytest.fixture(scope="module")
def gateway_schemas(gateway_api_crds_dir: Path) -> CRDSchemas:
    return load_crd_dir(gateway_api_crds_dir)


def _valid(kind: RouterKind, doc: dict[str, Any], schemas: CRDSchemas) -> dict[str, Any]:
    if kind is RouterKind.ISTIO:
        assert_valid_istio(doc)
    else:
        assert schemas.validate(doc) == []
    return doc


@pytest.mark.parametrize("kind", list(RouterKind))
def test_one_rollout_through_the_seam_routes_alike_on_both_backends(
    kind: RouterKind, gateway_schemas: CRDSchemas
) -> None:
    router, route, extra = _setup(kind)
    header = HeaderRoute("x-canary-version", "v2", subset=router.canary)

    assert router.read_split(route).as_dict() == {router.stable: 100, router.canary: 0}
    assert versions_served(route, extra) == {"v1": 400}

    route = _valid(kind, router.set_header_route(route, header), gateway_schemas)
    assert router.header_routes(route) == [header]
    assert versions_served(route, extra, 50, **{"x-canary-version": "v2"}) == {"v2": 50}
    assert versions_served(route, extra, 50) == {"v1": 50}

    route = _valid(kind, router.set_weight(route, 50), gateway_schemas)
    assert router.read_split(route).as_dict() == {router.stable: 50, router.canary: 50}
    served = versions_served(route, extra, 2000)
    assert 850 < served["v2"] < 1150, served  # Binomial(2000, 0.5): outside is < 1e-11

    route = _valid(kind, router.set_mirror(route, 25), gateway_schemas)
    assert router.remove_mirror(router.set_mirror(route, 25)) == router.remove_mirror(route)

    promoted = _valid(kind, router.promote(route), gateway_schemas)
    assert router.read_split(promoted).as_dict() == {router.stable: 0, router.canary: 100}
    assert router.header_routes(promoted) == []
    assert versions_served(promoted, extra, 100) == {"v2": 100}
    assert router.promote(promoted) == promoted

    rolled = _valid(kind, router.rollback(route), gateway_schemas)
    assert router.read_split(rolled).as_dict() == {router.stable: 100, router.canary: 0}
    assert router.header_routes(rolled) == []
    assert versions_served(rolled, extra, 100, **{"x-canary-version": "v2"}) == {"v1": 100}
    assert router.rollback(rolled) == rolled
    assert router.managed_routes(rolled) == [
        "primary" if kind is RouterKind.GATEWAY_API else "http[0]"
    ]


def test_router_for_chooses_by_name_and_names_bad_values() -> None:
    assert isinstance(router_for("istio"), IstioRouter)
    assert isinstance(router_for("Gateway-API", stable="a", canary="b"), GatewayAPIRouter)
    assert router_kind(" istio ") is RouterKind.ISTIO
    with pytest.raises(
        RoutingError, match="router must be one of 'istio', 'gateway-api', got 'linkerd'"
    ):
        router_for("linkerd")
    with pytest.raises(RoutingError, match="backend_namespace is a Gateway API setting"):
        router_for("istio", backend_namespace="models")
    with pytest.raises(RoutingError, match="stable_service and canary_service must differ"):
        router_for("gateway-api", stable="m", canary="m")


def test_the_route_object_is_named_in_its_routers_own_term() -> None:
    assert route_object_name("istio", virtual_service="model-vs") == "model-vs"
    assert route_object_name("gateway-api", http_route="{{ params.r }}") == "{{ params.r }}"
    assert (route_parameter("istio"), route_parameter("gateway-api")) == (
        "virtual_service",
        "http_route",
    )


@pytest.mark.parametrize(
    ("router", "given", "message"),
    [
        (
            "gateway-api",
            {"virtual_service": "model-route"},
            "router='gateway-api' manages an HTTPRoute: pass http_route='model-route' instead of "
            "virtual_service=... (virtual_service names a VirtualService, with router='istio')",
        ),
        (
            "istio",
            {"http_route": "model-route"},
            "router='istio' manages a VirtualService: pass virtual_service='model-route' instead "
            "of http_route=... (http_route names an HTTPRoute, with router='gateway-api')",
        ),
        (
            "istio",
            {"virtual_service": "vs", "http_route": "r"},
            "router='istio' manages a VirtualService: pass only virtual_service=, got "
            "virtual_service='vs' and http_route='r'",
        ),
        (
            "gateway-api",
            {},
            "router='gateway-api' manages an HTTPRoute: pass its name as http_route=",
        ),
        ("istio", {}, "router='istio' manages a VirtualService: pass its name as virtual_service="),
        ("gateway-api", {"http_route": " "}, "http_route must be a non-empty string, got ' '"),
        ("istio", {"virtual_service": 7}, "virtual_service must be a non-empty string, got 7"),
    ],
)
def test_a_route_object_not_named_by_its_routers_parameter_is_refused(
    router: str, given: dict[str, Any], message: str
) -> None:
    with pytest.raises(RoutingError) as err:
        route_object_name(router, **given)
    assert str(err.value) == message
