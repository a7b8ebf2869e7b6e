"""canary_rollout(): the task group's layout, its trigger rules, and errors at DAG parse time."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import timedelta

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_canary.analysis import ErrorRateCheck, PredictionDriftCheck
from airflow_canary.analysis.shadow import PredictionAgreementCheck
from airflow_canary.rollout import ShadowPhase, canary_rollout
from tests.conftest import REPO

CHECKS = [ErrorRateCheck(max_increase=0.02)]


def _dag(**kwargs):
    with DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None) as dag:
        canary_rollout(virtual_service="vs", checks=CHECKS, bake_time=10, poll_interval=1, **kwargs)
    return dag


def test_layout_and_trigger_rules():
    dag = _dag()
    ids = set(dag.task_dict)
    for k in (1, 2, 3):
        assert {
            f"canary.step_{k}.set_weight",
            f"canary.step_{k}.analyze",
            f"canary.step_{k}.unhealthy",
        } <= ids
    # a 100% step has no stable traffic to compare with: no analysis, straight to promote
    assert "canary.step_4.analyze" not in ids and "canary.step_4.unhealthy" not in ids
    assert dag.task_dict["canary.step_4.set_weight"].downstream_task_ids == {
        "canary.promote",
        "canary.task_failed",
    }

    analyze = dag.task_dict["canary.step_2.analyze"]
    assert analyze.follow_task_ids_if_healthy == ["canary.step_3.set_weight"]
    assert analyze.follow_task_ids_if_unhealthy == ["canary.step_2.unhealthy"]
    assert dag.task_dict["canary.step_3.analyze"].follow_task_ids_if_healthy == [
        "canary.step_4.set_weight"
    ]

    rollback = dag.task_dict["canary.rollback"]
    assert rollback.trigger_rule == "one_success"
    assert rollback.upstream_task_ids == {
        "canary.step_1.unhealthy",
        "canary.step_2.unhealthy",
        "canary.step_3.unhealthy",
        "canary.task_failed",
    }
    task_failed = dag.task_dict["canary.task_failed"]
    assert task_failed.trigger_rule == "one_failed"
    # branches skip every direct downstream they do not follow, so none may feed task_failed
    assert not any(t.endswith(".analyze") for t in task_failed.upstream_task_ids)
    assert dag.task_dict["canary.fail_rollout"].upstream_task_ids == {"canary.rollback"}
    assert dag.task_dict["canary.header_route"].upstream_task_ids == {"canary.plan"}


def test_without_header_route_and_with_decommission():
    dag = _dag(
        header_route=None, steps=(50, 100), decommission_stable=True, stable_deployment="model-v1"
    )
    assert "canary.header_route" not in dag.task_dict
    assert dag.task_dict["canary.step_1.set_weight"].upstream_task_ids == {"canary.plan"}
    decommission = dag.task_dict["canary.decommission_stable"]
    assert decommission.upstream_task_ids == {"canary.promote"} and decommission.replicas == 0


def test_every_task_that_writes_the_route_retries_and_the_others_keep_the_dags_defaults():
    with DAG(
        "t",
        start_date=pendulum.datetime(2026, 1, 1),
        schedule=None,
        default_args={"retries": 7},
    ) as dag:
        canary_rollout(
            virtual_service="vs",
            checks=CHECKS,
            bake_time=10,
            poll_interval=1,
            shadow=ShadowPhase(
                prediction_log="file:///tmp/p/", checks=[PredictionAgreementCheck()], duration=60
            ),
        )
    writes = {
        "canary.shadow.mirror_on",
        "canary.shadow.mirror_off",
        "canary.header_route",
        *(f"canary.step_{k}.set_weight" for k in (1, 2, 3, 4)),
        "canary.promote",
        "canary.rollback",
    }
    for task_id, task in dag.task_dict.items():
        if task_id in writes:
            assert (task.retries, task.retry_delay) == (3, timedelta(seconds=5)), task_id
        else:
            assert task.retries == 7, task_id
    assert _dag(traffic_retries=0).task_dict["canary.promote"].retries == 0


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"steps": [10, 1]}, "strictly increasing, got 1 after 10"),
        ({"steps": [0]}, "got 0"),
        ({"steps": [150]}, "got 150"),
        ({"checks": []}, "at least one health check"),
        ({"decommission_stable": True}, "needs stable_deployment"),
        ({"header_route": ("x-canary-version",)}, "header_route must be a (header, value) pair"),
        ({"stable_subset": "v2"}, "must differ"),
        ({"traffic_retries": -1}, "traffic_retries must be a whole number of retries >= 0, got -1"),
        (
            {"traffic_retries": True},
            "traffic_retries must be a whole number of retries >= 0, got True",
        ),
        (
            {"traffic_retries": "3"},
            "traffic_retries must be a whole number of retries >= 0, got '3'",
        ),
    ],
)
def test_bad_input_fails_when_the_dag_is_parsed(kwargs, fragment):
    kwargs.setdefault("checks", CHECKS)
    with pytest.raises(ValueError) as err:
        with DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None):
            canary_rollout(virtual_service="vs", bake_time=10, poll_interval=1, **kwargs)
    assert fragment in str(err.value)


def test_bad_analysis_parameters_fail_when_the_dag_is_parsed():
    with pytest.raises(ValueError, match="poll_interval"):
        _dag_with(bake_time=1, poll_interval=5)


def _dag_with(**kwargs):
    with DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None) as dag:
        canary_rollout(virtual_service="vs", checks=CHECKS, **kwargs)
    return dag


def test_example_dag_parses_without_heavy_imports():
    """The DAG processor parses often: the example must not load scipy, sklearn or the Kubernetes client."""
    script = f"""
