"""Assembling a rollout from plain rows: a run still going, a missing plan, and XComs that are missing or odd."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from html import unescape
from typing import Any

import pytest

from airflow_canary.plugins.model import (
    Outcome,
    RunRow,
    TaskId,
    TaskRole,
    TaskRow,
    UiLinks,
    assemble,
    classify,
    marks_rollout,
)
from airflow_canary.plugins.page import PageContext, render_page

T0 = datetime(2026, 11, 26, 4, 50, tzinfo=timezone.utc)
RUN = RunRow("rollout", "manual__1", "running", "manual", T0, T0, None)
PLAN: dict[str, Any] = {
    "virtual_service": "model-virtual-service",
    "namespace": "models",
    "steps": [5, 30, 100],
    "stable_subset": "v1",
    "canary_subset": "v2",
    "stable_version": "model-2026-10",
    "canary_version": "model-2026-11",
}


def _task(task_id: str, state: str | None, operator: str | None = None) -> TaskRow:
    return TaskRow("rollout", "manual__1", task_id, operator, state, T0, None)


def _layout(states: dict[str, str | None]) -> list[TaskRow]:
    """The task instances of a three-step canary_rollout() group, in the given states."""
    ids = [
        "canary.plan",
        "canary.header_route",
        "canary.step_1.set_weight",
        "canary.step_1.analyze",
        "canary.step_1.unhealthy",
        "canary.step_2.set_weight",
        "canary.step_2.analyze",
        "canary.step_2.unhealthy",
        "canary.step_3.set_weight",
        "canary.promote",
        "canary.task_failed",
        "canary.rollback",
        "canary.fail_rollout",
    ]
    return [_task(task_id, states.get(task_id)) for task_id in ids]


def _traffic(canary: int, at: str) -> dict[str, Any]:
    return {"split": {"v1": 100 - canary, "v2": canary}, "header_routes": [], "at": at}


def test_a_running_rollout_lists_every_planned_step_with_its_weight() -> None:
    tasks = _layout(
        {
            "canary.plan": "success",
            "canary.header_route": "success",
            "canary.step_1.set_weight": "success",
            "canary.step_1.analyze": "deferred",
        }
    )
    xcoms = {
        "canary.plan": {"return_value": PLAN},
        "canary.header_route": {"return_value": _traffic(0, "2026-11-26T04:50:01.000+00:00")},
        "canary.step_1.set_weight": {"return_value": _traffic(5, "2026-11-26T04:50:05.000+00:00")},
    }
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks("/airflow/"))
    assert rollout.outcome is Outcome.RUNNING
    assert (rollout.stable_version, rollout.canary_version) == ("model-2026-10", "model-2026-11")
    assert (rollout.stable_subset, rollout.canary_subset) == ("v1", "v2")
    assert (rollout.namespace, rollout.planned_steps) == ("models", (5, 30, 100))
    assert [point.weight for point in rollout.weights] == [0, 5]
    assert rollout.current_weight == 5
    assert [(s.index, s.weight) for s in rollout.steps] == [(1, 5), (2, 30), (3, 100)]
    first, second, last = rollout.steps
    assert first.verdict is None and first.analysis is not None
    assert first.analysis.state == "deferred"
    assert first.weight_set_at == "2026-11-26T04:50:05.000+00:00"
    assert second.set_weight is not None and second.set_weight.state is None
    # canary_rollout() has no analysis at 100%: the stable arm has nothing to compare.
    assert last.analysis is None
    # An analysis still running is not "missing" data.
    assert rollout.missing == ()
    assert rollout.run_url == "/airflow/dags/rollout/runs/manual__1"
    html = render_page([rollout], PageContext("ann", T0, 25))
    assert "analysing…" in html and 'http-equiv="refresh"' in html
    assert "no analysis at 100%" in html and "5% → 30% → 100%" in html
    assert "model-2026-11 (subset v2)" in html


def test_without_the_plan_xcom_steps_are_listed_with_weight_unknown() -> None:
    tasks = _layout({"canary.plan": "success", "canary.header_route": "success"})
    xcoms = {"canary.header_route": {"return_value": _traffic(0, "2026-11-26T04:50:01+00:00")}}
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks())
    assert [(s.index, s.weight) for s in rollout.steps] == [(1, None), (2, None), (3, None)]
    assert rollout.stable_version is None and rollout.current_weight is None
    assert "canary.plan: no XCom" in rollout.missing
    assert any("canary subset is unknown" in item for item in rollout.missing)
    html = render_page([rollout], PageContext("a", T0, 25))
    assert html.count("weight unknown") == 3


def test_the_set_weight_xcom_is_the_weight_when_it_disagrees_with_the_plan() -> None:
    tasks = _layout({"canary.plan": "success", "canary.step_1.set_weight": "success"})
    xcoms = {
        "canary.plan": {"return_value": PLAN},
        "canary.step_1.set_weight": {"return_value": _traffic(7, "2026-11-26T04:50:05+00:00")},
    }
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks())
    assert (rollout.steps[0].weight, rollout.steps[0].planned_weight) == (7, 5)
    assert "canary.step_1.set_weight: set canary weight 7% but the plan says 5%" in rollout.missing


def test_a_rollback_by_the_analysis_is_drawn_when_it_happened() -> None:
    done = RunRow("rollout", "manual__1", "failed", "manual", T0, T0, T0)
    tasks = _layout(
        {
            "canary.plan": "success",
            "canary.step_1.set_weight": "success",
            "canary.step_1.analyze": "success",
            "canary.step_1.unhealthy": "success",
            "canary.step_2.set_weight": "skipped",
            "canary.step_2.analyze": "skipped",
            "canary.rollback": "success",
            "canary.fail_rollout": "failed",
        }
    )
    verdict = {
        "verdict": "FAIL",
        "reason": "error-rate: canary 9.8% vs stable 0.2%",
        "decided_at": "2026-11-26T04:50:20.100000+00:00",
        "rolled_back_at": "2026-11-26T04:50:20.400000+00:00",
        "window": {"start": "2026-11-26T04:50:06+00:00", "end": "2026-11-26T04:50:20+00:00"},
    }
    rollback = {
        **_traffic(0, "2026-11-26T04:50:23.000+00:00"),
        "rolled_back": True,
        "reason": "canary.step_1.analyze: health analysis FAIL: error-rate",
    }
    xcoms = {
        "canary.plan": {"return_value": PLAN},
        "canary.step_1.set_weight": {"return_value": _traffic(5, "2026-11-26T04:50:05+00:00")},
        "canary.step_1.analyze": {"verdict": verdict},
        "canary.rollback": {"return_value": rollback},
    }
    rollout = assemble(done, "canary", tasks, xcoms, UiLinks())
    assert rollout.outcome is Outcome.ROLLED_BACK
    assert [(p.task_id, p.weight) for p in rollout.weights] == [
        ("canary.step_1.set_weight", 5),
        ("canary.step_1.analyze", 0),
        ("canary.rollback", 0),
    ]
    assert rollout.rolled_back_at == verdict["rolled_back_at"]
    assert rollout.rollback_reason == rollback["reason"]
    skipped = rollout.steps[1]
    assert skipped.weight == 30
    assert skipped.analysis is not None and skipped.analysis.state == "skipped"
    html = render_page([rollout], PageContext("a", T0, 25))
    assert html.count('class="rollback-marker"') == 1
    assert 'class="verdict-marker" data-step="1" data-weight="5"' in html


def test_odd_xcom_values_are_named_and_never_raise() -> None:
    tasks = _layout(
        {
            "canary.plan": "success",
            "canary.step_1.set_weight": "success",
            "canary.step_1.analyze": "success",
            "canary.rollback": "success",
        }
    )
    xcoms: dict[str, dict[str, Any]] = {
        "canary.plan": {"return_value": {**PLAN, "steps": [5, "thirty"], "canary_subset": 2}},
        "canary.step_1.set_weight": {"return_value": {"split": {"v1": "ninety"}}},
        "canary.step_1.analyze": {
            "return_value": {"verdict": "FAIL", "checks": [{"name": 3}, {"name": "x"}]}
        },
        "canary.rollback": {"return_value": {"rolled_back": True}},
    }
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks())
    assert rollout.outcome is Outcome.ROLLED_BACK
    assert rollout.steps[0].verdict == "FAIL"
    assert [check.name for check in rollout.steps[0].checks] == ["x"]
    assert "canary.step_1.analyze: 1 malformed check entry skipped" in rollout.missing
    assert "canary.rollback: rollback XCom has no 'reason'" in rollout.missing
    assert "canary.plan: plan XCom has no 'canary_subset'" in rollout.missing
    assert any("'steps' is not a list of weights" in item for item in rollout.missing)
    assert any("no valid 'split'" in item for item in rollout.missing)
    assert "Rolled back:</strong> no reason recorded" in render_page(
        [rollout], PageContext("a", T0, 25)
    )


def test_hidden_xcoms_say_so() -> None:
    rollout = assemble(
        RUN,
        "canary",
        _layout({"canary.step_1.set_weight": "success"}),
        {},
        UiLinks(),
        xcom_hidden=True,
    )
    assert rollout.missing[0].startswith("you may not read XComs of DAG 'rollout'")
    assert rollout.current_weight is None
    assert [step.weight for step in rollout.steps] == [None, None, None]


def test_only_the_rollout_layout_counts() -> None:
    assert classify("canary.step_10.set_weight", None) == TaskId("canary", TaskRole.SET_WEIGHT, 10)
    assert classify("a.b.step_2.analyze", None) == TaskId("a.b", TaskRole.ANALYZE, 2)
    assert classify("canary.plan", "RolloutPlanOperator") == TaskId("canary", TaskRole.PLAN)
    assert classify("promote", "PythonOperator") is None
    assert classify("promote", "PromoteCanaryOperator") == TaskId("", TaskRole.PROMOTE)
    # The guessed layout of earlier drafts is no rollout.
    assert classify("canary.set_weight_10", None) is None
    assert classify("canary.step_0.set_weight", None) is None
    assert classify("canary.step_1.set_weights", None) is None
    grouped_promote = classify("etl.promote", "PythonOperator")
    assert grouped_promote is not None and not marks_rollout(grouped_promote, "PythonOperator")


def test_each_routes_split_is_shown_and_fractional_weights_are_kept() -> None:
    tasks = _layout(
        {
            "canary.plan": "success",
            "canary.header_route": "success",
            "canary.step_1.set_weight": "success",
            "canary.step_1.analyze": "deferred",
        }
    )
    step = {
        "split": {"v1": 66.6667, "v2": 33.3333},
        "routes": [
            {"route": "primary", "protocol": "http", "split": {"v1": 95, "v2": 5}},
            {"route": "tcp[0]", "protocol": "tcp", "split": {"v1": 66.6667, "v2": 33.3333}},
        ],
        "header_routes": [],
        "at": "2026-11-26T04:50:05.000+00:00",
    }
    xcoms = {
        "canary.plan": {"return_value": PLAN},
        "canary.header_route": {"return_value": _traffic(0, "2026-11-26T04:50:01.000+00:00")},
        "canary.step_1.set_weight": {"return_value": step},
    }
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks("/airflow/"))
    assert rollout.current_weight == 33.3333
    assert rollout.routes == ("primary: v1 95% v2 5%", "tcp[0]: v1 66.6667% v2 33.3333%")
    html = render_page([rollout], PageContext("ann", T0, 25))
    assert "primary: v1 95% v2 5%; tcp[0]: v1 66.6667% v2 33.3333%" in html


def test_a_running_analysis_shows_its_latest_poll_against_the_checks_limits() -> None:
    tasks = _layout(
        {
            "canary.plan": "success",
            "canary.header_route": "success",
            "canary.step_1.set_weight": "success",
            "canary.step_1.analyze": "deferred",
        }
    )
    progress = {
        "verdict": "INCONCLUSIVE",
        "final": False,
        "reason": "bake time not reached",
        "polls": 4,
        "at": "2026-11-26T04:50:40+00:00",
        "checks": [
            {
                "name": "error-rate",
                "status": "PASS",
                "canary_value": 0.004,
                "stable_value": 0.003,
                "canary_requests": 410,
                "stable_requests": 7900,
                "message": "canary 0.4% vs stable 0.3% + 2%",
            }
        ],
    }
    record = {"checks": [{"type": "error_rate", "name": "error-rate", "max_increase": 0.02}]}
    xcoms = {
        "canary.plan": {"return_value": PLAN},
        "canary.step_1.set_weight": {"return_value": _traffic(5, "2026-11-26T04:50:05+00:00")},
        "canary.step_1.analyze": {"progress": progress, "analysis": record},
    }
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks("/airflow/"))
    step = rollout.steps[0]
    assert step.live and step.verdict is None  # evidence so far, not a verdict
    assert step.polls == 4 and step.checks[0].canary_requests == 410
    assert step.limits == (("error-rate", "max_increase=0.02"),)
    html = render_page([rollout], PageContext("viewer", T0, 25))
    assert "analysing… poll 4" in html and 'table class="checks live"' in html
    assert "Limits: error-rate: max_increase=0.02" in html
    # the check's row: both arms' values beside the limit they are judged against
    assert _check_row(html, "error-rate") == [
        "error-rate",
        "PASS",
        "0.004",
        "0.003",
        "max_increase=0.02",
        "410",
        "7,900",
        "—",
        "—",
        "canary 0.4% vs stable 0.3% + 2%",
    ]
    # a finished analysis shows its verdict, not its last poll, and keeps the limits
    done = {**xcoms["canary.step_1.analyze"], "verdict": {**progress, "verdict": "PASS"}}
    finished = assemble(
        RUN,
        "canary",
        _layout({"canary.plan": "success", "canary.step_1.analyze": "success"}),
        {**xcoms, "canary.step_1.analyze": done},
        UiLinks("/airflow/"),
    )
    assert not finished.steps[0].live and finished.steps[0].verdict == "PASS"
    html = render_page([finished], PageContext("viewer", T0, 25))
    assert 'table class="checks live"' not in html
    assert _check_row(html, "error-rate")[2:5] == ["0.004", "0.003", "max_increase=0.02"]


def _check_row(html: str, name: str) -> list[str]:
    """The cells of a check's row in the page, as text."""
    row = re.search(rf'<tr class="check" data-check="{re.escape(name)}">(.*?)</tr>', html)
    assert row is not None, html
    return [unescape(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]


def test_a_pending_approval_links_to_airflows_form_and_an_answer_is_shown() -> None:
    ids = {"canary.plan": "success", "canary.step_3.approve": "awaiting_input"}
    tasks = [
        *_layout(ids),
        _task("canary.step_3.approve", "awaiting_input", "RolloutApprovalOperator"),
        _task("canary.step_3.rejected", None, "EmptyOperator"),
    ]
    xcoms = {"canary.plan": {"return_value": PLAN}}
    rollout = assemble(RUN, "canary", tasks, xcoms, UiLinks("/airflow/"))
    (pending,) = rollout.pending_approvals
    assert (pending.step, pending.weight, pending.task_id) == (3, 100, "canary.step_3.approve")
    assert pending.url == (
        "/airflow/dags/rollout/runs/manual__1/tasks/canary.step_3.approve/required_actions"
        "?map_index=-1"
    )
    html = render_page([rollout], PageContext("viewer", T0, 25))
    assert 'class="pending-approval"' in html and "answer in Airflow" in html

    answered = [
        t if t.task_id != "canary.step_3.approve" else _task(t.task_id, "success") for t in tasks
    ]
    answer = {"choice": "Roll back", "approver": "alice", "comment": "p99 too high"}
    xcoms["canary.step_3.approve"] = {"approval": answer}
    rollout = assemble(RUN, "canary", answered, xcoms, UiLinks("/airflow/"))
    assert not rollout.pending_approvals
    assert rollout.steps[2].approval_answer == "Roll back by alice: p99 too high"


def test_the_nav_link_resolves_under_a_base_url_sub_path() -> None:
    from urllib.parse import urljoin

    from airflow_canary.plugins import URL_PREFIX, CanaryRolloutsPlugin

    (view,) = CanaryRolloutsPlugin.external_views
    # Airflow's UI page carries <base href="{base_url}/">: a relative href follows the sub-path.
    assert urljoin("https://host/airflow/", view["href"]) == f"https://host/airflow{URL_PREFIX}/"
    assert urljoin("https://host/", view["href"]) == f"https://host{URL_PREFIX}/"


def _shadow_verdict(disagree_every: int, duration: float) -> dict[str, Any]:
    """A verdict as the shadow sensor pushes it, from the real judge over 300 paired requests."""
    from datetime import timedelta

    from airflow_canary.analysis.shadow import (
        Prediction,
        PredictionAgreementCheck,
        PredictionRecord,
        ShadowJudge,
        input_hash,
        pair_records,
    )

    records = [
        PredictionRecord(
            request_id=f"req-{i}",
            version=version,
            time=T0 + timedelta(milliseconds=10 * i),
            input_hash=input_hash([float(i)]),
            prediction=Prediction(class_=0 if version == "v2" and i % disagree_every == 0 else 1),
        )
        for i in range(300)
        for version in ("v1", "v2")
    ]
    records.append(  # v1 answered, v2 did not: unpaired
        PredictionRecord("req-lost", "v1", T0, input_hash([0.5]), Prediction(class_=1))
    )
    pairing = pair_records(
        records,
        stable_version="v1",
        canary_version="v2",
        window_seconds=1,
        now=T0 + timedelta(minutes=1),
    )
    checks = [PredictionAgreementCheck(max_disagreement=0.02, min_pairs=200)]
    outcome = ShadowJudge(alpha=0.01, budget_share=0.25).judge(
        pairing, checks, elapsed_seconds=12.0, duration_seconds=duration, polls=3
    )
    return outcome.to_dict()


def _shadow_rollout(verdict: dict[str, Any], analyze_state: str) -> Any:
    ids = [
        "canary.plan",
        "canary.shadow.mirror_on",
        "canary.shadow.analyze",
        "canary.shadow.mirror_off",
        "canary.header_route",
        "canary.step_1.set_weight",
        "canary.step_1.analyze",
        "canary.rollback",
    ]
    states = {"canary.plan": "success", "canary.shadow.mirror_on": "success"}
    states["canary.shadow.analyze"] = analyze_state
    tasks = [_task(task_id, states.get(task_id)) for task_id in ids]
    record = {
        "phase": "shadow",
        "checks": [
            {
                "type": "prediction_agreement",
                "name": "prediction-agreement",
                "max_disagreement": 0.02,
            }
        ],
    }
    mirror = {**_traffic(0, "2026-11-26T04:50:02+00:00"), "mirror_percent": 100.0}
    xcoms = {
        "canary.plan": {"return_value": PLAN},
        "canary.shadow.mirror_on": {"return_value": mirror},
        "canary.shadow.analyze": {"verdict": verdict, "analysis": record},
    }
    return assemble(RUN, "canary", tasks, xcoms, UiLinks("/airflow/"))


def test_the_shadow_phase_is_a_step_with_its_pairs_limit_unpaired_records_and_examples() -> None:
    assert classify("canary.shadow.analyze", None) == TaskId("canary", TaskRole.SHADOW_ANALYZE)
    verdict = _shadow_verdict(disagree_every=5, duration=60)  # 20% disagree: FAIL early
    rollout = _shadow_rollout(verdict, "failed")
    shadow = rollout.shadow
    assert shadow is not None and rollout.missing == ()
    assert (shadow.verdict, shadow.mirror_percent, shadow.polls) == ("FAIL", 100.0, 3)
    assert shadow.reason == verdict["reason"]
    assert shadow.reason.startswith("v2 disagrees with v1 on 20% of 300 paired requests")
    assert shadow.limits == (("prediction-agreement", "max_disagreement=0.02"),)
    assert shadow.pairing is not None
    assert (shadow.pairing.pairs, shadow.pairing.unpaired_stable) == (300, 1)
    assert shadow.pairing.unpaired_examples == ("req-lost",)
    assert [e.request_id for e in shadow.examples] == [
        "req-0",
        "req-5",
        "req-10",
        "req-15",
        "req-20",
    ]
    assert (
        shadow.examples[0].stable == '{"class": 1}' and shadow.examples[0].canary == '{"class": 0}'
    )

    html = render_page([rollout], PageContext("viewer", T0, 25))
    row = re.search(r'<tr class="step shadow" data-step="shadow">(.*?)</tr>', html)
    assert row is not None, html
    cells = [unescape(c) for c in re.findall(r"<td[^>]*>(.*?)</td>", row.group(1))]
    assert cells[:5] == ["shadow", "mirror 100%", "04:50:02", "—", "FAIL"]
    # the check: the disagreement share, the limit, the pairs it was judged on
    assert _check_row(html, "prediction-agreement")[:6] == [
        "prediction-agreement",
        "FAIL",
        "0.2",
        "—",
        "max_disagreement=0.02",
        "300",
    ]
    counts = dict(re.findall(r'<div data-count="(\w+)"><dt>[^<]*</dt><dd>([\d,]+)</dd>', html))
    assert counts["pairs"] == "300" and counts["unpaired_stable"] == "1"
    assert counts["stable_records"] == "301" and counts["canary_records"] == "300"
    assert "Unpaired, e.g. <code>req-lost</code>" in html
    examples = re.findall(r'<tr class="example" data-request-id="([^"]+)">', html)
    assert examples == ["req-0", "req-5", "req-10", "req-15", "req-20"]


def test_drift_and_mirrored_request_checks_are_shown_like_the_others() -> None:
    from datetime import timedelta

    from airflow_canary.analysis import (
        MirroredErrorRateCheck,
        MirroredLatencyCheck,
        PredictionDriftCheck,
    )
    from airflow_canary.analysis.shadow import (
        MirroredTelemetry,
        Prediction,
        PredictionRecord,
        ShadowJudge,
        as_shadow_check,
        input_hash,
        pair_records,
    )
    from airflow_canary.analysis.values import Arms

    records = [
        PredictionRecord(
            request_id=f"req-{i}",
            version=version,
            time=T0 + timedelta(milliseconds=10 * i),
            input_hash=input_hash([float(i)]),
            prediction=Prediction(class_=1),
        )
        for i in range(300)
        for version in ("v1", "v2")
    ]
    pairing = pair_records(
        records,
        stable_version="v1",
        canary_version="v2",
        window_seconds=1,
        now=T0 + timedelta(minutes=1),
    )
    checks = [
        as_shadow_check(PredictionDriftCheck(max_psi=0.2)),
        MirroredErrorRateCheck(max_rate=0.02),
        MirroredLatencyCheck(quantile=0.99, max_ms=300, min_requests=50),
    ]
    telemetry = MirroredTelemetry(Arms("default"), checks)
    ids = telemetry.queries()
    telemetry.observe(dict.fromkeys(ids, 0.0))
    reading = {q: 120.0 if q.endswith("/total") or q.endswith("/stable") else 0.0 for q in ids}
    reading["mirrored-error-rate/bad"] = 120.0  # every mirrored request failed
    poll = telemetry.observe(reading)
    verdict = (
        ShadowJudge(alpha=0.01, budget_share=0.25)
        .judge(pairing, checks, elapsed_seconds=3.0, duration_seconds=60, polls=2, telemetry=poll)
        .to_dict()
    )
    assert verdict["verdict"] == "FAIL"
    rollout = _shadow_rollout(verdict, "failed")
    assert rollout.shadow is not None and rollout.missing == ()
    assert rollout.shadow.reason is not None
    assert rollout.shadow.reason.startswith("v2 answered 100% of 120 mirrored requests")
    html = render_page([rollout], PageContext("viewer", T0, 25))
    assert _check_row(html, "prediction-drift")[:3] == ["prediction-drift", "INCONCLUSIVE", "0"]
    assert _check_row(html, "mirrored-error-rate")[:6] == [
        "mirrored-error-rate",
        "FAIL",
        "1",
        "—",
        "—",  # the test's analysis record names only the agreement check's limits
        "120",
    ]
    row = _check_row(html, "mirrored-latency")
    assert row[:3] == ["mirrored-latency", "INCONCLUSIVE", "0"]
    assert "slower than 500 ms, the smallest bucket bound >= max_ms 300" in row[-1]


@pytest.mark.parametrize("state", ["running", "deferred"])
def test_a_shadow_phase_still_judging_shows_its_poll_not_a_verdict(state: str) -> None:
    # Poking, the sensor pushes each poll's verdict; deferred, the trigger stores it.
    verdict = _shadow_verdict(disagree_every=1000, duration=60)  # 1 of 300: below the limit
    assert verdict["verdict"] == "INCONCLUSIVE" and verdict["final"] is False
    rollout = _shadow_rollout(verdict, state)
    assert rollout.shadow is not None
    assert rollout.shadow.live and rollout.shadow.verdict is None
    html = render_page([rollout], PageContext("viewer", T0, 25))
    assert "analysing… poll 3" in html and 'table class="checks live"' in html


def test_a_rollout_without_a_shadow_phase_has_none() -> None:
    rollout = assemble(RUN, "canary", _layout({"canary.plan": "success"}), {}, UiLinks("/airflow/"))
    assert rollout.shadow is None
    assert 'data-step="shadow"' not in render_page([rollout], PageContext("viewer", T0, 25))
