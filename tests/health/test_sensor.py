"""CanaryHealthSensor deferred (execute -> TaskDeferred -> trigger -> execute_complete) and in the worker."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException, TaskDeferred

from airflow_canary.analysis import AnalysisError, ErrorRateCheck
from airflow_canary.operators.analysis import BranchCanaryHealthOperator
from airflow_canary.sensors.health import CanaryHealthSensor
from airflow_canary.triggers.health import CanaryHealthTrigger
from tests.health.traffic import ArmTraffic, TrafficDriver

CHECKS = [ErrorRateCheck(max_rate=0.05, min_requests=20)]


def sensor(**overrides: Any) -> CanaryHealthSensor:
    params: dict[str, Any] = {
        "task_id": "canary_health",
        "namespace": "default",
        "checks": CHECKS,
        "bake_time": timedelta(seconds=3),
        "poll_interval": 1,
        "timeout": 30,
        "deferrable": True,
    }
    params.update(overrides)
    return CanaryHealthSensor(**params)


def resume_deferred(task: Any) -> Any:
    """What Airflow does with a deferrable task: execute, run the trigger, call the method."""
    with pytest.raises(TaskDeferred) as deferred:
        task.execute(context={})
    trigger = deferred.value.trigger
    assert isinstance(trigger, CanaryHealthTrigger)
    assert deferred.value.timeout is not None
    # The triggerer rebuilds the trigger from its serialized form; do the same.
    classpath, kwargs = trigger.serialize()
    rebuilt = CanaryHealthTrigger(**kwargs)

    async def first_event() -> dict[str, Any]:
        async for event in rebuilt.run():
            return event.payload
        raise AssertionError("the trigger yielded no event")

    payload = asyncio.run(first_event())
    return getattr(task, deferred.value.method_name)(context={}, event=payload)


def test_deferrable_sensor_returns_the_verdict_on_pass(istio_prometheus) -> None:
    exporter, _ = istio_prometheus
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=10), "v2": ArmTraffic(ok=10)}):
        verdict = resume_deferred(sensor())
    assert verdict["verdict"] == "PASS"
    assert verdict["checks"][0]["canary_requests"] >= 20


def test_deferrable_sensor_fails_without_retry_on_fail(istio_prometheus) -> None:
    exporter, _ = istio_prometheus
    traffic = {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=10, errors=10)}
    with TrafficDriver(exporter, traffic):
        with pytest.raises(AirflowFailException, match="canary analysis FAIL: .*error"):
            resume_deferred(sensor(bake_time=60, timeout=90))


def test_non_deferrable_sensor_runs_the_loop_in_the_worker(istio_prometheus) -> None:
    exporter, _ = istio_prometheus
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=10), "v2": ArmTraffic(ok=10)}):
        verdict = sensor(deferrable=False).execute(context={})
    assert verdict["verdict"] == "PASS"


def test_non_deferrable_sensor_raises_on_inconclusive(istio_prometheus) -> None:
    task = sensor(deferrable=False, bake_time=2, timeout=4)
    with pytest.raises(AirflowException, match="INCONCLUSIVE") as info:
        task.execute(context={})
    assert not isinstance(info.value, AirflowFailException)


def test_parameters_are_validated_when_the_dag_is_parsed() -> None:
    with pytest.raises(AnalysisError, match="'canary_health': bake_time_seconds"):
        sensor(bake_time=1, poll_interval=10)
    with pytest.raises(AnalysisError, match="needs virtual_service"):
        sensor(rollback_on_failure=True)
    with pytest.raises(AnalysisError, match="judge"):
        sensor(judge="vibes")
    with pytest.raises(AnalysisError, match="bake_time must be a timedelta or a number"):
        sensor(bake_time="5m")
    with pytest.raises(AnalysisError, match="follow_task_ids_if_unhealthy"):
        BranchCanaryHealthOperator(
            task_id="b",
            namespace="default",
            checks=CHECKS,
            follow_task_ids_if_healthy="next",
            follow_task_ids_if_unhealthy=[],
        )


def test_sensor_keeps_the_config_it_was_given() -> None:
    task = sensor(
        rollback_on_failure=True, virtual_service="model-virtual-service", route_name="primary"
    )
    kwargs = task.analysis.trigger_kwargs(started_at=0.0)
    assert kwargs["rollback"] == {
        "route": "model-virtual-service",
        "namespace": "default",
        "stable_subset": "v1",
        "canary_subset": "v2",
        "route_name": "primary",
        "kubernetes_conn_id": "kubernetes_default",
        "router": "istio",
    }
    assert kwargs["bake_time_seconds"] == 3.0
    assert kwargs["timeout_seconds"] == 30.0


def test_deferrable_follows_the_operators_default_deferrable_setting(monkeypatch) -> None:
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert sensor(deferrable=None).deferrable is True
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert sensor(deferrable=None).deferrable is False
    assert sensor(deferrable=True).deferrable is True


def test_reschedule_mode_is_refused_with_the_reason() -> None:
    # A rescheduled sensor is a new process per poke: the sequential evidence would restart.
    with pytest.raises(AnalysisError, match="mode must be 'poke', got 'reschedule'.*deferrable"):
        sensor(mode="reschedule")


def test_every_analysis_parameter_is_its_own_rendered_field() -> None:
    task = sensor(namespace="{{ params.ns }}", bake_time="{{ params.bake }}")
    assert set(task.template_fields) >= {"namespace", "bake_time", "poll_interval"}
    assert task.namespace == "{{ params.ns }}" and task.bake_time == "{{ params.bake }}"
    # The sensor's own timeout is the analysis's bound plus room for the trigger to answer.
    assert task.timeout > 30 and task.analysis_timeout == 30


def test_in_worker_fail_honours_soft_fail_and_never_fail(istio_prometheus) -> None:
    from airflow.sdk.exceptions import AirflowSkipException

    exporter, _ = istio_prometheus
    traffic = {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=10, errors=10)}
    with TrafficDriver(exporter, traffic):
        with pytest.raises(AirflowFailException, match="canary analysis FAIL"):
            sensor(deferrable=False, bake_time=60, timeout=90).execute(context={})
        with pytest.raises(AirflowSkipException, match="soft_fail"):
            sensor(deferrable=False, bake_time=60, timeout=90, soft_fail=True).execute(context={})
        with pytest.raises(AirflowSkipException, match="never_fail"):
            sensor(deferrable=False, bake_time=60, timeout=90, never_fail=True).execute(context={})


def test_in_worker_timeout_is_a_sensor_timeout_and_soft_fail_skips(istio_prometheus) -> None:
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

    with pytest.raises(AirflowSensorTimeout, match="INCONCLUSIVE: no decision within the 4s"):
        sensor(deferrable=False, bake_time=2, timeout=4).execute(context={})
    with pytest.raises(AirflowSkipException):
        sensor(deferrable=False, bake_time=2, timeout=4, soft_fail=True).execute(context={})