import json, sys, importlib.util
import airflow.sdk
sys.path.append({str(REPO / "dags")!r})  # as Airflow adds the DAGs folder (the bundle path)
before = set(sys.modules)
spec = importlib.util.spec_from_file_location("example", {str(REPO / "dags" / "canary_rollout.py")!r})
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
new = set(sys.modules) - before
print(json.dumps({{"dags": sorted(module.dag.task_dict), "heavy": sorted(m for m in new if m.split(".")[0] in ("scipy", "sklearn", "kubernetes", "kubernetes_asyncio", "joblib"))}}))
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["heavy"] == []
    assert "canary.step_3.analyze" in result["dags"] and "deploy_v2" in result["dags"]


def test_dashboard_link_template_reaches_every_analysis_task():
    template = "https://grafana.example/d/model?var-ns={namespace}&from={start_ms}&to={end_ms}"
    dag = _dag(dashboard_url_template=template)
    analyses = [t for t in dag.tasks if t.task_id.endswith(".analyze")]
    assert analyses and all(t.dashboard_url_template == template for t in analyses)
    with pytest.raises(ValueError, match="unknown placeholder"):
        _dag(dashboard_url_template="https://grafana.example/?x={nope}")


def test_each_judged_step_spends_an_equal_share_of_the_error_budget():
    analyses = [t for t in _dag().tasks if t.task_id.endswith(".analyze")]
    assert len(analyses) == 3
    assert all(t.analysis.judge_options == {"budget_share": 1 / 3} for t in analyses)
    own = [
        t
        for t in _dag(judge_options={"alpha": 0.05, "budget_share": 0.5}).tasks
        if t.task_id.endswith(".analyze")
    ]
    assert all(t.analysis.judge_options == {"alpha": 0.05, "budget_share": 0.5} for t in own)


