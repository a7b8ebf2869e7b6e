"""Rollback from the trigger: on FAIL the local mesh's VirtualService is at 100% stable before the event."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.local.tools.prometheus import PrometheusServer
from airflow_canary.triggers.health import HealthAnalysisConfig
from tests.conftest import seed_manifest
from tests.fixtures.prometheus import IstioExporter
from tests.health.traffic import ArmTraffic, TrafficDriver

VS = "model-virtual-service"


def _weights(mesh: Any, namespace: str) -> dict[str, int]:
    run = mesh.kubectl("-n", namespace, "get", "virtualservice", VS, "-o", "json")
    assert run.returncode == 0, run.stderr
    spec = json.loads(run.stdout)["spec"]
    weighted = [r for r in spec["http"] if "match" not in r][0]
    return {d["destination"]["subset"]: d.get("weight", 100) for d in weighted["route"]}


@pytest.fixture
def canary_at_50(mesh: Any, fresh_namespace: str, monkeypatch) -> str:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    for name in (
        "service-model-service.yaml",
        "destinationrule-model-destination.yaml",
        "vs-03-canary-50.yaml",
    ):
        run = mesh.kubectl("-n", fresh_namespace, "apply", "-f", str(seed_manifest(name)))
        assert run.returncode == 0, run.stderr
    assert _weights(mesh, fresh_namespace) == {"v1": 50, "v2": 50}
    return fresh_namespace


def test_fail_rolls_back_to_stable_before_the_event(
    mesh: Any, canary_at_50: str, prometheus_factory, prometheus_conn_env
) -> None:
    namespace = canary_at_50
    exporter = IstioExporter(namespace=namespace).start()
    try:
        exporter.record("v1", ok=1)
        exporter.record("v2", ok=1)
        server: PrometheusServer = prometheus_factory([exporter.target])
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
        traffic = {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=10, errors=10)}
        with TrafficDriver(exporter, traffic):

            async def first_event() -> dict[str, Any]:
                async for event in config.trigger().run():
                    return event.payload
                raise AssertionError("no event")

            verdict = asyncio.run(first_event())
        # Read right when the event arrives: the trigger rolled back before yielding it.
        weights = _weights(mesh, namespace)
    finally:
        exporter.stop()

    assert verdict["verdict"] == "FAIL", verdict["reason"]
    assert weights["v1"] == 100 and weights.get("v2", 0) == 0
    assert verdict["rolled_back_at"] is not None
    assert verdict["rollback_seconds"] >= 0
    assert verdict["rollback"]["rolled_back"] is True
    assert verdict["rollback"]["split"]["v1"] == 100
    assert "canary analysis FAIL" in verdict["rollback"]["reason"]


def test_rollback_failure_is_reported_in_the_verdict(
    mesh: Any,
    fresh_namespace: str,
    istio_exporter,
    prometheus_factory,
    prometheus_conn_env,
    monkeypatch,
) -> None:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    server = prometheus_factory([istio_exporter.target], wait_scrape=False)
    prometheus_conn_env(server.url)
    config = HealthAnalysisConfig.from_params(
        namespace=fresh_namespace,
        checks=[ErrorRateCheck(max_rate=0.05)],
        bake_time=5,
        poll_interval=1,
        max_inconclusive_polls=1,
        rollback_on_failure=True,
        virtual_service="no-such-virtual-service",
    )
    server.stop()  # every poll fails: FAIL at the first poll, then a rollback that cannot work

    async def first_event() -> dict[str, Any]:
        async for event in config.trigger().run():
            return event.payload
        raise AssertionError("no event")

    verdict = asyncio.run(first_event())
    assert verdict["verdict"] == "FAIL"
    assert verdict["rolled_back_at"] is None
    assert "no-such-virtual-service" in verdict["rollback_error"]
