"""canary_rollout() asks every analysis to hold its step's weight, and checks the option at parse time."""

from __future__ import annotations

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_canary.analysis import AnalysisError, ErrorRateCheck
from airflow_canary.rollout import canary_rollout

CHECKS = [ErrorRateCheck(max_increase=0.02)]


def _dag(**kwargs: object) -> DAG:
    with DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None) as dag:
        canary_rollout(virtual_service="vs", checks=CHECKS, bake_time=10, poll_interval=1, **kwargs)  # type: ignore[arg-type]
    return dag


def test_each_analysis_holds_its_own_steps_weight() -> None:
    dag = _dag(steps=[1, 10, 50, 100], route_name=["primary", "tcp[0]"])
    for step, weight in ((1, 1), (2, 10), (3, 50)):
        analysis = dag.task_dict[f"canary.step_{step}.analyze"].analysis  # type: ignore[attr-defined]
        hold = analysis.weight_hold
        assert hold is not None and hold.weight == weight and hold.reassert is False
        assert hold.target.route == "vs"
        assert hold.target.route_target().route_names == ("primary", "tcp[0]")
    reasserting = _dag(on_weight_change="reassert")
    assert reasserting.task_dict["canary.step_1.analyze"].analysis.weight_hold.reassert  # type: ignore[attr-defined]


def test_templated_step_weights_are_held_once_rendered() -> None:
    dag = _dag(steps=[10, 50], steps_param="steps")
    analyze = dag.task_dict["canary.step_1.analyze"]
    assert "xcom_pull" in analyze.canary_weight  # type: ignore[attr-defined]  (its own template field)


def test_unknown_on_weight_change_fails_when_the_dag_is_parsed() -> None:
    with pytest.raises(
        AnalysisError, match="on_weight_change must be one of end_step, reassert, got 'ignore'"
    ):
        _dag(on_weight_change="ignore")