def test_each_analysis_task_says_at_parse_time_how_its_checks_are_judged():
    """Airflow shows a task's doc_md: counts are judged at every poll, values once at the end."""
    checks = [ErrorRateCheck(max_increase=0.02), PredictionDriftCheck(max_psi=0.2)]
    with DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None) as dag:
        canary_rollout(virtual_service="vs", checks=checks, bake_time=10, poll_interval=1)
    analyze = dag.task_dict["canary.step_1.analyze"]
    assert analyze.doc_md.splitlines()[0] == "How this step's checks are judged:"
    assert "- error-rate: sequential on counts of bad events, every poll" in analyze.doc_md
    assert (
        "- prediction-drift: not a count, so judged once on its value when the bake time is "
        "over, outside the sequential error budget" in analyze.doc_md
    )


def test_an_approval_gate_stands_before_each_named_step():
    dag = _dag(approve_before=[50, 100], approvers=["alice"], approval_timeout=timedelta(hours=1))
    approve = dag.task_dict["canary.step_4.approve"]
    assert approve.options == ["Continue", "Roll back"]
    assert approve.options_mapping == {
        "Continue": "canary.step_4.set_weight",
        "Roll back": "canary.step_4.rejected",
    }
    assert approve.assigned_users == [{"id": "alice", "name": "alice"}]
    assert approve.defaults == ["Roll back"]  # the answer when nobody answers in time
    # the form shows every step judged before it
    assert approve.analysis_task_ids == [f"canary.step_{k}.analyze" for k in (1, 2, 3)]
    assert dag.task_dict["canary.step_3.approve"].analysis_task_ids == [
        "canary.step_1.analyze",
        "canary.step_2.analyze",
    ]
    # a healthy step 2 leads to the gate of step 3, not to its weight
    assert dag.task_dict["canary.step_2.analyze"].follow_task_ids_if_healthy == [
        "canary.step_3.approve"
    ]
    assert "canary.step_1.approve" not in dag.task_dict
    rollback = dag.task_dict["canary.rollback"]
    assert {"canary.step_3.rejected", "canary.step_4.rejected"} <= rollback.upstream_task_ids
    assert rollback.approval_task_ids == ["canary.step_3.approve", "canary.step_4.approve"]
    # a branch skips what it does not follow: the gate feeds no watcher directly
    assert "canary.task_failed" not in approve.downstream_task_ids


def test_an_approval_gate_in_a_dag_with_params_keeps_only_its_comment_field():
    with DAG(
        "p", start_date=pendulum.datetime(2026, 1, 1), schedule=None, params={"steps": [1, 100]}
    ) as dag:
        canary_rollout(
            virtual_service="vs", checks=CHECKS, bake_time=10, poll_interval=1, approve_before=[100]
        )
    assert list(dag.task_dict["canary.step_4.approve"].serialized_params) == ["comment"]


def test_notifiers_get_a_notify_task_after_promotion_or_rollback():
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    from airflow_canary.notifications.rollout import RolloutNotifier

    dag = _dag(notifiers=[RolloutNotifier(SmtpNotifier(to="oncall@example.com"))])
    notify = dag.task_dict["canary.notify"]
    assert notify.trigger_rule == "one_success"
    assert notify.upstream_task_ids == {"canary.promote", "canary.rollback"}
    assert "canary.notify" not in _dag().task_dict
    promote = dag.task_dict["canary.promote"]
    assert [o.name for o in promote.outlets] == ["canary-promotions"]
    assert [o.name for o in dag.task_dict["canary.rollback"].outlets] == ["canary-rollbacks"]


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"approve_before": [75]}, r"weight\(s\) \[75\] that are not steps.*\[1, 10, 50, 100\]"),
        ({"approve_before": 100}, "approve_before must be a list of step weights"),
        ({"approve_before": [100], "approvers": "alice"}, "approvers must be a list"),
        (
            {"approve_before": [100], "approval_timeout_choice": "Maybe"},
            "timeout_choice must be 'Continue' or 'Roll back', got 'Maybe'",
        ),
        ({"notifiers": ["mail me"]}, "notifiers must be a non-empty list of Airflow notifiers"),
    ],
)
def test_bad_approval_or_notifier_input_fails_when_the_dag_is_parsed(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment):
        _dag(**kwargs)
