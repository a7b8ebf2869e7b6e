"""The rollout's report, its notifier, the approval reason and the canary:// asset URIs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import pytest
from airflow.sdk import BaseNotifier

from airflow_canary.assets.canary import (
    promotion_extra,
    promotion_uri,
    rollback_uri,
    sanitize_uri,
)
from airflow_canary.notifications.rollout import RolloutNotifier
from airflow_canary.rollout.approval import approval_reason
from airflow_canary.rollout.operators import rollback_reason
from airflow_canary.rollout.report import (
    RolloutOutcome,
    RolloutReport,
    step_weights,
    steps_from_xcoms,
)

FAIL_VERDICT = {
    "verdict": "FAIL",
    "reason": "error rate of canary 9.8% exceeds stable 0.1% + 2%",
    "checks": [
        {
            "name": "error-rate",
            "status": "FAIL",
            "canary_value": 0.098,
            "stable_value": 0.001,
            "canary_requests": 1210,
            "stable_requests": 4830,
            "p_value": 0.0004,
            "message": "canary 9.8% > stable 0.1% + 2%",
        }
    ],
}
PROM = "http://prom:9090/graph?g0.expr=x"


def _report() -> RolloutReport:
    steps = steps_from_xcoms(
        [
            ("canary.step_1.analyze", FAIL_VERDICT, {"Prometheus": PROM, "Dashboard": None}),
            ("canary.step_2.analyze", None, {}),  # never ran: left out
        ],
        {"canary.step_1.analyze": 20},
    )
    return RolloutReport(
        outcome=RolloutOutcome.ROLLED_BACK,
        dag_id="canary_rollout",
        run_id="manual__1",
        namespace="default",
        route="model-virtual-service",
        stable_version="v1",
        canary_version="v2",
        reason="canary.step_1.analyze: health analysis FAIL: error rate too high",
        steps=steps,
        run_url="http://airflow/dags/canary_rollout/runs/manual__1",
    )


def test_report_carries_the_reason_every_checks_numbers_and_the_links() -> None:
    report = _report()
    assert (
        report.subject == "Canary v2 rolled back on default/model-virtual-service (canary_rollout)"
    )
    text = report.text()
    assert "Reason: canary.step_1.analyze: health analysis FAIL: error rate too high" in text
    assert "canary.step_1.analyze at 20%: FAIL" in text
    assert "error-rate FAIL: canary 0.098 vs stable 0.001 (1210 / 4830 requests), p=0.0004" in text
    assert f"Prometheus: {PROM}" in text and "step_2" not in text
    html = report.html()
    assert 'href="http://prom:9090/graph?g0.expr=x"' in html and "<li>error-rate FAIL" in html
    assert "[Prometheus](http://prom:9090/graph?g0.expr=x)" in report.markdown()
    assert report.to_dict()["outcome"] == "rolled_back"


class Recorder(BaseNotifier):
    template_fields = ("to",)

    def __init__(self, to: str) -> None:
        super().__init__()
        self.to = to
        self.subject = ""
        self.html_content = ""
        self.sent: list[tuple[str, str, str]] = []

    def notify(self, context: Any) -> None:
        self.sent.append((self.to, self.subject, self.html_content))


def test_rollout_notifier_fills_any_notifiers_message_fields() -> None:
    inner = Recorder(to="{{ params.who }}")
    report = _report()
    context = {
        "params": {"who": "oncall@example.com"},
        "canary_rollout": {**report.to_dict(), "html": report.html(), "text": report.text()},
    }
    RolloutNotifier(inner).notify(context)
    # a shallow copy sent it (its list is the same object); the wrapped notifier keeps its
    # template for the next rollout
    ((to, subject, html),) = inner.sent
    assert (to, subject) == ("oncall@example.com", report.subject)
    assert "error-rate FAIL: canary 0.098 vs stable 0.001" in html
    assert inner.to == "{{ params.who }}"
    sent = RolloutNotifier(inner, fields={"html_content": "text"})
    with pytest.raises(ValueError, match="fields\\['html_content'\\] must be one of"):
        RolloutNotifier(inner, fields={"html_content": "poem"})
    with pytest.raises(ValueError, match="has no attribute 'body'"):
        RolloutNotifier(inner, fields={"body": "text"})
    with pytest.raises(ValueError, match="needs the rollout report"):
        sent.notify({})


def test_rollback_reason_names_the_approver_and_comment_first() -> None:
    answer = {
        "choice": "Roll back",
        "approver": "alice",
        "comment": "latency on EU traffic",
        "weight": 100,
        "timed_out": False,
    }
    assert approval_reason(answer) == (
        "alice chose 'Roll back' at the approval gate before the 100% step: latency on EU traffic"
    )
    assert approval_reason({**answer, "choice": "Continue"}) is None
    assert "timed out" in str(approval_reason({**answer, "timed_out": True, "approver": None}))
    verdicts = [("canary.step_1.analyze", FAIL_VERDICT)]
    assert rollback_reason(verdicts, [], [None, answer]).startswith("alice chose")
    assert rollback_reason(verdicts, [], [None]).startswith("canary.step_1.analyze: health")


def test_canary_asset_uris() -> None:
    assert (
        promotion_uri("default", "model-virtual-service")
        == "canary://default/model-virtual-service"
    )
    assert rollback_uri("ml", "vs.v1") == "canary://ml/vs.v1/rollback"
    assert sanitize_uri(urlsplit("canary://ml/vs/?x=1")).geturl() == "canary://ml/vs"
    for bad in ("canary://ML/vs", "canary://ml", "canary://ml/vs/promote", "canary://ml/a/b/c"):
        with pytest.raises(ValueError):
            sanitize_uri(urlsplit(bad))
    with pytest.raises(ValueError, match="namespace must be a Kubernetes namespace name"):
        promotion_uri("{{ params.ns }}", "vs")
    # The route object may be named in its router's term (Istio users' keyword calls still work).
    assert promotion_uri("ml", virtual_service="vs") == promotion_uri("ml", "vs")
    assert rollback_uri("ml", http_route="model-route") == "canary://ml/model-route/rollback"
    with pytest.raises(ValueError, match="name the route object once"):
        promotion_uri("ml", "vs", http_route="model-route")


def test_promotion_extra_names_the_version_the_training_run_and_the_verdicts() -> None:
    extra = promotion_extra(
        outcome="promoted",
        namespace="default",
        route="vs",
        stable_version="v1",
        canary_version="v2",
        dag_id="canary_rollout",
        run_id="r1",
        verdicts={"canary.step_1.analyze": {"verdict": "PASS"}},
        trained_by=[{"dag_id": "retrain_model_weekly", "run_id": "scheduled__1"}],
    )
    assert extra["version"] == "v2" and extra["trained_by"][0]["dag_id"] == "retrain_model_weekly"
    assert extra["verdicts"]["canary.step_1.analyze"]["verdict"] == "PASS"
    assert (extra["virtual_service"], extra["router"]) == ("vs", "istio")
    on_gateway_api = promotion_extra(
        outcome="rolled_back",
        namespace="default",
        route="model-route",
        router="gateway-api",
        stable_version="v1",
        canary_version="v2",
        dag_id="canary_rollout",
        run_id="r1",
        verdicts={},
        trained_by=[],
    )
    assert on_gateway_api["http_route"] == "model-route" and "virtual_service" not in on_gateway_api


def test_each_judged_step_takes_its_weight_from_the_plan() -> None:
    ids = ["canary.step_1.analyze", "outer.canary.step_3.analyze", "canary.step_9.analyze"]
    assert step_weights(ids, [20, 40, 60, 100]) == {
        "canary.step_1.analyze": 20,
        "outer.canary.step_3.analyze": 60,
    }
    assert step_weights(ids, None) == {}
