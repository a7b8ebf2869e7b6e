"""Rollout operations end to end: e-mail through a real SMTP server, asset events that start a DAG."""

from __future__ import annotations

import html
from email.message import Message
from typing import Any

from tests.e2e.test_rollout_dag import ALL_V2
from tests.fixtures.example_runs import ONCALL, PromotedRun, RolledBackRun
from tests.fixtures.stack import RolloutStack


def _body(message: Message) -> str:
    parts = message.walk() if message.is_multipart() else [message]
    return "\n".join(
        part.get_payload(decode=True).decode()
        for part in parts
        if part.get_content_type() in ("text/html", "text/plain")
    )


def _asset_events(uri: str) -> list[Any]:
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session

    with create_session() as session:
        rows = (
            session.query(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .filter(AssetModel.uri == uri)
            .order_by(AssetEvent.id)
            .all()
        )
        session.expunge_all()
        return rows


def test_rolled_back_rollout_mails_the_reason_numbers_and_links(
    rolled_back_run: RolledBackRun, rollout_stack: RolloutStack
) -> None:
    run = rolled_back_run.run
    assert run.task_states()["canary.notify"] == "success"
    ((recipients, message),) = rolled_back_run.inbox.messages
    assert recipients == [ONCALL]
    assert message["Subject"] == (
        "Canary v2 rolled back on default/model-virtual-service (canary_rollout)"
    )
    body = _body(message)
    reason = run.xcom("canary.rollback")["reason"]
    assert "error rate" in reason and reason in html.unescape(body)
    # each check's numbers, and the step's Prometheus graph on the stack's Prometheus
    verdict = run.xcom("canary.step_1.analyze", "verdict")
    error_rate = next(c for c in verdict["checks"] if c["name"] == "error-rate")
    assert f"error-rate FAIL: canary {error_rate['canary_value']:.4g} vs stable" in body
    assert f"http://127.0.0.1:{rollout_stack.stack.prometheus_port}/graph?" in body

    # The rollback also left an asset event, with the reason and the verdicts.
    (event,) = [
        e
        for e in _asset_events("canary://default/model-virtual-service/rollback")
        if e.source_run_id == run.run_id
    ]
    assert event.extra["outcome"] == "rolled_back" and event.extra["reason"] == reason
    assert event.extra["version"] == "v1"
    assert event.extra["verdicts"]["canary.step_1.analyze"]["verdict"] == "FAIL"


def test_promotion_emits_an_asset_event_that_starts_the_downstream_dag(
    promoted_run: PromotedRun, rollout_stack: RolloutStack
) -> None:
    # promoted_run unpaused the downstream DAG before the rollout, as in a deployment.
    run = promoted_run.run
    assert promoted_run.http == ALL_V2

    # At least once: promoted_run retried canary.promote, and a promote that succeeds emits
    # its event again (the first try may have moved traffic and died before its event was
    # recorded). Consumers tell repeats apart by extra["rollout"].
    events = [
        e
        for e in _asset_events("canary://default/model-virtual-service")
        if e.source_run_id == run.run_id
    ]
    assert events and all(e.extra == events[0].extra for e in events), [e.extra for e in events]
    event = events[0]
    assert event.source_dag_id == "canary_rollout" and event.source_task_id == "canary.promote"
    assert event.extra["outcome"] == "promoted" and event.extra["version"] == "v2"
    assert event.extra["rollout"] == {"dag_id": "canary_rollout", "run_id": run.run_id}
    assert {v["verdict"] for v in event.extra["verdicts"].values()} == {"PASS"}
    # the shadow phase and steps 20, 40, 60; the 100% step is the promotion
    assert sorted(event.extra["verdicts"]) == [
        "canary.shadow.analyze",
        "canary.step_1.analyze",
        "canary.step_2.analyze",
        "canary.step_3.analyze",
    ]

    # A scheduler loop turns the queued asset event into a run of the downstream DAG.
    rollout_stack.airflow("scheduler", "--num-runs", "3", timeout=240)
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "after_model_promotion").all()
        consumed = [(r.run_type, [e.id for e in r.consumed_asset_events]) for r in runs]
    assert any(
        str(run_type).endswith("asset_triggered") and event.id in ids for run_type, ids in consumed
    ), consumed
