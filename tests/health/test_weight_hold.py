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
    namespace: str,
    server: PrometheusServer,
    exporter: IstioExporter,
    *,
    bake_time: int = 12,
    during: Any = None,
    **extra: Any,
) -> dict[str, Any]:
    """Judge a 10% step while a stand-in data plane sends 10% of 200 requests/s to the canary;
    ``during(driver)`` runs in a thread beside the analysis."""
    config = HealthAnalysisConfig.from_params(
        namespace=namespace,
        checks=[ErrorRateCheck(max_rate=0.05, min_requests=20)],
        bake_time=bake_time,
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
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=18), "v2": ArmTraffic(ok=2)}) as driver:
        if during is not None:
            threading.Thread(target=during, args=(driver,), daemon=True).start()
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


def test_a_canary_restarting_mid_step_is_not_taken_for_a_changed_weight(
    mesh: Any, canary_at_10: str, prometheus_factory: Any, prometheus_conn_env: Any
) -> None:
    """The canary's pods restart (a node restart, an OOM kill) for 6 s of a 10% step: Envoy
    answers the canary's share itself with 503 UH, reported only by the callers' sidecars with
    the destination "unknown" (istio/istio#28387). Its share of received requests falls far
    below 10% (about 40 of 200 expected in that time), but the weight held: those 503s count
    as possibly the canary's, and the step is judged, not ended as another writer's change."""

    def restart_canary(driver: TrafficDriver) -> None:
        time.sleep(12)  # past the share test's warm-up
        canary = driver.arms["v2"]
        driver.arms["v2"], driver.unreachable = ArmTraffic(ok=0), canary.ok
        time.sleep(6)
        driver.arms["v2"], driver.unreachable = canary, 0

    exporter = IstioExporter(namespace=canary_at_10).start()
    try:
        server = prometheus_factory([exporter.target])
        prometheus_conn_env(server.url)
        verdict = _judge(canary_at_10, server, exporter, bake_time=24, during=restart_canary)
    finally:
        exporter.stop()
    assert verdict["verdict"] == "PASS", verdict["reason"]
    assert "weight_changed" not in verdict
    (check,) = verdict["checks"]
    assert check["unreachable_requests"] >= 50, check  # 6 s of 2 per tick, as scraped
    assert _canary_weight(mesh, canary_at_10) == 10


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
