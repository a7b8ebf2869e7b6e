"""A step's weight must hold while it is judged: another writer's change ends the step, or is undone.

Pins Istio's behaviour that a VirtualService replaced by another client (``kubectl replace``,
a GitOps self-heal) takes effect at once: the product must notice it through the object's
``resourceVersion`` at its next poll, not validate the step on traffic it did not get.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import pytest

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.local.tools.prometheus import PrometheusServer
from airflow_canary.routing import RouteTarget, read_split
from airflow_canary.triggers.health import HealthAnalysisConfig
from tests.conftest import seed_manifest
from tests.fixtures.prometheus import IstioExporter
from tests.health.traffic import ArmTraffic, TrafficDriver

VS = "model-virtual-service"


@pytest.fixture
def canary_at_10(mesh: Any, fresh_namespace: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    for name in (
        "service-model-service.yaml",
        "destinationrule-model-destination.yaml",
        "vs-02-canary-10.yaml",
    ):
        run = mesh.kubectl("-n", fresh_namespace, "apply", "-f", str(seed_manifest(name)))
        assert run.returncode == 0, run.stderr
    return fresh_namespace


def _canary_weight(mesh: Any, namespace: str) -> float:
    run = mesh.kubectl("-n", namespace, "get", "virtualservice", VS, "-o", "json")
    assert run.returncode == 0, run.stderr
    return float(read_split(json.loads(run.stdout), RouteTarget()).canary_weight)


def _revert_later(mesh: Any, namespace: str, delay: float) -> threading.Thread:
    """After ``delay`` s, ``kubectl replace`` the VirtualService with the all-v1 seed state."""

    def revert() -> None:
        time.sleep(delay)
        run = mesh.kubectl(
            "-n", namespace, "replace", "-f", str(seed_manifest("vs-00-all-v1.yaml"))
        )
        assert run.returncode == 0, run.stderr

    thread = threading.Thread(target=revert, daemon=True)
    thread.start()
    return thread


def _judge(
    namespace: str, server: PrometheusServer, exporter: IstioExporter, **extra: Any
) -> dict[str, Any]:
    config = HealthAnalysisConfig.from_params(
        namespace=namespace,
        checks=[ErrorRateCheck(max_rate=0.05, min_requests=20)],
        bake_time=12,
        poll_interval=1,
        timeout=40,
        virtual_service=VS,
        canary_weight=10,
        **extra,
    )

    async def first_event() -> dict[str, Any]:
        async for event in config.trigger().run():
            return event.payload
        raise AssertionError("no event")

    # The stand-in data plane keeps sending 10% to the canary: only the object changed.
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=18), "v2": ArmTraffic(ok=2)}):
        return asyncio.run(first_event())


def test_a_weight_reverted_by_kubectl_replace_ends_the_step(
    mesh: Any, canary_at_10: str, prometheus_factory: Any, prometheus_conn_env: Any
) -> None:
    exporter = IstioExporter(namespace=canary_at_10).start()
    try:
        server = prometheus_factory([exporter.target])
        prometheus_conn_env(server.url)
        reverter = _revert_later(mesh, canary_at_10, delay=4)
        verdict = _judge(canary_at_10, server, exporter)
        reverter.join()
    finally:
        exporter.stop()
    assert verdict["verdict"] == "INCONCLUSIVE", verdict["reason"]
    assert verdict["reason"].startswith(
        "canary weight changed from 10% to 0% by another writer after "
    )
    assert verdict["weight_changed"] is True and verdict["weight_corrections"] == []
    assert _canary_weight(mesh, canary_at_10) == 0  # the product did not fight the other writer


def test_reassert_writes_the_weight_back_and_logs_each_correction(
    mesh: Any, canary_at_10: str, prometheus_factory: Any, prometheus_conn_env: Any
) -> None:
    exporter = IstioExporter(namespace=canary_at_10).start()
    try:
        server = prometheus_factory([exporter.target])
        prometheus_conn_env(server.url)
        reverter = _revert_later(mesh, canary_at_10, delay=4)
        verdict = _judge(canary_at_10, server, exporter, on_weight_change="reassert")
        reverter.join()
    finally:
        exporter.stop()
    assert verdict["verdict"] == "PASS", verdict["reason"]
    (correction,) = verdict["weight_corrections"]
    assert correction["found"] == {"http[0]": 0} and correction["restored"] == 10
    assert correction["message"].startswith(
        "canary weight changed from 10% to 0% by another writer"
    )
    assert _canary_weight(mesh, canary_at_10) == 10
