"""Rollout operations end to end: e-mail through a real SMTP server, asset events that start a DAG."""

from __future__ import annotations

import email
import html
import json
from collections.abc import Iterator
from email.message import Message
from typing import Any

import pytest

from airflow_canary.local.tools.prometheus import free_port
from tests.e2e.conftest import E2E
from tests.e2e.test_rollout_dag import ALL_V2
from tests.fixtures.stack import FAST, FAST_FAIL

ONCALL = "oncall@example.com"


class Inbox:
    """What a real local SMTP server (aiosmtpd) received."""

    def __init__(self) -> None:
        self.messages: list[tuple[list[str], Message]] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
        self.messages.append(
            (list(envelope.rcpt_tos), email.message_from_bytes(envelope.original_content))
        )
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp() -> Iterator[tuple[Inbox, dict[str, str]]]:
    """An SMTP server on loopback and the environment that points Airflow's smtp_default at it."""
    from aiosmtpd.controller import Controller

    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port)
    controller.start()
    env = {
        "CANARY_NOTIFY_EMAIL": ONCALL,
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": port,
                "extra": {"disable_tls": True, "disable_ssl": True, "retry_limit": 0},
            }
        ),
    }
    try:
        yield inbox, env
    finally:
        controller.stop()


@pytest.fixture
def e2e_clean(e2e: E2E) -> E2E:
    e2e.reset_traffic()
    return e2e


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


def test_rolled_back_rollout_mails_the_reason_numbers_and_links(e2e_clean: E2E, smtp) -> None:
    inbox, env = smtp
    run = e2e_clean.run_dag("canary_rollout", {**FAST_FAIL, "v2_error_rate": 0.1}, env=env)
    assert run.state == "failed", run.log[-4000:]
    assert run.task_states()["canary.notify"] == "success"
    ((recipients, message),) = inbox.messages
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
    assert f"http://127.0.0.1:{e2e_clean.stack.prometheus_port}/graph?" in body

    # The rollback also left an asset event, with the reason and the verdicts.
    (event,) = [
        e
        for e in _asset_events("canary://default/model-virtual-service/rollback")
        if e.source_run_id == run.run_id
    ]
    assert event.extra["outcome"] == "rolled_back" and event.extra["reason"] == reason
    assert event.extra["version"] == "v1"
    assert event.extra["verdicts"]["canary.step_1.analyze"]["verdict"] == "FAIL"


def test_promotion_emits_an_asset_event_that_starts_the_downstream_dag(e2e_clean: E2E) -> None:
    # The downstream DAG is known to Airflow (and unpaused) as in a deployment.
    e2e_clean.airflow("dags", "reserialize")
    e2e_clean.airflow("dags", "unpause", "after_model_promotion")
    run = e2e_clean.run_dag("canary_rollout", FAST)
    assert run.state == "success", run.log[-4000:]
    assert e2e_clean.stack.virtual_service()["spec"]["http"] == ALL_V2

    (event,) = [
        e
        for e in _asset_events("canary://default/model-virtual-service")
        if e.source_run_id == run.run_id
    ]
    assert event.source_dag_id == "canary_rollout" and event.source_task_id == "canary.promote"
    assert event.extra["outcome"] == "promoted" and event.extra["version"] == "v2"
    assert event.extra["rollout"] == {"dag_id": "canary_rollout", "run_id": run.run_id}
    assert {v["verdict"] for v in event.extra["verdicts"].values()} == {"PASS"}
    assert len(event.extra["verdicts"]) == 3  # steps 20, 40, 60; the 100% step is the promotion

    # A scheduler loop turns the queued asset event into a run of the downstream DAG.
    e2e_clean.airflow("scheduler", "--num-runs", "3", timeout=240)
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == "after_model_promotion").all()
        consumed = [(r.run_type, [e.id for e in r.consumed_asset_events]) for r in runs]
    assert any(
        str(run_type).endswith("asset_triggered") and event.id in ids for run_type, ids in consumed
    ), consumed
