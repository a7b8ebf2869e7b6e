"""Approval gates end to end: a real rollout waits, the page shows it live, an approver answers over REST."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from tests.fixtures.api_server import ApiServer, running_api_server
from tests.fixtures.stack import RolloutStack
from tests.ui.conftest import ARTIFACTS, USERS
from tests.ui.test_rollouts_browser import _log_in, browser  # noqa: F401  (fixture)

pytestmark = pytest.mark.timeout(2400)

DAG_FILE = Path(__file__).parent / "dags" / "canary_ui_approval.py"
DAG_ID = "canary_ui_approval"
GATE = "canary.step_4.approve"
#: alice may answer the gate; bob may edit DAGs but is not a named approver
APPROVAL_USERS = {**USERS, "alice": ("user", "alice-pass"), "bob": ("user", "bob-pass")}
ALL_V1 = [{"route": [{"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}]}]
ALL_V2 = [{"route": [{"destination": {"host": "model-service", "subset": "v2"}, "weight": 100}]}]


@pytest.fixture(scope="module")
def approvals(rollout_stack: RolloutStack, airflow_db: Path) -> Iterator[ApiServer]:
    rollout_stack.add_dag_file(DAG_FILE)
    with running_api_server(
        airflow_db, APPROVAL_USERS, ARTIFACTS / "approval-api-server.log"
    ) as server:
        yield server


def _run_ids(server: ApiServer) -> frozenset[str]:
    with server.client("viewer") as client:
        response = client.get("/canary-rollouts/rollouts", params={"dag_id": DAG_ID, "limit": 200})
    response.raise_for_status()
    return frozenset(r["run_id"] for r in response.json()["rollouts"])


def _rollout(server: ApiServer) -> dict[str, Any] | None:
    """The newest rollout of the approval DAG, as the plugin's JSON API gives it."""
    with server.client("viewer") as client:
        response = client.get("/canary-rollouts/rollouts", params={"dag_id": DAG_ID, "limit": 1})
    response.raise_for_status()
    rollouts = response.json()["rollouts"]
    return rollouts[0] if rollouts else None


def _wait_for(
    server: ApiServer,
    run: Any,
    what: str,
    found: Callable[[dict[str, Any]], bool],
    earlier: frozenset[str] = frozenset(),
) -> dict[str, Any]:
    """The newest rollout once ``found`` holds for it; runs in ``earlier`` are not this test's."""
    # Generous: on a loaded machine training and deploying alone take minutes.
    deadline = time.monotonic() + 1500
    while time.monotonic() < deadline:
        if run.poll() is not None:
            run.stdout.seek(0)
            pytest.fail(f"the rollout ended before {what}:\n{run.stdout.read()[-4000:]}")
        rollout = _rollout(server)
        if (
            rollout is not None
            and rollout["run_id"] not in earlier
            and rollout["outcome"] == "running"
            and found(rollout)
        ):
            return rollout
        time.sleep(1)
    pytest.fail(f"no {what} within 1500 s")


def _open(page: Any, server: ApiServer) -> None:
    """(Re)load the page; its own refresh (every 15 s while a rollout runs) may abort one load."""
    for _ in range(5):
        try:
            page.goto(f"{server.url}/canary-rollouts/", timeout=60_000)
            return
        except Exception as err:  # net::ERR_ABORTED when the page's refresh navigates first
            last = err
            time.sleep(1)
    raise last


def _hitl_path(run_id: str) -> str:
    return f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(run_id, safe='')}/taskInstances/{GATE}/-1/hitlDetails"


