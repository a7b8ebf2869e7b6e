"""The health trigger on real traffic: the local mesh's data plane, its Istio telemetry, real Prometheus."""

from __future__ import annotations

import asyncio
import collections
import json
import threading
import time
from typing import Any

import httpx
import pytest

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.triggers.health import HealthAnalysisConfig
from tests.conftest import seed_manifest
from tests.local.apps.inprocess import version_deployment

pytestmark = pytest.mark.timeout(300)

VS = "model-virtual-service"


class Requests:
    """Steady requests to the model Service through the mesh's data plane, counted per version."""

    def __init__(self, data_url: str, namespace: str) -> None:
        self.data_url = data_url
        self.host = f"model-service.{namespace}.svc.cluster.local"
        self.served: collections.Counter[tuple[int, str]] = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> Requests:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _loop(self) -> None:
        with httpx.Client(timeout=5) as client:
            while not self._stop.is_set():
                self.send(client)
                self._stop.wait(0.01)

    def send(self, client: httpx.Client) -> tuple[int, str]:
        response = client.post(f"{self.data_url}/predict", headers={"Host": self.host}, json={})
        key = (response.status_code, response.headers.get("x-version", ""))
        self.served[key] += 1
        return key


def _deploy(mesh: Any, namespace: str) -> None:
    for name in (
        "service-model-service.yaml",
        "destinationrule-model-destination.yaml",
        "vs-03-canary-50.yaml",
    ):
        run = mesh.kubectl("-n", namespace, "apply", "-f", str(seed_manifest(name)))
        assert run.returncode == 0, run.stderr
    for deployment in (
        version_deployment("v1", replicas=1),
        version_deployment("v2", replicas=1, STATUS="500"),  # the canary answers 500
    ):
        deployment["metadata"]["namespace"] = namespace
        run = mesh.kubectl("-n", namespace, "apply", "-f", "-", input=json.dumps(deployment))
        assert run.returncode == 0, run.stderr
    deadline = time.monotonic() + 60
    for name in ("model-v1", "model-v2"):
        while True:
            run = mesh.kubectl("-n", namespace, "get", "deployment", name, "-o", "json")
            status = json.loads(run.stdout).get("status", {}) if run.returncode == 0 else {}
            if status.get("readyReplicas") == 1:
                break
            assert time.monotonic() < deadline, f"{name} not ready: {status}"
            time.sleep(0.2)


def test_bad_canary_on_real_traffic_fails_and_traffic_returns_to_stable(
    mesh: Any,
    fresh_namespace: str,
    prometheus_factory,
    prometheus_conn_env,
    monkeypatch,
) -> None:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    namespace = fresh_namespace
    _deploy(mesh, namespace)
    data_url = f"http://127.0.0.1:{mesh.data_port}"
    with httpx.Client(timeout=5) as client:  # the mesh's telemetry has series before the scrape
        Requests(data_url, namespace).send(client)
    server = prometheus_factory([f"127.0.0.1:{mesh.metrics_port}/stats/prometheus"])
    prometheus_conn_env(server.url)
    config = HealthAnalysisConfig.from_params(
        namespace=namespace,
        checks=[ErrorRateCheck(max_rate=0.05, min_requests=20)],
        bake_time=60,
        poll_interval=1,
        timeout=90,
        rollback_on_failure=True,
        virtual_service=VS,
    )

    async def first_event() -> dict[str, Any]:
        async for event in config.trigger().run():
            return event.payload
        raise AssertionError("no event")

    with Requests(data_url, namespace) as during:
        verdict = asyncio.run(first_event())

    assert verdict["verdict"] == "FAIL", verdict["reason"]
    assert verdict["elapsed_seconds"] < config.bake_time_seconds
    (check,) = verdict["checks"]
    assert check["canary_value"] == 1.0 and check["stable_value"] == 0.0
    assert verdict["rolled_back_at"] is not None
    assert {version for _, version in during.served} == {"v1", "v2"}

    after = Requests(data_url, namespace)
    with httpx.Client(timeout=5) as client:
        for _ in range(30):
            after.send(client)
    assert after.served == {(200, "v1"): 30}
