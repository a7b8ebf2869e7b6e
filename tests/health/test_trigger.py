"""CanaryHealthTrigger end to end: a real Prometheus scraping Istio metrics the test drives."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

import pytest

from airflow_canary.analysis import AnalysisError, ErrorRateCheck, LatencyCheck, PromQLCheck
from airflow_canary.triggers.health import (
    CanaryHealthTrigger,
    HealthAnalysisConfig,
    HealthAnalysisRun,
    poll_line,
)
from tests.health.traffic import ArmTraffic, TrafficDriver


def run_trigger(trigger: CanaryHealthTrigger) -> list[dict[str, Any]]:
    """Every event the trigger yields, in order (it must yield exactly one)."""

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    return asyncio.run(collect())


def make_config(**overrides: Any) -> HealthAnalysisConfig:
    params: dict[str, Any] = {
        "namespace": "default",
        "checks": [ErrorRateCheck(max_rate=0.05, min_requests=20)],
        "bake_time": 4,
        "poll_interval": 1,
        "timeout": 30,
    }
    params.update(overrides)
    return HealthAnalysisConfig.from_params(**params)


def test_healthy_canary_passes_after_its_bake_time(istio_prometheus) -> None:
    exporter, _ = istio_prometheus
    config = make_config()
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=10), "v2": ArmTraffic(ok=10)}):
        events = run_trigger(config.trigger())

    assert len(events) == 1
    verdict = events[0]
    assert verdict["verdict"] == "PASS" and verdict["final"] is True
    assert verdict["elapsed_seconds"] >= config.bake_time_seconds
    (check,) = verdict["checks"]
    assert check["name"] == "error-rate" and check["status"] == "PASS"
    assert check["canary_value"] == 0.0
    assert check["canary_requests"] >= 20 and check["stable_requests"] >= 20
    assert verdict["rolled_back_at"] is None
    json.dumps(verdict)  # the event payload must be JSON


def test_bad_canary_fails_before_the_bake_time(istio_prometheus) -> None:
    exporter, _ = istio_prometheus
    config = make_config(bake_time=120, timeout=150)
    traffic = {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=10, errors=10)}
    with TrafficDriver(exporter, traffic):
        (verdict,) = run_trigger(config.trigger())

    assert verdict["verdict"] == "FAIL" and verdict["final"] is True
    assert verdict["elapsed_seconds"] < config.bake_time_seconds
    (check,) = verdict["checks"]
    assert check["status"] == "FAIL"
    assert check["canary_value"] == pytest.approx(0.5, abs=0.05)
    assert check["stable_value"] == 0.0
    assert "error" in verdict["reason"]


def test_malformed_promql_fails_at_the_first_poll_with_prometheus_error(istio_prometheus) -> None:
    bad = PromQLCheck(
        name="queue-depth",
        query='sum(rate(istio_requests_total{destination_version="{{ version }}"}[1m]',
        max_value=10,
        min_requests=0,
    )
    config = make_config(checks=[bad], bake_time=60, timeout=90)
    (verdict,) = run_trigger(config.trigger())
    assert verdict["verdict"] == "FAIL" and verdict["final"] is True
    assert verdict["polls"] == 1
    assert "bad_data" in verdict["reason"] and "sum(rate(istio_requests_total" in verdict["reason"]


def test_no_traffic_is_inconclusive_at_the_timeout(istio_prometheus) -> None:
    config = make_config(bake_time=2, timeout=5)
    (verdict,) = run_trigger(config.trigger())
    assert verdict["verdict"] == "INCONCLUSIVE" and verdict["final"] is True
    assert "timeout" in verdict["reason"]


def test_prometheus_down_mid_bake_gives_inconclusive_polls_then_fail(
    istio_exporter, prometheus_factory, prometheus_conn_env
) -> None:
    # A Prometheus of its own: this test stops it.
    exporter = istio_exporter
    exporter.record("v1", ok=1)
    server = prometheus_factory([exporter.target])
    prometheus_conn_env(server.url)
    config = make_config(bake_time=60, timeout=90, max_inconclusive_polls=2)
    lines: list[str] = []

    class StopPrometheusAfterTwoPolls(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(record.getMessage())
            if record.getMessage().startswith("poll 2 "):
                server.stop()

    logger = logging.getLogger(f"{__name__}.prometheus_down")
    logger.setLevel(logging.INFO)
    handler = StopPrometheusAfterTwoPolls()
    logger.addHandler(handler)
    try:
        with TrafficDriver(exporter, {"v1": ArmTraffic(ok=5), "v2": ArmTraffic(ok=5)}):
            run = HealthAnalysisRun(config, time.time(), logger=logger)
            verdict = asyncio.run(run.run())
    finally:
        logger.removeHandler(handler)

    polls = [line for line in lines if line.startswith("poll ")]
    assert [p.rsplit("-> ", 1)[1] for p in polls] == [
        "INCONCLUSIVE",
        "INCONCLUSIVE",
        "INCONCLUSIVE",
        "FAIL (final)",
    ]
    assert verdict["verdict"] == "FAIL" and verdict["final"] is True
    assert "Prometheus failed 2 polls in a row" in verdict["reason"]
    assert server.url in verdict["reason"]


def test_serialize_mirrors_init_and_is_json() -> None:
    config = make_config(
        checks=[ErrorRateCheck(max_rate=0.02), LatencyCheck(quantile=0.95, max_ms=500)],
        judge="threshold",
        rollback_on_failure=True,
        virtual_service="model-virtual-service",
    )
    trigger = config.trigger(started_at=1_700_000_000.0)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_canary.triggers.health.CanaryHealthTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["rollback"]["route"] == "model-virtual-service"
    assert kwargs["started_at"] == 1_700_000_000.0
    rebuilt = CanaryHealthTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.config == config
    # A trigger stored before the route object's key was router-neutral still resumes.
    stored = {**kwargs["rollback"]}
    stored["virtual_service"] = stored.pop("route")
    assert CanaryHealthTrigger(**{**kwargs, "rollback": stored}).config == config


def test_invalid_parameters_fail_at_construction() -> None:
    with pytest.raises(AnalysisError, match="bake_time_seconds"):
        make_config(bake_time=1, poll_interval=5)
    with pytest.raises(AnalysisError, match="judge"):
        make_config(judge="coin-flip")
    with pytest.raises(AnalysisError, match="virtual_service"):
        make_config(rollback_on_failure=True)
    with pytest.raises(AnalysisError, match="poll_interval must be positive"):
        make_config(poll_interval=0)


def test_poll_line_shows_requests_values_and_decision() -> None:
    line = poll_line(
        {
            "verdict": "INCONCLUSIVE",
            "final": False,
            "polls": 3,
            "elapsed_seconds": 12.4,
            "checks": [
                {
                    "name": "error-rate",
                    "status": "INCONCLUSIVE",
                    "canary_value": 0.012,
                    "stable_value": None,
                    "canary_requests": 120,
                    "stable_requests": 1080,
                }
            ],
        }
    )
    assert line == (
        "poll 3 t=12s | requests canary=120 stable=1080 | "
        "error-rate: canary=0.012 stable=n/a INCONCLUSIVE | -> INCONCLUSIVE"
    )