def test_continue_promotes_and_the_page_shows_live_evidence_and_the_pending_approval(
    approvals: ApiServer,
    rollout_stack: RolloutStack,
    browser: Any,  # noqa: F811
) -> None:
    rollout_stack.reset_traffic()
    earlier = _run_ids(approvals)
    # Steps 1-3 are each judged for 15 s: three windows for the page to catch one live.
    run = rollout_stack.start_dag(DAG_ID, {"bake_time_seconds": 15})
    page = browser.new_context(viewport={"width": 1280, "height": 1000}).new_page()
    try:
        # While step 1 is judged, the page shows each check's evidence so far and its limits.
        live = _wait_for(
            approvals,
            run,
            "live evidence",
            lambda r: any(s["live"] and s["checks"] for s in r["steps"]),
            earlier,
        )
        step = next(s for s in live["steps"] if s["live"])
        assert step["verdict"] is None and step["polls"] >= 1
        assert step["checks"][0]["name"] == "error-rate"
        assert step["checks"][0]["canary_requests"] is not None
        assert any("max_increase=0.02" in text for _, text in step["limits"]), step["limits"]
        # The analysis stored its links before it deferred: they work while it runs.
        analyze = step["analysis"]["task_id"]
        with approvals.client("viewer") as client:
            links = client.get(
                f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(live['run_id'], safe='')}"
                f"/taskInstances/{analyze}/links"
            )
        assert links.status_code == 200, links.text
        prometheus = rollout_stack.stack.prometheus_port
        assert links.json()["extra_links"]["Prometheus"].startswith(
            f"http://127.0.0.1:{prometheus}/graph?"
        )
        _log_in(page, approvals, "viewer")
        card = page.locator(f'section.rollout[data-run-id="{live["run_id"]}"]')
        # Reload until the page catches a step while it is judged.
        deadline = time.monotonic() + 300
        while card.locator("table.checks.live").count() == 0:
            assert time.monotonic() < deadline, "the page never showed a step being judged"
            _open(page, approvals)
            card.wait_for(timeout=60_000)
        assert "analysing" in card.locator("td.verdict.live").first.inner_text()
        assert "Limits: error-rate" in card.locator(".live-note").first.inner_text()
        live_check = card.locator('table.checks.live tr.check[data-check="error-rate"]').first
        assert "max_increase=0.02" in live_check.locator("td.limit").inner_text()
        page.screenshot(path=str(ARTIFACTS / "rollouts-live-evidence.png"), full_page=True)

        # At the gate: a pending approval with a link to Airflow's form, and every judged
        # step's evidence beside the limit it was held to.
        waiting = _wait_for(
            approvals, run, "pending approval", lambda r: r["pending_approvals"], earlier
        )
        (pending,) = waiting["pending_approvals"]
        assert (pending["step"], pending["weight"], pending["task_id"]) == (4, 100, GATE)
        _open(page, approvals)
        link = card.locator("li.pending-approval a")
        link.wait_for(timeout=30_000)
        assert link.get_attribute("href").endswith(f"/tasks/{GATE}/required_actions?map_index=-1")
        assert "Step 4 (100%) waits for approval" in card.locator(".approvals").inner_text()
        _assert_judged_steps_show_their_evidence(card)
        page.screenshot(path=str(ARTIFACTS / "rollouts-pending-approval.png"), full_page=True)
        # The link works: alice follows it to Airflow's form for this very gate.
        _answer_form_opens_from_the_page(browser, approvals, waiting["run_id"])

        run_id = waiting["run_id"]
        with approvals.client("alice") as alice, approvals.client("bob") as bob:
            detail = alice.get(_hitl_path(run_id))
            assert detail.status_code == 200, detail.text
            body = detail.json()["body"]
            # every judged step's verdict, numbers and links are in front of the approver
            for k in (1, 2, 3):
                assert f"canary.step_{k}.analyze at {(20, 40, 60)[k - 1]}%: PASS" in body
            assert "error-rate PASS: canary" in body and "[Prometheus](http" in body
            answer = {"chosen_options": ["Continue"], "params_input": {"comment": "looks good"}}
            assert bob.patch(_hitl_path(run_id), json=answer).status_code == 403
            response = alice.patch(_hitl_path(run_id), json=answer)
            assert response.status_code == 200, response.text
        finished = rollout_stack.finish_dag(DAG_ID, run)
    finally:
        if run.poll() is None:
            run.kill()
        page.context.close()
    assert finished.state == "success", finished.log[-4000:]
    assert rollout_stack.stack.virtual_service()["spec"]["http"] == ALL_V2
    answer = finished.xcom(GATE, "approval")
    assert (answer["choice"], answer["approver"], answer["comment"]) == (
        "Continue",
        "alice",
        "looks good",
    )


