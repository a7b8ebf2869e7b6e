"""The local stack's parts restart the way their real counterparts do: same ports, same state."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from kubernetes.client import CoreV1Api, CustomObjectsApi

from airflow_canary.local.tools.stack import LocalStack, StackConfig, prometheus_available


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    if not prometheus_available():
        pytest.fail("the Debian prometheus package is required: apt-get install prometheus")
    config = StackConfig(state_dir=tmp_path_factory.mktemp("stack"), rps=20)
    with LocalStack(config) as running:
        yield running


def _predict(stack: LocalStack) -> httpx.Response:
    return httpx.post(
        f"{stack.data_url}/predict",
        headers={"Host": "model-service"},
        json={"instances": [[0.1] * 30]},
        timeout=5,
    )


def test_a_killed_mesh_comes_back_with_its_objects_on_its_ports(
    stack: LocalStack, tmp_path: Path
) -> None:
    # A client made before the restart: a restarted kube-apiserver keeps its token and CA.
    api = stack.api_client()
    vs = stack.virtual_service()
    pods_before = {p.metadata.name for p in CoreV1Api(api).list_namespaced_pod("default").items}
    stack.restart_mesh()
    after = CustomObjectsApi(api).get_namespaced_custom_object(
        "networking.istio.io", "v1", "default", "virtualservices", "model-virtual-service"
    )
    # etcd keeps objects and their resourceVersions across an API server restart.
    assert after["metadata"]["uid"] == vs["metadata"]["uid"]
    assert after["metadata"]["resourceVersion"] == vs["metadata"]["resourceVersion"]
    assert after["spec"] == vs["spec"]
    # The pods died with the mesh; the Deployment's replicas are new ones, ready again.
    # The restored Deployment's status still counts the dead pods as ready until the runner has
    # replaced them: wait for the replacement, not for the stale status.
    deadline = time.monotonic() + 60
    while True:
        pods_after = {p.metadata.name for p in CoreV1Api(api).list_namespaced_pod("default").items}
        if (pods_after and not pods_after & pods_before) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert pods_after and not pods_after & pods_before
    stack.wait_for_deployment(api, "model-v1")
    deadline = time.monotonic() + 30
    while (code := _predict(stack).status_code) != 200 and time.monotonic() < deadline:
        time.sleep(0.2)
    assert code == 200


def test_a_killed_prometheus_comes_back_on_its_port_with_its_samples(stack: LocalStack) -> None:
    stack.prometheus.wait_for_scrape()
    before = stack.query("count_over_time(up[1h])")
    assert before
    stack.kill_prometheus()
    with pytest.raises(httpx.TransportError):
        stack.query("up")
    stack.start_prometheus()
    assert stack.prometheus_url.endswith(f":{stack.prometheus_port}")
    after = stack.query("count_over_time(up[1h])")
    counts = {tuple(sorted(s["metric"].items())): float(s["value"][1]) for s in after}
    for series in before:
        # Every series scraped before the crash still has at least those samples.
        assert counts[tuple(sorted(series["metric"].items()))] >= float(series["value"][1])
