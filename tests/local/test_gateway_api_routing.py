"""Data plane routing by Gateway API HTTPRoutes: weights, precedence, header matches, mirrors, invalid backends.

Each test pins a behaviour of ``apis/v1/httproute_types.go`` (kubernetes-sigs/gateway-api v1.6)
named in its docstring. Every HTTPRoute used here is first validated against the Gateway API
CRDs (``gateway_api_crds_dir``), so the mesh is only ever shown objects a real API server admits.
"""

from __future__ import annotations

import collections
import copy
import random
from pathlib import Path
from typing import Any

import pytest
from scipy.stats import chisquare

from airflow_canary.local.apiserver.schema import CRDSchemas, load_crd_dir
from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey
from airflow_canary.local.dataplane.httproute import GatewayRoutes, path_prefix_matches
from airflow_canary.local.dataplane.proxy import Outcome, RoutingTable
from airflow_canary.local.dataplane.routes import RequestView, Route, Target

GROUP = "gateway.networking.k8s.io"
SERVICES = {
    f"{name}.{ns}.svc.cluster.local": True
    for ns in ("default", "models")
    for name in ("model-service", "model-v1", "model-v2", "model-shadow")
}


@pytest.fixture(scope="module")
def schemas(gateway_api_crds_dir: Path) -> CRDSchemas:
    return load_crd_dir(gateway_api_crds_dir)


def httproute(
    name: str,
    rules: list[dict[str, Any]],
    *,
    namespace: str = "default",
    created: str = "2026-01-01T00:00:00Z",
    parent: dict[str, Any] | None = None,
    hostnames: list[str] | None = None,
) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "parentRefs": [
            parent or {"group": "", "kind": "Service", "name": "model-service", "port": 80}
        ],
        "rules": rules,
    }
    if hostnames is not None:
        spec["hostnames"] = hostnames
    return {
        "apiVersion": f"{GROUP}/v1",
        "kind": "HTTPRoute",
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
    }


def backend(name: str, weight: int | None = None, **extra: Any) -> dict[str, Any]:
    ref: dict[str, Any] = {"name": name, "port": 80, **extra}
    if weight is not None:
        ref["weight"] = weight
    return ref


def valid(schemas: CRDSchemas, *docs: dict[str, Any]) -> list[dict[str, Any]]:
    for doc in docs:
        problems = schemas.validate(doc)
        assert problems == [], (doc["metadata"]["name"], problems)
    return list(docs)


def request(
    path: str = "/predict",
    *,
    host: str = "model-service",
    method: str = "GET",
    headers: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
) -> RequestView:
    return RequestView(host, method, path, headers or {}, query or {})


def first_route(routes: GatewayRoutes, view: RequestView) -> Route:
    host = view.authority
    fqdn = host if "." in host else f"{host}.default.svc.cluster.local"
    found = routes.routes_for(fqdn, host)
    assert found is not None, f"no HTTPRoute serves {host}"
    return next(r for r in found if r.matches_request(view))


def served_by(route: Route) -> str:
    (target,) = set(route.targets)
    return target.service


def mesh_routes(*routes: dict[str, Any], **kwargs: Any) -> GatewayRoutes:
    return GatewayRoutes(routes, kwargs.get("gateways", ()), kwargs.get("grants", ()), SERVICES)


# -- weights ---------------------------------------------------------------------------------------


def _store_with(*objs: tuple[str, str, dict[str, Any]]) -> ObjectStore:
    store = ObjectStore()
    for group, plural, obj in objs:
        meta = obj["metadata"]
        store.create(
            ResourceKey(group, plural, meta.get("namespace", "default"), meta["name"]), obj
        )
    return store


def _service(name: str, **selector: str) -> tuple[str, str, dict[str, Any]]:
    return (
        "",
        "services",
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"selector": selector, "ports": [{"port": 80, "targetPort": 8080}]},
        },
    )


