"""The hook's errors name the route object's own kind: an HTTPRoute is never called a VirtualService.

Pins kube-apiserver's two kinds of 404: a missing object (its Status ``details`` name it) and a
resource no API serves, as on a cluster without the Gateway API CRDs ("the server could not find
the requested resource", no details). The first is a not-found error naming the HTTPRoute, the
second says which CRD to apply.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from airflow_canary.hooks.istio import (
    AsyncIstioHook,
    IstioApiError,
    IstioHook,
    IstioNotFoundError,
    RetryPolicy,
)
from airflow_canary.local.apiserver.crd_folder import GATEWAY_API_CRDS
from airflow_canary.operators.traffic import SetCanaryWeightOperator
from airflow_canary.routing.router import router_for
from tests.fixtures.mesh import Mesh, start_mesh

pytestmark = pytest.mark.timeout(180)

ROUTER = router_for("gateway-api", stable="model-v1", canary="model-v2")


def _use(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)


@pytest.fixture(scope="module")
def bare_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    """A mesh with no Gateway API CRDs applied: the API serves no HTTPRoute."""
    with start_mesh(tmp_path_factory.mktemp("no-gateway-api")) as mesh:
        yield mesh


@pytest.fixture(scope="module")
def gateway_mesh(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Mesh]:
    with start_mesh(tmp_path_factory.mktemp("gateway-api"), crds=GATEWAY_API_CRDS) as mesh:
        yield mesh


def _fast() -> RetryPolicy:
    return RetryPolicy(connect_attempts=2, connect_backoff_seconds=0.05, connect_deadline_seconds=5)


def test_a_missing_httproute_is_named_as_an_httproute(
    gateway_mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(gateway_mesh, monkeypatch)
    with pytest.raises(IstioNotFoundError) as err:
        IstioHook(retry_policy=_fast()).get_route(ROUTER, "no-such-route", "default")
    assert str(err.value) == "HTTPRoute 'no-such-route' not found in namespace 'default'"
    with pytest.raises(IstioNotFoundError, match="^HTTPRoute 'no-such-route' not found"):
        IstioHook(retry_policy=_fast()).update_route(ROUTER, "no-such-route", "default", dict)
    with pytest.raises(IstioNotFoundError, match="^HTTPRoute 'no-such-route' not found"):
        asyncio.run(
            AsyncIstioHook(retry_policy=_fast()).aget_route(ROUTER, "no-such-route", "default")
        )


def test_an_unserved_httproute_kind_says_which_crd_to_apply(
    bare_mesh: Mesh, monkeypatch: pytest.MonkeyPatch
) -> None:
    _use(bare_mesh, monkeypatch)
    expected = (
        "the Kubernetes API serves no HTTPRoute in gateway.networking.k8s.io/v1 "
        "(the server could not find the requested resource"
    )
    with pytest.raises(IstioApiError) as err:
        IstioHook(retry_policy=_fast()).get_route(ROUTER, "model-route", "default")
    assert not isinstance(err.value, IstioNotFoundError)
    assert str(err.value).startswith(expected), err.value
    assert "apply the CRD httproutes.gateway.networking.k8s.io" in str(err.value)
    with pytest.raises(IstioApiError, match="serves no HTTPRoute"):
        asyncio.run(
            AsyncIstioHook(retry_policy=_fast()).aget_route(ROUTER, "model-route", "default")
        )
    # The traffic operator fails the same way, before writing anything.
    step = SetCanaryWeightOperator(
        task_id="w",
        weight=10,
        http_route="model-route",
        router="gateway-api",
        stable_subset="model-v1",
        canary_subset="model-v2",
    )
    with pytest.raises(IstioApiError, match="serves no HTTPRoute"):
        step.execute({})  # type: ignore[arg-type]


def test_the_mesh_answers_an_unserved_resource_as_kube_apiserver_does(bare_mesh: Mesh) -> None:
    with bare_mesh.http() as client:
        got = client.get("/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/x")
    assert got.status_code == 404
    status = got.json()
    assert status["reason"] == "NotFound" and not (status.get("details") or {}).get("name")
    assert status["message"].startswith("the server could not find the requested resource")
