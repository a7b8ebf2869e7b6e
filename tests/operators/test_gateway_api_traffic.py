"""Traffic operators with ``router="gateway-api"`` against the mesh serving the Gateway API CRDs.

The same operators as for Istio move an HTTPRoute's weights, add and remove the header rule,
promote and roll back, through the real ``kubernetes`` client; every stored object is the API
server's own (CRD-validated and defaulted) copy.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException

from airflow_canary.hooks.istio import IstioNotFoundError
from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
)
from airflow_canary.rollout.operators import RolloutPlanOperator
from airflow_canary.routing import RoutingError
from tests.conftest import EXAMPLE_MANIFESTS, seed_manifest
from tests.fixtures.mesh import Mesh, start_mesh

pytestmark = pytest.mark.timeout(180)

GATEWAY_API = EXAMPLE_MANIFESTS / "gateway-api"
ROUTE = "model-route"


@pytest.fixture(scope="module")
def gateway_mesh(
    tmp_path_factory: pytest.TempPathFactory, gateway_api_crds_dir: Path
) -> Iterator[Mesh]:
    with start_mesh(tmp_path_factory.mktemp("gw-operators"), crds=gateway_api_crds_dir) as mesh:
        yield mesh


@pytest.fixture
def namespace(gateway_mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in gateway_mesh.env.items():
        monkeypatch.setenv(key, value)
    name = f"t-{secrets.token_hex(4)}"
    gateway_mesh.create_namespace(name)
    for path in (
        seed_manifest("service-model-service"),
        GATEWAY_API / "service-model-v1.yaml",
        GATEWAY_API / "service-model-v2.yaml",
        GATEWAY_API / "httproute-00-all-v1.yaml",
    ):
        result = gateway_mesh.kubectl("apply", "-n", name, "-f", str(path))
        assert result.returncode == 0, result.stderr
    yield name
    gateway_mesh.delete_namespace(name)


def common(namespace: str) -> dict[str, Any]:
    return {
        "http_route": ROUTE,
        "namespace": namespace,
        "stable_subset": "model-v1",
        "canary_subset": "model-v2",
        "router": "gateway-api",
    }


def stored(mesh: Mesh, namespace: str) -> dict[str, Any]:
    result = mesh.kubectl("get", "-n", namespace, "httproute", ROUTE, "-o", "json")
    assert result.returncode == 0, result.stderr
    loaded: dict[str, Any] = json.loads(result.stdout)
    return loaded


def weights(route: dict[str, Any]) -> list[list[tuple[str, int]]]:
    return [
        [(r["name"], r["weight"]) for r in rule["backendRefs"]] for rule in route["spec"]["rules"]
    ]


def test_operators_roll_out_and_back_on_an_httproute(gateway_mesh: Mesh, namespace: str) -> None:
    kw = common(namespace)
    plan = RolloutPlanOperator(
        task_id="plan",
        steps=[10, 50, 100],
        steps_param=None,
        stable_version="v1",
        canary_version="v2",
        **kw,
    ).execute({})
    assert plan["router"] == "gateway-api" and plan["steps"] == [10, 50, 100]

    header = SetHeaderRouteOperator(task_id="h", value="v2", **kw).execute({})  # type: ignore[arg-type]
    assert header["http_route"] == ROUTE and header["router"] == "gateway-api"
    assert [r["name"] for r in header["header_routes"]] == [
        "airflow-canary-header-x-canary-version"
    ]

    result = SetCanaryWeightOperator(task_id="w", weight=10, **kw).execute({})  # type: ignore[arg-type]
    assert result["split"] == {"model-v1": 90, "model-v2": 10} and result["changed"]
    route = stored(gateway_mesh, namespace)
    assert weights(route)[1] == [("model-v1", 90), ("model-v2", 10)]
    # The header rule was written and stored as the API server defaults it.
    assert route["spec"]["rules"][0]["backendRefs"][0]["kind"] == "Service"

    again = SetCanaryWeightOperator(task_id="w2", weight=10, **kw).execute({})  # type: ignore[arg-type]
    assert again["changed"] is False  # nothing written when nothing changes

    rolled = RollbackCanaryOperator(task_id="rb", reason="bad canary", **kw).execute({})  # type: ignore[arg-type]
    assert rolled["split"] == {"model-v1": 100, "model-v2": 0}
    assert rolled["rolled_back"] is True and rolled["reason"] == "bad canary"
    assert rolled["live_traffic"] is True
    assert rolled["header_routes"] == []
    assert weights(stored(gateway_mesh, namespace)) == [[("model-v1", 100), ("model-v2", 0)]]

    promoted = PromoteCanaryOperator(task_id="p", **kw).execute({})  # type: ignore[arg-type]
    assert promoted["split"] == {"model-v1": 0, "model-v2": 100}


def test_plan_fails_naming_the_rule_and_its_refs(gateway_mesh: Mesh, namespace: str) -> None:
    route = stored(gateway_mesh, namespace)
    route["spec"]["rules"][0]["backendRefs"] = [route["spec"]["rules"][0]["backendRefs"][0]]
    result = gateway_mesh.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(route))
    assert result.returncode == 0, result.stderr
    with pytest.raises(AirflowFailException) as err:
        RolloutPlanOperator(
            task_id="plan",
            steps=[10, 100],
            steps_param=None,
            stable_version="v1",
            canary_version="v2",
            **common(namespace),
        ).execute({})
    message = str(err.value)
    assert "no traffic was moved" in message
    assert "rule 'primary'" in message and f"{namespace}/model-v1 (weight 100)" in message


def test_missing_canary_service_stops_the_step_before_any_write(
    gateway_mesh: Mesh, namespace: str
) -> None:
    assert gateway_mesh.kubectl("delete", "-n", namespace, "service", "model-v2").returncode == 0
    before = stored(gateway_mesh, namespace)
    with pytest.raises(IstioNotFoundError, match="Service 'model-v2'"):
        SetCanaryWeightOperator(task_id="w", weight=10, **common(namespace)).execute({})  # type: ignore[arg-type]
    assert (
        stored(gateway_mesh, namespace)["metadata"]["resourceVersion"]
        == before["metadata"]["resourceVersion"]
    )
    # A rollback needs only the route.
    RollbackCanaryOperator(task_id="rb", **common(namespace)).execute({})  # type: ignore[arg-type]


def test_bad_router_and_gateway_api_header_match_fail_at_parse_time() -> None:
    with pytest.raises(
        RoutingError, match="router must be one of 'istio', 'gateway-api', got 'nginx'"
    ):
        SetCanaryWeightOperator(task_id="w", weight=1, virtual_service="r", router="nginx")
    with pytest.raises(RoutingError, match="stable_service must be a Service name"):
        SetCanaryWeightOperator(
            task_id="w", weight=1, http_route="r", router="gateway-api", stable_subset="V_1"
        )


def test_a_cross_namespace_backend_needs_a_reference_grant_before_the_plan_passes(
    gateway_mesh: Mesh, namespace: str
) -> None:
    """ReferenceGrant (gateway-api ``apis/v1beta1/referencegrant_types.go``): a backendRef to a
    Service in another namespace is valid only when a ReferenceGrant in that namespace allows
    HTTPRoutes from the route's namespace. The plan refuses it, naming the Service, before any
    traffic moves; once granted, the steps move the weights."""
    backends = f"{namespace}-models"
    gateway_mesh.create_namespace(backends)
    for name in ("service-model-v1.yaml", "service-model-v2.yaml"):
        result = gateway_mesh.kubectl("apply", "-n", backends, "-f", str(GATEWAY_API / name))
        assert result.returncode == 0, result.stderr
    route = stored(gateway_mesh, namespace)
    for backend in route["spec"]["rules"][0]["backendRefs"]:
        backend["namespace"] = backends
    result = gateway_mesh.kubectl("replace", "-n", namespace, "-f", "-", input=json.dumps(route))
    assert result.returncode == 0, result.stderr

    def plan(**extra: Any) -> dict[str, Any]:
        return RolloutPlanOperator(  # type: ignore[no-any-return]
            task_id="plan",
            steps=[10, 100],
            steps_param=None,
            stable_version="v1",
            canary_version="v2",
            **common(namespace),
            **extra,
        ).execute({})

    # Without backend_namespace the Services are looked for beside the route: the error says where
    # the rules send instead.
    with pytest.raises(AirflowFailException) as err:
        plan()
    assert f"pass backend_namespace={backends!r}" in str(err.value)
    with pytest.raises(AirflowFailException) as err:
        plan(backend_namespace=backends)
    assert str(err.value) == (
        f"the rollout cannot start, no traffic was moved: rule 'primary' of HTTPRoute {ROUTE!r} "
        f"references Service {backends}/model-v1 in another namespace, and no ReferenceGrant in "
        f"{backends!r} allows HTTPRoutes from {namespace!r} to reference it; create one (from: "
        f"HTTPRoute in {namespace}, to: Service)"
    )
    before = stored(gateway_mesh, namespace)["metadata"]["resourceVersion"]
    step = SetCanaryWeightOperator(
        task_id="w", weight=10, backend_namespace=backends, **common(namespace)
    )
    with pytest.raises(RoutingError, match="no ReferenceGrant in"):
        step.execute({})  # type: ignore[arg-type]
    assert stored(gateway_mesh, namespace)["metadata"]["resourceVersion"] == before

    grant = {
        "apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "ReferenceGrant",
        "metadata": {"name": "routes-from-app", "namespace": backends},
        "spec": {
            "from": [
                {"group": "gateway.networking.k8s.io", "kind": "HTTPRoute", "namespace": namespace}
            ],
            "to": [{"group": "", "kind": "Service"}],
        },
    }
    result = gateway_mesh.kubectl("apply", "-f", "-", input=json.dumps(grant))
    assert result.returncode == 0, result.stderr
    assert plan(backend_namespace=backends)["routes"]
    assert step.execute({})["split"] == {"model-v1": 90, "model-v2": 10}  # type: ignore[arg-type]
    rolled = RollbackCanaryOperator(task_id="rb", backend_namespace=backends, **common(namespace))
    assert rolled.execute({})["split"] == {"model-v1": 100, "model-v2": 0}  # type: ignore[arg-type]


def test_backend_namespace_is_a_gateway_api_setting() -> None:
    with pytest.raises(RoutingError, match="backend_namespace is a Gateway API setting"):
        SetCanaryWeightOperator(task_id="w", weight=1, virtual_service="vs", backend_namespace="m")