@pytest.mark.parametrize(
    "weights",
    [
        [90, 10],  # the product's 10% step
        [99, 1],  # its 1% step
        [3, 1, 0],  # relative weights; a weight of 0 sends nothing
        [500_000, 500_000],  # the CRD's largest weights still split evenly
    ],
)
def test_split_over_10000_requests_matches_backend_weights(
    schemas: CRDSchemas, weights: list[int]
) -> None:
    """HTTPBackendRef.weight: each backend gets weight/sum(weights) of the rule's requests."""
    names = ["model-v1", "model-v2", "model-shadow"][: len(weights)]
    (route,) = valid(
        schemas,
        httproute(
            "split", [{"backendRefs": [backend(n, w) for n, w in zip(names, weights, strict=True)]}]
        ),
    )
    store = _store_with(
        _service("model-service", app="model"),
        *(_service(n, app="model", version=n[-2:]) for n in names),
        (GROUP, "httproutes", route),
    )
    table = RoutingTable(store)
    n = 10_000
    counts: collections.Counter[str] = collections.Counter()
    for _ in range(n):
        decision = table.decide(request())
        assert decision.outcome is Outcome.ROUTED and decision.target is not None
        counts[decision.target.service] += 1
    live = [(name, w) for name, w in zip(names, weights, strict=True) if w > 0]
    for name, w in zip(names, weights, strict=True):
        if w == 0:
            assert counts[name] == 0, counts
    total = sum(w for _, w in live)
    observed = [counts[name] for name, _ in live]
    expected = [n * w / total for _, w in live]
    assert sum(observed) == n
    # A fair draw fails this with probability 1e-4.
    assert chisquare(observed, expected).pvalue > 1e-4, (observed, expected)


def test_weights_default_to_one_and_a_lone_backend_takes_all(schemas: CRDSchemas) -> None:
    """weight defaults to 1; "If only one backend is specified and it has a weight greater than
    0, 100% of the traffic is forwarded to that backend" whatever the number."""
    routes = mesh_routes(
        *valid(
            schemas,
            httproute("lone", [{"backendRefs": [backend("model-v2", 7)]}]),
        )
    )
    route = first_route(routes, request())
    assert {route.choose(random.Random(i)) for i in range(50)} == {Target("default", "model-v2")}
    even = mesh_routes(
        httproute("even", [{"backendRefs": [backend("model-v1"), backend("model-v2")]}])
    )
    assert first_route(even, request()).cum_weights == (1, 2)


def test_a_lone_backend_with_weight_0_sends_nothing_and_answers_500(schemas: CRDSchemas) -> None:
    """ "If weight is set to 0, no traffic should be forwarded for this entry" (unlike Istio, where
    a lone destination takes everything); the matched requests get 500."""
    (route,) = valid(schemas, httproute("zero", [{"backendRefs": [backend("model-v1", 0)]}]))
    store = _store_with(
        _service("model-service", app="model"),
        _service("model-v1", app="model"),
        (GROUP, "httproutes", route),
    )
    decision = RoutingTable(store).decide(request())
    assert decision.outcome is Outcome.NO_DESTINATION
    assert decision.route is not None and decision.route.no_backend_status == 500


# -- precedence ------------------------------------------------------------------------------------


def rule(target: str, **match: Any) -> dict[str, Any]:
    return {"matches": [match], "backendRefs": [backend(target)]}


def test_exact_path_beats_any_prefix(schemas: CRDSchemas) -> None:
    """Precedence 1: an "Exact" path match wins over every PathPrefix match, even a longer one
    that is listed first in an older route."""
    routes = mesh_routes(
        *valid(
            schemas,
            httproute(
                "prefix",
                [rule("model-v1", path={"type": "PathPrefix", "value": "/predict"})],
                created="2025-01-01T00:00:00Z",
            ),
            httproute("exact", [rule("model-v2", path={"type": "Exact", "value": "/predict"})]),
        )
    )
    assert served_by(first_route(routes, request("/predict"))) == "model-v2"
    assert served_by(first_route(routes, request("/predict/batch"))) == "model-v1"


def test_longest_prefix_wins_and_prefixes_match_whole_path_elements(schemas: CRDSchemas) -> None:
    """Precedence 2: the PathPrefix with the most characters; PathPrefix matches element-wise
    (``/predict`` matches ``/predict/x`` but not ``/predictions``)."""
    routes = mesh_routes(
        *valid(
            schemas,
            httproute(
                "prefixes",
                [
                    rule("model-v1", path={"type": "PathPrefix", "value": "/"}),
                    rule("model-v2", path={"type": "PathPrefix", "value": "/predict"}),
                ],
            ),
        )
    )
    assert served_by(first_route(routes, request("/predict/batch"))) == "model-v2"
    assert served_by(first_route(routes, request("/predictions"))) == "model-v1"
    assert path_prefix_matches("/predict/", "/predict")
    assert not path_prefix_matches("/predict", "/predictions")


