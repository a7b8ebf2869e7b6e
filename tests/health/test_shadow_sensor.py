"""ShadowAnalysisSensor: parse-time checks, and real ``airflow dags test`` runs over ``file://`` logs."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSensorTimeout, TaskDeferred

from airflow_canary.analysis import (
    AnalysisError,
    ErrorRateCheck,
    MirroredErrorRateCheck,
    PredictionDriftCheck,
)
from airflow_canary.analysis.shadow import (
    PairedPredictionDriftCheck,
    PredictionAgreementCheck,
)
from airflow_canary.durations import DurationError
from airflow_canary.sensors.shadow import ShadowAnalysisSensor
from airflow_canary.triggers.shadow import ShadowAnalysisRun, ShadowAnalysisTrigger
from tests.health.shadow_logs import write_log

AGREE = PredictionAgreementCheck(max_disagreement=0.02, min_pairs=200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"checks": []}, "checks must be a non-empty list of shadow checks"),
        ({"checks": ["agreement"]}, "'agreement' is not a shadow check"),
        ({"checks": [{"type": "prediction_drift", "max_psi": -1}]}, "max_psi.*got -1"),
        ({"checks": [{"type": "prediction_agreement", "max_disagreement": 2}]}, "got 2"),
        ({"prediction_log": ""}, "prediction_log must be a location URL.*got ''"),
        ({"prediction_log": []}, "prediction_log must be a location URL.*got \\[\\]"),
        ({"canary_version": "v1"}, "must differ, both are 'v1'"),
        ({"alpha": 0.9}, "alpha must be between 0 and 0.5, got 0.9"),
        ({"log_format": "parquet"}, "format must be one of 'jsonl', got 'parquet'"),
        ({"mode": "reschedule"}, "mode must be 'poke', got 'reschedule'.*deferrable=True"),
        ({"deferrable": "yes"}, "task 'shadow': deferrable must be True or False, got 'yes'"),
        ({"deferrable": 1}, "task 'shadow': deferrable must be True or False, got 1"),
        (
            {"checks": [MirroredErrorRateCheck(max_rate=0.02)], "namespace": "default"},
            "mirrored-error-rate read v2's mirrored requests from Istio telemetry in Prometheus: "
            "give prometheus_conn_id",
        ),
        (
            {"checks": [MirroredErrorRateCheck()], "prometheus_conn_id": "prometheus_default"},
            "mirrored-error-rate count v2's requests in its namespace: give namespace",
        ),
        (
            {
                "checks": [MirroredErrorRateCheck()],
                "prometheus_conn_id": "prometheus_default",
                "namespace": "Bad_NS",
            },
            "Bad_NS",
        ),
        ({"max_inconclusive_polls": 0}, "max_inconclusive_polls must be an integer >= 1, got 0"),
        ({"since": "yesterday"}, "since must be a timezone-aware datetime.*got 'yesterday'"),
        (
            {"since": "2026-12-01T10:00:00"},  # naive: whose 10:00?
            "since must be a timezone-aware datetime.*got '2026-12-01T10:00:00'",
        ),
        (
            {"checks": [ErrorRateCheck(max_rate=0.02)]},
            "compares live traffic of both versions.*use MirroredErrorRateCheck",
        ),
        (
            {"checks": [{"type": "mirrored_error_rate", "max_rate": 2}]},
            "max_rate must be a share between 0 and 1, got 2",
        ),
    ],
)
def test_bad_parameters_fail_when_the_dag_is_parsed(kwargs: dict[str, Any], message: str) -> None:
    params: dict[str, Any] = {
        "task_id": "shadow",
        "prediction_log": "file:///tmp/logs",
        "checks": [AGREE],
        **kwargs,
    }
    with pytest.raises(AnalysisError, match=message):
        ShadowAnalysisSensor(**params)


def test_durations_are_checked_at_parse_time_unless_templated() -> None:
    with pytest.raises(DurationError, match="duration must be positive, got -5"):
        ShadowAnalysisSensor(task_id="s", prediction_log="file:///x", checks=[AGREE], duration=-5)
    sensor = ShadowAnalysisSensor(
        task_id="s",
        prediction_log="{{ params.log }}",
        checks=[AGREE.to_dict()],
        duration="{{ params.duration }}",
    )
    assert sensor.shadow_checks == [AGREE]


def test_the_live_drift_check_is_judged_on_the_pairs() -> None:
    sensor = ShadowAnalysisSensor(
        task_id="s",
        prediction_log="file:///x",
        checks=[AGREE, PredictionDriftCheck(max_psi=0.2, min_predictions=300)],
    )
    assert sensor.shadow_checks == [
        AGREE,
        PairedPredictionDriftCheck(max_psi=0.2, min_predictions=300),
    ]


DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    from airflow.sdk import DAG

    from airflow_canary.analysis import PredictionAgreementCheck
    from airflow_canary.sensors.shadow import ShadowAnalysisSensor

    with DAG("DAG_ID", schedule=None, params={"log": ""}) as dag:
        ShadowAnalysisSensor(
            task_id="shadow",
            prediction_log="{{ params.log }}",
            checks=[PredictionAgreementCheck(max_disagreement=0.02, min_pairs=200)],
            duration=1,
            poll_interval=1,
            alpha=0.01,
            budget_share=0.2,
            deferrable=DEFERRABLE,
        )
    """
)


