"""The rollouts plugin served by a real ``airflow api-server``: authentication, permissions and data."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.ui.conftest import ApiServer

pytestmark = pytest.mark.timeout(600)


def _rollouts(api_server: ApiServer, user: str) -> dict[str, dict[str, Any]]:
    with api_server.client(user) as client:
        response = client.get("/canary-rollouts/rollouts")
    assert response.status_code == 200, response.text
    return {item["dag_id"]: item for item in response.json()["rollouts"]}


def test_json_api_requires_a_token(api_server: ApiServer) -> None:
    with api_server.client(None) as client:
        assert client.get("/canary-rollouts/rollouts").status_code == 401
        assert client.get("/canary-rollouts/rollouts/canary_ui_healthy/x").status_code == 401
        forged = client.get(
            "/canary-rollouts/rollouts", headers={"Authorization": "Bearer not-a-jwt"}
        )
        assert forged.status_code == 403


def test_page_without_session_redirects_to_login(api_server: ApiServer) -> None:
    with api_server.client(None) as client:
        response = client.get("/canary-rollouts/", follow_redirects=False)
    assert response.status_code == 303
    assert "/auth/login" in response.headers["location"]
    assert "Canary" not in response.text


def test_healthy_rollout(api_server: ApiServer, rollout_runs: dict[str, str]) -> None:
    rollout = _rollouts(api_server, "viewer")["canary_ui_healthy"]
    assert rollout["run_id"] == rollout_runs["canary_ui_healthy"]
    assert rollout["outcome"] == "promoted"
    assert rollout["run_state"] == "success"
    assert (rollout["stable_version"], rollout["canary_version"]) == ("v1", "v2")
    assert rollout["current_weight"] == 100
    assert [point["weight"] for point in rollout["weights"]] == [0, 1, 10, 50, 100]
    assert [(step["weight"], step["verdict"]) for step in rollout["steps"]] == [
        (1, "PASS"),
        (10, "PASS"),
        (50, "PASS"),
    ]
    first_check = rollout["steps"][0]["checks"][0]
    assert first_check["name"] == "error-rate"
    assert first_check["canary_requests"] == 160.0
    assert first_check["stable_requests"] == 10933.0
    assert rollout["steps"][0]["window_start"] < rollout["steps"][0]["window_end"]
    assert rollout["rollback_reason"] is None
    assert rollout["missing"] == []
    run_path = f"/dags/canary_ui_healthy/runs/{quote(rollout_runs['canary_ui_healthy'], safe='')}"
    assert rollout["run_url"] == run_path
    assert f"{run_path}/tasks/canary.promote" in {task["url"] for task in rollout["tasks"]}


def test_rolled_back_rollout(api_server: ApiServer, rollout_runs: dict[str, str]) -> None:
    rollout = _rollouts(api_server, "viewer")["canary_ui_rolled_back"]
    assert rollout["outcome"] == "rolled_back"
    assert rollout["run_state"] == "failed"
    assert rollout["current_weight"] == 0
    assert [point["weight"] for point in rollout["weights"]] == [0, 1, 10, 0]
    steps = {step["weight"]: step for step in rollout["steps"]}
    assert steps[1]["verdict"] == "PASS"
    assert steps[10]["verdict"] == "FAIL"
    assert steps[10]["reason"].startswith("error-rate: canary 10.2% vs stable 1.0%")
    assert steps[10]["checks"][0]["canary_value"] == pytest.approx(0.102)
    assert steps[50]["verdict"] is None
    assert steps[50]["analysis"]["state"] == "skipped"
    assert (
        rollout["rollback_reason"]
        == "canary.analyze_10 FAIL: error-rate: canary 10.2% vs stable 1.0%"
    )


def test_malformed_xcom_is_reported_not_fatal(api_server: ApiServer) -> None:
    rollouts = _rollouts(api_server, "admin")
    malformed = rollouts["canary_ui_malformed"]
    assert malformed["steps"][0]["verdict"] is None
    assert "canary.set_weight_5: no XCom" in malformed["missing"]
    assert any("not a verdict object" in item for item in malformed["missing"])
    # A DAG that merely has a task called "promote" is no rollout.
    assert "canary_ui_unrelated" not in rollouts


def test_single_run_endpoint(api_server: ApiServer, rollout_runs: dict[str, str]) -> None:
    run_id = rollout_runs["canary_ui_rolled_back"]
    with api_server.client("viewer") as client:
        found = client.get(f"/canary-rollouts/rollouts/canary_ui_rolled_back/{run_id}")
        unknown = client.get("/canary-rollouts/rollouts/canary_ui_rolled_back/no-such-run")
    assert found.status_code == 200
    assert [item["outcome"] for item in found.json()["rollouts"]] == ["rolled_back"]
    assert unknown.status_code == 404
    assert "no-such-run" in unknown.json()["detail"]


def test_user_without_permission_sees_nothing(
    api_server: ApiServer, rollout_runs: dict[str, str]
) -> None:
    assert _rollouts(api_server, "nobody") == {}
    run_id = rollout_runs["canary_ui_rolled_back"]
    with api_server.client("nobody") as client:
        single = client.get(f"/canary-rollouts/rollouts/canary_ui_rolled_back/{run_id}")
        page = client.get("/canary-rollouts/")
    assert single.status_code == 403
    assert "canary_ui_rolled_back" in single.json()["detail"]
    assert "analyze_10" not in single.text
    assert page.status_code == 200
    assert "No canary rollouts in the DAGs you may read" in page.text
    assert "canary_ui_rolled_back" not in page.text


def test_page_shows_steps_verdicts_and_rollback_reason(api_server: ApiServer) -> None:
    with api_server.client("viewer") as client:
        page = client.get("/canary-rollouts/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Rolled back:</strong> canary.analyze_10 FAIL: error-rate" in page.text
    assert 'class="verdict-marker" data-weight="10"' in page.text
    assert "<svg" in page.text


def test_plugin_is_listed_with_its_nav_entry(api_server: ApiServer) -> None:
    with api_server.client("admin") as client:
        plugins = client.get("/api/v2/plugins").json()["plugins"]
        errors = client.get("/api/v2/plugins/importErrors").json()
    ours = next(plugin for plugin in plugins if plugin["name"] == "canary_rollouts")
    assert ours["fastapi_apps"][0]["url_prefix"] == "/canary-rollouts"
    assert ours["external_views"][0]["url_route"] == "canary-rollouts"
    assert errors["total_entries"] == 0, errors