def test_method_then_header_count_then_query_count(schemas: CRDSchemas) -> None:
    """Precedence 3-5 on equal paths: a method match, then the largest number of header
    matches, then the largest number of query param matches."""
    base = {"path": {"type": "PathPrefix", "value": "/"}}
    routes = mesh_routes(
        *valid(
            schemas,
            httproute(
                "many",
                [
                    rule("model-v1", **base),
                    rule("model-shadow", **base, queryParams=[{"name": "debug", "value": "1"}]),
                    rule("model-v2", **base, headers=[{"name": "x-canary-version", "value": "v2"}]),
                    rule(
                        "model-service",
                        **base,
                        headers=[{"name": "x-canary-version", "value": "v2"}],
                        method="POST",
                    ),
                ],
            ),
        )
    )
    both = request(headers={"x-canary-version": "v2"}, query={"debug": "1"})
    assert served_by(first_route(routes, both)) == "model-v2"  # 1 header beats 1 query param
    post = request(method="POST", headers={"x-canary-version": "v2"})
    assert served_by(first_route(routes, post)) == "model-service"  # method first
    assert served_by(first_route(routes, request(query={"debug": "1"}))) == "model-shadow"
    assert served_by(first_route(routes, request())) == "model-v1"


def test_ties_go_to_the_oldest_route_then_namespace_name_then_rule_order(
    schemas: CRDSchemas,
) -> None:
    """ "The oldest Route based on creation timestamp", then "{namespace}/{name}" alphabetically,
    then the first matching rule in list order."""
    same = {"path": {"type": "PathPrefix", "value": "/"}}
    younger = httproute("a-younger", [rule("model-v1", **same)], created="2026-06-01T00:00:00Z")
    older = httproute("z-older", [rule("model-v2", **same)], created="2026-01-01T00:00:00Z")
    valid(schemas, younger, older)
    assert served_by(first_route(mesh_routes(younger, older), request())) == "model-v2"
    b = httproute("b", [rule("model-v1", **same)])
    a = httproute("a", [rule("model-v2", **same), rule("model-v1", **same)])
    assert served_by(first_route(mesh_routes(b, a), request())) == "model-v2"


