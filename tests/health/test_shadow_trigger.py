"""ShadowAnalysisTrigger: its serialized form, and its loop run in-process over real ``file://`` logs."""

from __future__ import annotations

import asyncio
import inspect
import json
import re
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_canary.analysis import AnalysisError
from airflow_canary.analysis.shadow import (
    MirroredErrorRateCheck,
    PredictionAgreementCheck,
    PredictionDeltaCheck,
)
from airflow_canary.triggers.shadow import ShadowAnalysisConfig, ShadowAnalysisTrigger
from tests.health.shadow_logs import write_log

AGREE = PredictionAgreementCheck(max_disagreement=0.02, min_pairs=200)


def config(log: str, **overrides: Any) -> ShadowAnalysisConfig:
    params: dict[str, Any] = {
        "prediction_log": (log,),
        "checks": (AGREE,),
        "stable_version": "v1",
        "canary_version": "v2",
        "since": datetime.now(timezone.utc) - timedelta(seconds=30),
        "duration_seconds": 1.0,
        "poll_interval_seconds": 1.0,
        "pairing_window_seconds": 30.0,
        "alpha": 0.01,
        "budget_share": 0.2,
    }
    params.update(overrides)
    return ShadowAnalysisConfig(**params)


def run_rebuilt(trigger: ShadowAnalysisTrigger) -> list[dict[str, Any]]:
    """Every event of the trigger the triggerer rebuilds from ``serialize()`` (stored as JSON)."""
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_canary.triggers.shadow.ShadowAnalysisTrigger"
    rebuilt = ShadowAnalysisTrigger(**json.loads(json.dumps(kwargs)))

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in rebuilt.run()]

    return asyncio.run(collect())


def test_serialize_mirrors_init_and_round_trips_through_json() -> None:
    original = config(
        "s3://bucket/shadow/",
        checks=(
            AGREE,
            PredictionDeltaCheck(max_mean_abs=0.1),
            MirroredErrorRateCheck(max_rate=0.02),
        ),
        since="2026-12-01T10:00:00Z",
        namespace="models",
        prometheus_conn_id="prometheus_default",
        object_storage_conn_id="aws_default",
        max_inconclusive_polls=4,
    )
    trigger = original.trigger(started_at=1_796_119_200.0)
    trigger.progress_xcom = {"dag_id": "d", "task_id": "t", "run_id": "r", "map_index": -1}
    classpath, kwargs = trigger.serialize()
    assert set(kwargs) == set(inspect.signature(ShadowAnalysisTrigger).parameters)
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert kwargs["since"] == "2026-12-01T10:00:00+00:00"
    assert kwargs["started_at"] == 1_796_119_200.0
    rebuilt = ShadowAnalysisTrigger(**json.loads(json.dumps(kwargs)))
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.config == original


def test_an_identical_model_passes_at_the_end_of_the_duration(tmp_path: Path) -> None:
    log = write_log(tmp_path / "same", 400, None)
    (event,) = run_rebuilt(config(log).trigger(started_at=time.time()))
    verdict = event["verdict"]
    assert verdict["verdict"] == "PASS" and verdict["final"] is True
    assert verdict["reason"].startswith("v2 disagrees with v1 on 0% of 400 paired requests")
    assert verdict["pairing"]["pairs"] == 400
    assert verdict["logs"]["missing"]["time"]["count"] == 1  # counted, reported
    assert "1 record(s) miss required field 'time'" in event["problems"]
    assert verdict["elapsed_seconds"] >= 1.0


def test_a_disagreeing_model_fails_with_examples(tmp_path: Path) -> None:
    log = write_log(tmp_path / "bad", 400, 12)  # 34 of 400: 8.5%
    (event,) = run_rebuilt(config(log, duration_seconds=300).trigger(started_at=time.time()))
    verdict = event["verdict"]
    assert verdict["verdict"] == "FAIL" and verdict["final"] is True
    assert verdict["reason"].startswith(
        "v2 disagrees with v1 on 8.5% of 400 paired requests (limit 2%)"
    )
    assert verdict["elapsed_seconds"] < 300  # before the duration: as early as the evidence
    example = verdict["examples"][0]
    assert example["request_id"] == "req-0"
    assert (example["stable"]["prediction"], example["canary"]["prediction"]) == (
        {"class": 1},
        {"class": 0},
    )