def dags_test(log: str, deferrable: bool = False) -> subprocess.CompletedProcess[str]:
    dag_id = f"shadow_sensor_test_{'deferred' if deferrable else 'worker'}"
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    source = DAG_FILE.replace("DAG_ID", dag_id).replace("DEFERRABLE", str(deferrable))
    (dags / f"{dag_id}.py").write_text(source)
    return subprocess.run(
        [sys.executable, "-m", "airflow", "dags", "test", dag_id, "-c", json.dumps({"log": log})],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


def latest_verdict(deferrable: bool) -> dict[str, Any]:
    """The ``verdict`` XCom of the last run of :func:`dags_test`'s DAG, from the metadata DB."""
    from airflow.models.dagrun import DagRun
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    dag_id = f"shadow_sensor_test_{'deferred' if deferrable else 'worker'}"
    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).one()
        value = session.scalars(
            select(XComModel.value).where(
                XComModel.dag_id == dag_id,
                XComModel.run_id == run.run_id,
                XComModel.task_id == "shadow",
                XComModel.key == "verdict",
            )
        ).one()
    return json.loads(value) if isinstance(value, (str, bytes)) else value


def test_checks_without_telemetry_need_no_prometheus() -> None:
    sensor = ShadowAnalysisSensor(task_id="s", prediction_log="file:///x", checks=[AGREE])
    run = ShadowAnalysisRun(sensor.analysis_config(time.time()), time.time())
    assert sensor.prometheus_conn_id is None and run.telemetry is None
    assert asyncio.run(run.observe_telemetry(time.time())) is None