def test_more_specific_hostname_wins_across_gateway_routes(schemas: CRDSchemas) -> None:
    """Hostnames: an exact hostname beats a wildcard before match precedence applies; wildcards
    match one or more labels but not the bare domain; no HTTPRoute for a host -> not served."""
    gateway = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "default"},
        "spec": {
            "gatewayClassName": "local",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    parent = {"name": "edge"}
    wildcard = httproute(
        "wild",
        [rule("model-v1", path={"type": "Exact", "value": "/predict"})],
        parent=parent,
        hostnames=["*.example.com"],
    )
    exact = httproute("exact", [rule("model-v2")], parent=parent, hostnames=["models.example.com"])
    valid(schemas, gateway, wildcard, exact)
    routes = mesh_routes(wildcard, exact, gateways=[gateway])
    assert served_by(first_route(routes, request(host="models.example.com"))) == "model-v2"
    assert served_by(first_route(routes, request(host="a.b.example.com"))) == "model-v1"
    assert routes.routes_for("example.com", "example.com") is None
    assert mesh_routes(wildcard, exact).routes_for("x", "models.example.com") is None  # no Gateway


def test_a_gateway_listener_admits_routes_of_its_own_namespace_by_default(
    schemas: CRDSchemas,
) -> None:
    """Listener.allowedRoutes.namespaces.from defaults to Same."""
    gateway = {
        "apiVersion": f"{GROUP}/v1",
        "kind": "Gateway",
        "metadata": {"name": "edge", "namespace": "infra"},
        "spec": {
            "gatewayClassName": "local",
            "listeners": [{"name": "http", "port": 80, "protocol": "HTTP"}],
        },
    }
    route = httproute(
        "r",
        [rule("model-v2")],
        parent={"name": "edge", "namespace": "infra"},
        hostnames=["m.example.com"],
    )
    valid(schemas, gateway, route)
    assert mesh_routes(route, gateways=[gateway]).routes_for("x", "m.example.com") is None
    everyone = copy.deepcopy(gateway)
    everyone["spec"]["listeners"][0]["allowedRoutes"] = {"namespaces": {"from": "All"}}
    valid(schemas, everyone)
    assert mesh_routes(route, gateways=[everyone]).routes_for("x", "m.example.com") is not None


# -- header matches --------------------------------------------------------------------------------


def test_header_matches_exact_and_regular_expression(schemas: CRDSchemas) -> None:
    """HTTPHeaderMatch: names are case-insensitive; Exact compares the value as is;
    RegularExpression must match the whole value (Envoy/RE2 semantics)."""
    routes = mesh_routes(
        *valid(
            schemas,
            httproute(
                "headers",
                [
                    rule("model-v2", headers=[{"name": "X-Canary-Version", "value": "v2"}]),
                    rule(
                        "model-shadow",
                        headers=[
                            {
                                "type": "RegularExpression",
                                "name": "x-tester",
                                "value": "team-[a-z]+",
                            }
                        ],
                    ),
                    {"backendRefs": [backend("model-v1")]},
                ],
            ),
        )
    )
    assert served_by(first_route(routes, request(headers={"x-canary-version": "v2"}))) == "model-v2"
    assert served_by(first_route(routes, request(headers={"x-canary-version": "V2"}))) == "model-v1"
    assert (
        served_by(first_route(routes, request(headers={"x-tester": "team-ml"}))) == "model-shadow"
    )
    assert served_by(first_route(routes, request(headers={"x-tester": "team-ml!"}))) == "model-v1"


def test_a_route_with_an_invalid_regular_expression_is_not_served_at_all(
    schemas: CRDSchemas,
) -> None:
    """The CRD does not check RegularExpression values; an implementation that cannot compile one
    does not accept the route (``Accepted: False``), so none of its rules serve: the mesh does not
    serve the rules before the bad match either, and names the error."""
    routes = mesh_routes(
        *valid(
            schemas,
            httproute(
                "bad-regex",
                [
                    {"backendRefs": [backend("model-v2")]},
                    rule(
                        "model-shadow",
                        headers=[{"type": "RegularExpression", "name": "x-tester", "value": "("}],
                    ),
                ],
            ),
        )
    )
    assert routes.routes_for("model-service.default.svc.cluster.local", "model-service") is None
    assert "invalid regular expression '('" in routes.errors["default/bad-regex"]


# -- backends --------------------------------------------------------------------------------------


def test_cross_namespace_backend_needs_a_reference_grant(schemas: CRDSchemas) -> None:
    """BackendObjectReference.namespace: a reference to another namespace is only valid when a
    ReferenceGrant there allows it; otherwise the backend is invalid and its share gets 500."""
    route = httproute("r", [{"backendRefs": [backend("model-v2", namespace="models")]}])
    grant = {
        "apiVersion": f"{GROUP}/v1beta1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "allow-default", "namespace": "models"},
        "spec": {
            "from": [{"group": GROUP, "kind": "HTTPRoute", "namespace": "default"}],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    valid(schemas, route, grant)
    (denied,) = first_route(mesh_routes(route), request()).targets
    assert "no ReferenceGrant in namespace models" in denied.error and "model-v2" in denied.error
    (allowed,) = first_route(mesh_routes(route, grants=[grant]), request()).targets
    assert allowed == Target("models", "model-v2")
    missing = httproute("m", [{"backendRefs": [backend("model-v9")]}])
    (gone,) = first_route(mesh_routes(missing), request()).targets
    assert "Service default/model-v9 does not exist" in gone.error


# -- mirrors ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("mirror", "percent"),
    [
        ({}, 100.0),
        ({"percent": 25}, 25.0),
        ({"fraction": {"numerator": 5, "denominator": 1000}}, 0.5),
        ({"fraction": {"numerator": 1}}, 1.0),
    ],
)
def test_request_mirror_percent_and_fraction(
    schemas: CRDSchemas, mirror: dict[str, Any], percent: float
) -> None:
    """HTTPRequestMirrorFilter: percent, or fraction numerator/denominator (default 100); neither
    mirrors every request."""
    (route,) = valid(
        schemas,
        httproute(
            "mirror",
            [
                {
                    "filters": [
                        {
                            "type": "RequestMirror",
                            "requestMirror": {
                                "backendRef": {"name": "model-v2", "port": 80},
                                **mirror,
                            },
                        }
                    ],
                    "backendRefs": [backend("model-v1")],
                }
            ],
        ),
    )
    compiled = first_route(mesh_routes(route), request())
    assert [(m.target, m.percent) for m in compiled.mirrors] == [
        (Target("default", "model-v2"), percent)
    ]