def test_a_location_that_cannot_be_read_is_an_error_event_naming_it(tmp_path: Path) -> None:
    missing = f"file://{tmp_path}/nowhere"
    (event,) = run_rebuilt(config(missing).trigger(started_at=time.time()))
    assert set(event) == {"error"}
    assert event["error"] == (
        f"shadow analysis cannot read its logs: prediction log location '{missing}' does not exist"
    )


def test_a_restarted_trigger_rereads_the_logs_and_keeps_the_phases_start(tmp_path: Path) -> None:
    # The triggerer restarted 100 s into a 60 s phase: the rebuilt trigger reads every record
    # since the phase's start and judges at once, on the duration counted from the first start.
    log = write_log(tmp_path / "same", 400, None)
    started_at = time.time() - 100
    phase = config(log, duration_seconds=60.0)
    (event,) = run_rebuilt(phase.trigger(started_at=started_at))
    verdict = event["verdict"]
    assert verdict["verdict"] == "PASS" and verdict["final"] is True
    assert verdict["pairing"]["pairs"] == 400
    assert verdict["elapsed_seconds"] >= 99  # from the phase's start, not the restart
    # one poll per interval since the start, the missed ones counted: a single judgement
    assert verdict["polls"] == round(verdict["elapsed_seconds"]) + 1


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"prediction_log": ()}, "prediction_log must be a non-empty list of locations"),
        ({"checks": ()}, "at least one check"),
        ({"since": datetime(2026, 12, 1, 10)}, "since must be a timezone-aware time"),
        ({"poll_interval_seconds": 0}, "poll_interval_seconds must be a positive number, got 0"),
        (
            {"checks": (MirroredErrorRateCheck(),)},
            "mirrored-requests checks need namespace and prometheus_conn_id",
        ),
    ],
)
def test_the_config_refuses_what_the_loop_cannot_run(
    overrides: dict[str, Any], message: str
) -> None:
    with pytest.raises(AnalysisError, match=message):
        config("file:///x", **overrides)


def test_parameters_that_no_longer_validate_are_an_error_event(tmp_path: Path) -> None:
    _, kwargs = config(f"file://{tmp_path}").trigger(started_at=time.time()).serialize()
    stale = ShadowAnalysisTrigger(**{**kwargs, "checks": [{"type": "retired_check"}]})

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in stale.run()]

    (event,) = asyncio.run(collect())
    assert event["error"].startswith("shadow analysis could not run: ")
    assert "retired_check" in event["error"]


def test_a_restarted_trigger_keeps_the_mirrored_requests_baseline_of_the_phases_start(
    istio_prometheus: Any, tmp_path: Path
) -> None:
    # v2's sidecar reports a 500 for every mirrored copy; the triggerer was down for the
    # phase's first seconds. The counters are read at every missed poll from Prometheus's
    # history: the baseline is the phase's start, not the restart, nor v2's whole history.
    from airflow_canary.hooks.prometheus import PrometheusHook
    from tests.health.traffic import ArmTraffic, TrafficDriver

    exporter, _server = istio_prometheus
    exporter.record("v2", errors=20_000)  # an earlier rollout's: before the phase
    hook, expected = PrometheusHook(), exporter.total_requests()
    while (hook.query_scalar("sum(istio_requests_total)") or 0.0) != expected:
        time.sleep(0.2)  # until Prometheus has them (the pytest timeout bounds the wait)
    (tmp_path / "v1.jsonl").write_text("")
    phase = config(
        f"file://{tmp_path}",
        checks=(MirroredErrorRateCheck(max_rate=0.02),),
        namespace="default",
        prometheus_conn_id="prometheus_default",
        duration_seconds=60.0,
    )
    started_at = time.time()
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=0, errors=20)}):
        time.sleep(4)  # the phase runs with no trigger
        (event,) = run_rebuilt(phase.trigger(started_at=started_at))
    verdict = event["verdict"]
    assert verdict["verdict"] == "FAIL" and verdict["final"] is True, verdict["reason"]
    found = re.match(
        r"v2 answered 100% of ([\d,]+) mirrored requests with HTTP 5xx", verdict["reason"]
    )
    assert found is not None, verdict["reason"]
    # the copies since the phase's start, none of the earlier rollout's
    assert 0 < int(found.group(1).replace(",", "")) < 20_000
    assert verdict["polls"] >= 4  # the missed polls count; one judgement when caught up