TELEMETRY_DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    from airflow.sdk import DAG

    from airflow_canary.analysis import MirroredErrorRateCheck, PredictionAgreementCheck
    from airflow_canary.sensors.shadow import ShadowAnalysisSensor

    with DAG("shadow_telemetry_test", schedule=None, params={"log": ""}) as dag:
        ShadowAnalysisSensor(
            task_id="shadow",
            prediction_log="{{ params.log }}",
            checks=[
                PredictionAgreementCheck(max_disagreement=0.02),
                MirroredErrorRateCheck(max_rate=0.02),
            ],
            namespace="default",
            prometheus_conn_id="prometheus_default",
            duration=60,
            poll_interval=1,
            alpha=0.01,
            budget_share=0.25,
        )
    """
)


@pytest.mark.timeout(600)
def test_a_real_run_fails_a_v2_failing_every_mirrored_request_from_istio_telemetry(
    airflow_db: Path, tmp_path: Path, istio_prometheus: Any
) -> None:
    # v1 answers (and logs) the live requests; v2's sidecar reports a 500 for every mirrored
    # copy (reporter="destination", as Istio reports mirrored requests) and v2 logs nothing.
    exporter, _server = istio_prometheus
    exporter.record("v2", errors=20_000)  # an earlier rollout's: before the baseline, not counted
    folder = tmp_path / "logs"
    folder.mkdir()
    (folder / "v1.jsonl").write_text("")
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "shadow_telemetry_test.py").write_text(TELEMETRY_DAG_FILE)
    command = [sys.executable, "-m", "airflow", "dags", "test", "shadow_telemetry_test"]
    command += ["-c", json.dumps({"log": f"file://{folder}"})]
    with subprocess.Popen(
        command, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    ) as run:
        while run.poll() is None:
            exporter.record("v1", ok=20)
            exporter.record("v2", errors=20)
            time.sleep(0.2)
        output = run.stdout.read() if run.stdout is not None else ""
    assert run.returncode != 0, output[-4000:]
    found = re.search(
        r"shadow analysis FAIL: v2 answered 100% of ([\d,]+) mirrored requests with HTTP 5xx "
        r"or gRPC status 2, 4, 12, 13, 14, 15 \(limit 2%\); v2's agreement with v1: no paired "
        r"request yet \(limit 2% disagreement\); e-value",
        output,
    )
    assert found is not None, output[-4000:]
    # only the copies since the phase's first poll: not the 20,000 of the earlier rollout
    assert 0 < int(found.group(1).replace(",", "")) < 20_000


@pytest.mark.timeout(600)
@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_a_real_run_passes_an_identical_model_and_fails_a_disagreeing_one(
    airflow_db: Path, tmp_path: Path, deferrable: bool
) -> None:
    same = dags_test(write_log(tmp_path / "same", 400, None), deferrable)
    output = same.stdout + same.stderr
    assert same.returncode == 0, output[-4000:]
    assert "Shadow analysis PASS: v2 disagrees with v1 on 0% of 400 paired requests" in output
    assert "1 record(s) miss required field 'time'" in output  # counted, reported
    verdict = latest_verdict(deferrable)
    assert (verdict["verdict"], verdict["final"], verdict["phase"]) == ("PASS", True, "shadow")
    assert verdict["pairing"]["pairs"] == 400 and verdict["logs"]["missing"]["time"]["count"] == 1

    bad = dags_test(write_log(tmp_path / "bad", 400, 12), deferrable)  # 8.5% disagree
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert (
        "shadow analysis FAIL: v2 disagrees with v1 on 8.5% of 400 paired requests (limit 2%)"
        in output
    )
    assert "prediction-agreement: request req-0: v1 {'class': 1}, v2 {'class': 0}" in output
    verdict = latest_verdict(deferrable)
    assert verdict["verdict"] == "FAIL" and verdict["examples"][0]["request_id"] == "req-0"
    assert verdict["logs"]["records"] == 800

    missing = f"file://{tmp_path}/nowhere"
    gone = dags_test(missing, deferrable)
    output = gone.stdout + gone.stderr
    assert gone.returncode != 0
    assert f"prediction log location '{missing}' does not exist" in output


@pytest.mark.parametrize(
    "since", ["2026-12-01T10:00:00Z", "2026-12-01T10:00:00+00:00", "2026-12-01T11:00:00+01:00"]
)
def test_since_accepts_iso_8601_times_with_an_offset_or_z(since: str) -> None:
    sensor = ShadowAnalysisSensor(
        task_id="s", prediction_log="file:///x", checks=[AGREE], since=since
    )
    assert sensor.since == since  # parsed again when the task runs, after templating


def test_deferrable_defaults_to_airflows_default_deferrable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for configured, expected in (("False", False), ("True", True)):
        monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", configured)
        sensor = ShadowAnalysisSensor(task_id="s", prediction_log="file:///x", checks=[AGREE])
        assert sensor.deferrable is expected
    explicit = ShadowAnalysisSensor(
        task_id="s", prediction_log="file:///x", checks=[AGREE], deferrable=False
    )
    assert explicit.deferrable is False


def in_process(log: str, *, deferrable: bool) -> Any:
    """The sensor's ``execute`` as Airflow runs it, in this process: deferred, the trigger
    rebuilt from ``serialize()`` and run, then ``execute_complete`` with its event."""
    sensor = ShadowAnalysisSensor(
        task_id="shadow",
        prediction_log=log,
        checks=[AGREE],
        duration=1,
        poll_interval=1,
        budget_share=0.2,
        deferrable=deferrable,
    )
    if not deferrable:
        return sensor.execute(context={})
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context={})
    assert deferred.value.timeout is not None
    classpath, kwargs = deferred.value.trigger.serialize()
    assert classpath == "airflow_canary.triggers.shadow.ShadowAnalysisTrigger"
    rebuilt = ShadowAnalysisTrigger(**json.loads(json.dumps(kwargs)))

    async def first_event() -> dict[str, Any]:
        async for event in rebuilt.run():
            return event.payload
        raise AssertionError("the trigger yielded no event")

    event = asyncio.run(first_event())
    return getattr(sensor, deferred.value.method_name)(context={}, event=event)


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_the_verdict_and_its_exceptions_are_the_same_deferred_or_not(
    tmp_path: Path, deferrable: bool
) -> None:
    verdict = in_process(write_log(tmp_path / "same", 400, None), deferrable=deferrable)
    assert verdict["verdict"] == "PASS" and verdict["final"] is True
    assert verdict["pairing"]["pairs"] == 400 and verdict["logs"]["records"] == 800
    with pytest.raises(
        AirflowFailException,
        match=r"^shadow analysis FAIL: v2 disagrees with v1 on 8\.5% of 400 paired requests "
        r"\(limit 2%\)",
    ):
        in_process(write_log(tmp_path / "bad", 400, 12), deferrable=deferrable)
    missing = f"file://{tmp_path}/nowhere"
    with pytest.raises(AirflowFailException, match=f"location '{missing}' does not exist"):
        in_process(missing, deferrable=deferrable)
    with pytest.raises(AirflowSensorTimeout, match=r"^shadow analysis INCONCLUSIVE: too few pairs"):
        in_process(write_log(tmp_path / "few", 50, None), deferrable=deferrable)


def test_a_slow_poll_at_the_end_of_the_phase_still_ends_in_the_phases_verdict(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A poll may take longer than a few poll intervals (a big log on object storage, a busy
    machine): the phase still ends in its own verdict at the first poll after its duration,
    never in Airflow's "Sensor has timed out". Airflow's sensor timeout is only a backstop
    (duration + one poll interval + 120 s)."""
    from airflow_canary.analysis.shadow import records

    reads = []

    def slow_json_lines(stream: Any) -> Any:
        reads.append(time.monotonic())
        if len(reads) == 1:
            time.sleep(4.5)  # the first poll outlasts the 1 s phase by several poll intervals
        return records.json_lines(stream)

    monkeypatch.setitem(records.FORMATS, "slow-jsonl", slow_json_lines)
    sensor = ShadowAnalysisSensor(
        task_id="shadow",
        prediction_log=write_log(tmp_path / "same", 400, None),
        checks=[AGREE],
        duration=1,
        poll_interval=1,
        budget_share=0.2,
        log_format="slow-jsonl",
        deferrable=False,
    )
    verdict = sensor.execute(context={})
    assert verdict["verdict"] == "PASS" and verdict["final"] is True, verdict["reason"]
    assert verdict["polls"] >= 2
