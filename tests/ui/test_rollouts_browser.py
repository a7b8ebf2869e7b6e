"""The rollouts page in headless Chromium: log in through Airflow, open the page, read what it shows."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.ui.conftest import ARTIFACTS, USERS, ApiServer, UiRuns

pytestmark = pytest.mark.timeout(600)

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.fail(f"Chromium not found at {CHROMIUM}; install it with: apt-get install chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _log_in(page: Any, api_server: ApiServer, user: str, password: str | None = None) -> None:
    page.goto(f"{api_server.url}/canary-rollouts/", timeout=60_000)
    # No session yet: the page sends the browser to Airflow's own login form.
    page.wait_for_url("**/auth/login**", timeout=60_000)
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(password or USERS[user][1])
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url("**/canary-rollouts/**", timeout=60_000)


def test_rollouts_page_in_browser(
    browser: Any, api_server: ApiServer, rollout_runs: UiRuns
) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 1000})
    page = context.new_page()
    try:
        _log_in(page, api_server, "viewer")
        rolled_back = page.locator(
            f'section.rollout[data-run-id="{rollout_runs.rolled_back.run_id}"]'
        )
        rolled_back.wait_for(timeout=30_000)
        assert rolled_back.locator(".badge").inner_text() == "Rolled back"
        assert (
            "canary.step_1.analyze: health analysis FAIL"
            in rolled_back.locator(".rollback").inner_text()
        )
        # the weight steps; the shadow phase's row before them has no weight
        steps = rolled_back.locator("table.steps > tbody > tr.step[data-weight]")
        assert [steps.nth(i).get_attribute("data-weight") for i in range(steps.count())] == [
            "20",
            "40",
            "60",
            "100",
        ]
        verdicts = [steps.nth(i).locator("td.verdict").inner_text() for i in range(steps.count())]
        assert verdicts == ["FAIL", "skipped", "skipped", "skipped"]
        assert rolled_back.locator("svg.chart g.verdict-marker").count() == 1
        assert rolled_back.locator("svg.chart .rollback-marker").count() == 1
        checks = rolled_back.locator("table.checks tr.check")
        assert any(text.startswith("error-rate") for text in checks.all_inner_texts())

        healthy = page.locator(f'section.rollout[data-run-id="{rollout_runs.healthy.run_id}"]')
        assert healthy.locator(".badge").inner_text() == "Promoted"
        assert healthy.locator("tr.step.shadow td.verdict").inner_text() == "PASS"
        healthy_verdicts = healthy.locator("table.steps > tbody > tr.step[data-weight] td.verdict")
        assert healthy_verdicts.all_inner_texts() == ["PASS", "PASS", "PASS", "no analysis at 100%"]
        assert healthy.locator("svg.chart g.verdict-marker").count() == 3

        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "rollouts.png"), full_page=True)

        # The same page inside the Airflow UI, through the plugin's nav entry.
        page.goto(f"{api_server.url}/plugin/canary-rollouts", timeout=60_000)
        frame = page.frame_locator("iframe")
        frame.locator(
            f'section.rollout[data-run-id="{rollout_runs.rolled_back.run_id}"] .rollback'
        ).wait_for(timeout=60_000)
        page.screenshot(path=str(ARTIFACTS / "rollouts-in-airflow.png"))
    finally:
        context.close()
