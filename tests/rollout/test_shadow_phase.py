"""canary_rollout(shadow=ShadowPhase(...)): the phase's tasks, their order, budget and parse-time errors."""

from __future__ import annotations

import math
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_canary.analysis import (
    AnalysisError,
    ErrorRateCheck,
    MirroredErrorRateCheck,
    PredictionAgreementCheck,
    PredictionDriftCheck,
)
from airflow_canary.analysis.shadow import PairedPredictionDriftCheck
from airflow_canary.rollout import ShadowPhase, canary_rollout
from airflow_canary.routing import RoutingError

AGREE = PredictionAgreementCheck(max_disagreement=0.02)


def _dag(shadow: ShadowPhase | None, **kwargs: Any) -> DAG:
    with DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None) as dag:
        canary_rollout(
            virtual_service="vs",
            checks=[ErrorRateCheck(max_increase=0.02)],
            bake_time=10,
            poll_interval=1,
            shadow=shadow,
            **kwargs,
        )
    return dag


def test_the_shadow_phase_runs_between_plan_and_the_header_route() -> None:
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from airflow_canary.notifications.rollout import RolloutNotifier

    dag = _dag(
        ShadowPhase(prediction_log="file:///logs", checks=[AGREE], percent=50, duration=60),
        notifiers=[RolloutNotifier(SmtpNotifier(to="oncall@example.com"))],
    )
    tasks = dag.task_dict
    assert tasks["canary.shadow.mirror_on"].upstream_task_ids == {"canary.plan"}
    assert tasks["canary.shadow.mirror_on"].percent == 50
    assert tasks["canary.shadow.analyze"].upstream_task_ids == {"canary.shadow.mirror_on"}
    assert tasks["canary.shadow.mirror_off"].remove is True
    assert tasks["canary.header_route"].upstream_task_ids == {"canary.shadow.mirror_off"}
    # Any failure of the phase takes the rollback path; the rollback reads its verdict.
    for task in ("mirror_on", "analyze", "mirror_off"):
        assert "canary.task_failed" in tasks[f"canary.shadow.{task}"].downstream_task_ids
    rollback = tasks["canary.rollback"]
    assert rollback.analysis_task_ids[0] == "canary.shadow.analyze"
    assert tasks["canary.promote"].analysis_task_ids[0] == "canary.shadow.analyze"
    # the rollout's report (mail, chat) shows the shadow phase's verdict first
    assert tasks["canary.notify"].analysis_task_ids[0] == "canary.shadow.analyze"


def test_checks_on_mirrored_requests_read_the_rollouts_prometheus_in_its_namespace() -> None:
    errors = MirroredErrorRateCheck(max_rate=0.02)
    shadow = ShadowPhase(
        prediction_log="file:///logs",
        checks=[AGREE, PredictionDriftCheck(max_psi=0.2), errors],
    )
    dag = _dag(
        shadow,
        namespace="shop",
        prometheus_conn_id="prom",
        max_inconclusive_polls=5,
    )
    sensor = dag.task_dict["canary.shadow.analyze"]
    assert (sensor.namespace, sensor.prometheus_conn_id, sensor.max_inconclusive_polls) == (
        "shop",
        "prom",
        5,
    )
    assert sensor.shadow_checks == [AGREE, PairedPredictionDriftCheck(max_psi=0.2), errors]


def test_the_shadow_phase_is_one_judged_step_of_the_error_budget() -> None:
    dag = _dag(ShadowPhase(prediction_log="file:///logs", checks=[AGREE]))
    # Steps 1, 10, 50 are judged (100 is the promotion) and the shadow phase: 4 shares.
    assert dag.task_dict["canary.shadow.analyze"].judge.budget_share == pytest.approx(0.25)
    assert dag.task_dict["canary.step_1.analyze"].analysis.judge_options["budget_share"] == (
        pytest.approx(0.25)
    )
    without = _dag(None)
    assert "canary.shadow.analyze" not in without.task_dict
    assert without.task_dict["canary.step_1.analyze"].analysis.judge_options[
        "budget_share"
    ] == pytest.approx(1 / 3)


@pytest.mark.parametrize("deferrable", [None, True, False])
def test_the_rollouts_shadow_phase_polls_in_the_worker(deferrable: bool | None) -> None:
    # The steps' analyses follow the rollout's deferrable; the shadow phase keeps poking.
    dag = _dag(ShadowPhase(prediction_log="file:///logs", checks=[AGREE]), deferrable=deferrable)
    assert dag.task_dict["canary.shadow.analyze"].deferrable is False


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"percent": 150}, RoutingError, "mirror percent must be a number 0..100, got 150"),
        ({"percent": math.nan}, RoutingError, "got nan"),
        ({"percent": "all"}, RoutingError, "got 'all'"),
        ({"percent": 0}, RoutingError, "must be above 0"),
        ({"checks": []}, AnalysisError, "checks must be a non-empty list"),
        ({"prediction_log": ""}, AnalysisError, "prediction_log must be a location URL"),
        ({"log_format": "parquet"}, AnalysisError, "got 'parquet'"),
        ({"duration": -1}, ValueError, "duration must be positive, got -1"),
    ],
)
def test_bad_shadow_phases_fail_at_parse_time_naming_the_value(
    kwargs: dict[str, Any], error: type[Exception], fragment: str
) -> None:
    params: dict[str, Any] = {"prediction_log": "file:///logs", "checks": [AGREE], **kwargs}
    with pytest.raises(error, match=fragment):
        ShadowPhase(**params)