#: a number as the page prints it: 0, 0.0123, 1,234, 1.5e-05
NUMBER = re.compile(r"^-?[\d,]+(\.\d+)?(e-?\d+)?$")


def _assert_judged_steps_show_their_evidence(card: Any) -> None:
    """Steps 1-3 passed: each shows PASS and its error-rate check's numbers beside its limit."""
    for index, weight in ((1, 20), (2, 40), (3, 60)):
        row = card.locator(f'tr.step[data-step="{index}"]')
        assert row.get_attribute("data-weight") == str(weight)
        assert row.locator("td.verdict").inner_text() == "PASS"
        # the check table is in the row right after the step's
        check = card.locator(
            f'tr.step[data-step="{index}"] + tr.check-row tr.check[data-check="error-rate"]'
        )
        cells = [text.strip() for text in check.locator("td").all_inner_texts()]
        name, status, canary, stable, limit, canary_requests, stable_requests = cells[:7]
        assert (name, status) == ("error-rate", "PASS"), cells
        assert NUMBER.match(canary) and NUMBER.match(stable), cells
        assert "max_increase=0.02" in limit, cells
        assert int(canary_requests.replace(",", "")) > 0, cells
        assert int(stable_requests.replace(",", "")) > 0, cells
    # the gated 100% step has no analysis and has not run
    assert "no analysis at 100%" in card.locator('tr.step[data-step="4"] td.verdict').inner_text()


def _answer_form_opens_from_the_page(chromium: Any, server: ApiServer, run_id: str) -> None:
    """As alice: the page's link opens Airflow's required-actions form of the gate."""
    context = chromium.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    try:
        _log_in(page, server, "alice", APPROVAL_USERS["alice"][1])
        card = page.locator(f'section.rollout[data-run-id="{run_id}"]')
        card.wait_for(timeout=60_000)
        card.locator("li.pending-approval a").click()
        page.wait_for_url(f"**/tasks/{GATE}/required_actions**", timeout=60_000)
        page.get_by_text("Continue the canary rollout to 100%?").first.wait_for(timeout=60_000)
        for option in ("Continue", "Roll back"):
            page.get_by_role("button", name=option, exact=True).first.wait_for(timeout=30_000)
        page.screenshot(path=str(ARTIFACTS / "approval-form.png"), full_page=True)
    finally:
        context.close()


def test_roll_back_answer_rolls_back_with_the_approver_in_the_reason(
    approvals: ApiServer, rollout_stack: RolloutStack
) -> None:
    rollout_stack.reset_traffic()
    earlier = _run_ids(approvals)
    run = rollout_stack.start_dag(DAG_ID, {"bake_time_seconds": 5})
    try:
        waiting = _wait_for(
            approvals, run, "pending approval", lambda r: r["pending_approvals"], earlier
        )
        answer = {
            "chosen_options": ["Roll back"],
            "params_input": {"comment": "p99 looks worse on EU traffic"},
        }
        with approvals.client("alice") as alice:
            response = alice.patch(_hitl_path(waiting["run_id"]), json=answer)
        assert response.status_code == 200, response.text
        finished = rollout_stack.finish_dag(DAG_ID, run)
    finally:
        if run.poll() is None:
            run.kill()
    assert finished.state == "failed", finished.log[-4000:]
    assert rollout_stack.stack.virtual_service()["spec"]["http"] == ALL_V1
    reason = finished.xcom("canary.rollback")["reason"]
    assert reason == (
        "alice chose 'Roll back' at the approval gate before the 100% step: "
        "p99 looks worse on EU traffic"
    )
    states = finished.task_states()
    assert states["canary.step_4.set_weight"] == "skipped"
    assert states["canary.promote"] == "skipped" and states["canary.fail_rollout"] == "failed"
    assert _rollout(approvals)["rollback_reason"] == reason
