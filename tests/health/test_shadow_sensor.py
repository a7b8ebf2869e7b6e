"""ShadowAnalysisSensor: parse-time checks, and real ``airflow dags test`` runs over ``file://`` logs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_canary.analysis import AnalysisError
from airflow_canary.analysis.shadow import (
    Prediction,
    PredictionAgreementCheck,
    PredictionRecord,
    input_hash,
)
from airflow_canary.durations import DurationError
from airflow_canary.sensors.shadow import ShadowAnalysisSensor

AGREE = PredictionAgreementCheck(max_disagreement=0.02, min_pairs=200)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"checks": []}, "checks must be a non-empty list of shadow checks"),
        ({"checks": ["agreement"]}, "'agreement' is not a shadow check"),
        ({"checks": [{"type": "prediction_agreement", "max_disagreement": 2}]}, "got 2"),
        ({"prediction_log": ""}, "prediction_log must be a location URL.*got ''"),
        ({"prediction_log": []}, "prediction_log must be a location URL.*got \\[\\]"),
        ({"canary_version": "v1"}, "must differ, both are 'v1'"),
        ({"alpha": 0.9}, "alpha must be between 0 and 0.5, got 0.9"),
        ({"log_format": "parquet"}, "format must be one of 'jsonl', got 'parquet'"),
        ({"mode": "reschedule"}, "mode must be 'poke', got 'reschedule'"),
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


DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    from airflow.sdk import DAG

    from airflow_canary.analysis import PredictionAgreementCheck
    from airflow_canary.sensors.shadow import ShadowAnalysisSensor

    with DAG("shadow_sensor_test", schedule=None, params={"log": ""}) as dag:
        ShadowAnalysisSensor(
            task_id="shadow",
            prediction_log="{{ params.log }}",
            checks=[PredictionAgreementCheck(max_disagreement=0.02, min_pairs=200)],
            duration=1,
            poll_interval=1,
            alpha=0.01,
            budget_share=0.2,
        )
    """
)


def write_log(folder: Path, n: int, disagree_every: int | None) -> str:
    # Now: the sensor pairs only records from its own start (minus the pairing window) on.
    t0 = datetime.now(timezone.utc) + timedelta(minutes=5)
    lines = []
    for i in range(n):
        for version in ("v1", "v2"):
            wrong = version == "v2" and disagree_every and i % disagree_every == 0
            lines.append(
                PredictionRecord(
                    request_id=f"req-{i}",
                    version=version,
                    time=t0 + timedelta(milliseconds=7 * i + (2 if version == "v2" else 0)),
                    input_hash=input_hash([float(i)]),
                    prediction=Prediction(class_=0 if wrong else 1),
                ).to_json_line()
            )
    lines.append(json.dumps({"request_id": "req-x", "version": "v1"}))  # missing fields
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return f"file://{folder}"


def dags_test(log: str) -> subprocess.CompletedProcess[str]:
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "shadow_sensor_test.py").write_text(DAG_FILE)
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "shadow_sensor_test",
            "-c",
            json.dumps({"log": log}),
        ],
        env=dict(os.environ),
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.timeout(600)
def test_a_real_run_passes_an_identical_model_and_fails_a_disagreeing_one(
    airflow_db: Path, tmp_path: Path
) -> None:
    same = dags_test(write_log(tmp_path / "same", 400, None))
    output = same.stdout + same.stderr
    assert same.returncode == 0, output[-4000:]
    assert "Shadow analysis PASS: v2 disagrees with v1 on 0% of 400 paired requests" in output
    assert "1 record(s) miss required field 'time'" in output  # counted, reported

    bad = dags_test(write_log(tmp_path / "bad", 400, 12))  # 8.5% disagree
    output = bad.stdout + bad.stderr
    assert bad.returncode != 0
    assert (
        "shadow analysis FAIL: v2 disagrees with v1 on 8.5% of 400 paired requests (limit 2%)"
        in output
    )
    assert "prediction-agreement: request req-0: v1 {'class': 1}, v2 {'class': 0}" in output

    missing = f"file://{tmp_path}/nowhere"
    gone = dags_test(missing)
    output = gone.stdout + gone.stderr
    assert gone.returncode != 0
    assert f"prediction log location '{missing}' does not exist" in output
