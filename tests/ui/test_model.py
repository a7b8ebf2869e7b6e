"""Assembling a rollout from plain rows: a run still going, and XComs that are missing or odd."""

from __future__ import annotations

from datetime import datetime, timezone

from airflow_canary.plugins.model import (
    Outcome,
    RunRow,
    TaskRole,
    TaskRow,
    UiLinks,
    assemble,
    classify,
)
from airflow_canary.plugins.page import PageContext, render_page

T0 = datetime(2026, 11, 26, 4, 50, tzinfo=timezone.utc)
RUN = RunRow("rollout", "manual__1", "running", "manual", T0, T0, None)


def _task(task_id: str, state: str | None, operator: str | None = None) -> TaskRow:
    return TaskRow("rollout", "manual__1", task_id, operator, state, T0, None)


def test_a_running_rollout_shows_the_weight_so_far_and_a_pending_analysis() -> None:
    tasks = [
        _task("canary.header_route", "success", "SetHeaderRouteOperator"),
        _task("canary.set_weight_1", "success", "SetCanaryWeightOperator"),
        _task("canary.analyze_1", "deferred", "BranchCanaryHealthOperator"),
        _task("canary.promote", None, "PromoteCanaryOperator"),
    ]
    traffic = {
        "split": {"v1": 99, "v2": 1},
        "header_routes": [{"subset": "v2"}],
        "at": "2026-11-26T04:50:05+00:00",
    }
    xcoms = {"canary.set_weight_1": {"return_value": traffic}}
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks("/airflow/"))
    assert rollout.outcome is Outcome.RUNNING
    assert (rollout.stable_version, rollout.canary_version, rollout.current_weight) == (
        "v1",
        "v2",
        1,
    )
    assert rollout.steps[0].verdict is None and rollout.steps[0].analysis.state == "deferred"
    # An analysis still running is not "missing" data.
    assert rollout.missing == ("canary.header_route: no XCom",)
    assert rollout.run_url == "/airflow/dags/rollout/runs/manual__1"
    html = render_page([rollout], PageContext("ann", T0, 25))
    assert "analysing…" in html and 'http-equiv="refresh"' in html


def test_odd_xcom_values_are_named_and_never_raise() -> None:
    tasks = [
        _task("canary.set_weight_10", "success"),
        _task("canary.analyze_10", "success"),
        _task("canary.rollback", "success"),
    ]
    xcoms = {
        "canary.set_weight_10": {"return_value": {"split": {"v1": "ninety"}}},
        "canary.analyze_10": {
            "return_value": {"verdict": "FAIL", "checks": [{"name": 3}, {"name": "x"}]}
        },
        "canary.rollback": {"return_value": {"rolled_back": True}},
    }
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks())
    assert rollout.outcome is Outcome.ROLLED_BACK
    assert rollout.steps[0].verdict == "FAIL"
    assert [check.name for check in rollout.steps[0].checks] == ["x"]
    assert "canary.analyze_10: 1 malformed check entry skipped" in rollout.missing
    assert "canary.rollback: rollback XCom has no 'reason'" in rollout.missing
    assert any("no valid 'split'" in item for item in rollout.missing)
    assert "Rolled back:</strong> no reason recorded" in render_page(
        [rollout], PageContext("a", T0, 25)
    )


def test_hidden_xcoms_say_so() -> None:
    rollout = assemble(
        RUN, "canary", [_task("canary.set_weight_1", "success")], {}, UiLinks(), xcom_hidden=True
    )
    assert rollout.missing[0].startswith("you may not read XComs of DAG 'rollout'")
    assert rollout.current_weight is None


def test_only_rollout_layouts_count() -> None:
    assert classify("canary.set_weight_10", None) == ("canary", TaskRole.SET_WEIGHT, 10)
    assert classify("promote", "PythonOperator") is None
    assert classify("promote", "PromoteCanaryOperator") is not None
    assert classify("set_weights", None) is None
