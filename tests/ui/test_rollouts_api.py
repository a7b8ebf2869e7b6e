"""The rollouts plugin served by a real ``airflow api-server``: authentication, permissions and data."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import pytest

from tests.ui.conftest import ApiServer, UiRuns

pytestmark = pytest.mark.timeout(600)


def _rollouts(api_server: ApiServer, user: str, dag_id: str | None = None) -> dict[str, Any]:
    """The rollouts a user sees, by run id (the e2e tests may add runs of the same DAG)."""
    params = {"dag_id": dag_id} if dag_id else {}
    with api_server.client(user) as client:
        response = client.get("/canary-rollouts/rollouts", params=params)
    assert response.status_code == 200, response.text
    return {item["run_id"]: item for item in response.json()["rollouts"]}


def test_json_api_requires_a_token(api_server: ApiServer) -> None:
    with api_server.client(None) as client:
        assert client.get("/canary-rollouts/rollouts").status_code == 401
        assert client.get("/canary-rollouts/rollouts/canary_rollout/x").status_code == 401
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


def test_healthy_rollout(api_server: ApiServer, rollout_runs: UiRuns) -> None:
    run = rollout_runs.healthy
    rollout = _rollouts(api_server, "viewer", "canary_rollout")[run.run_id]
    assert (rollout["dag_id"], rollout["group"]) == ("canary_rollout", "canary")
    assert rollout["outcome"] == "promoted"
    assert rollout["run_state"] == "success"
    assert (rollout["stable_version"], rollout["canary_version"]) == ("v1", "v2")
    assert (rollout["stable_subset"], rollout["canary_subset"]) == ("v1", "v2")
    assert (rollout["namespace"], rollout["virtual_service"]) == (
        "default",
        "model-virtual-service",
    )
    assert rollout["planned_steps"] == [20, 40, 60, 100]
    assert rollout["current_weight"] == 100
    # header route (0%), the four steps, the promotion
    assert [point["weight"] for point in rollout["weights"]] == [0, 20, 40, 60, 100, 100]
    assert [(s["index"], s["weight"], s["verdict"]) for s in rollout["steps"]] == [
        (1, 20, "PASS"),
        (2, 40, "PASS"),
        (3, 60, "PASS"),
        (4, 100, None),
    ]
    assert rollout["steps"][3]["analysis"] is None
    first = rollout["steps"][0]
    recorded = run.xcom("canary.step_1.analyze", "verdict")
    assert [c["name"] for c in first["checks"]] == [c["name"] for c in recorded["checks"]]
    assert first["checks"][0]["canary_requests"] == recorded["checks"][0]["canary_requests"]
    assert all(check["canary_requests"] >= 100 for check in first["checks"])
    assert (first["window_start"], first["window_end"]) == (
        recorded["window"]["start"],
        recorded["window"]["end"],
    )
    assert first["weight_set_at"] == run.xcom("canary.step_1.set_weight")["at"]
    assert first["prometheus_url"].startswith("http://127.0.0.1:")
    assert rollout["rollback_reason"] is None
    assert rollout["missing"] == []
    run_path = f"/dags/canary_rollout/runs/{quote(run.run_id, safe='')}"
    assert rollout["run_url"] == run_path
    task_urls = {task["url"] for task in rollout["tasks"]}
    assert f"{run_path}/tasks/canary.promote" in task_urls
    assert f"{run_path}/tasks/canary.step_2.analyze" in task_urls


def test_rolled_back_rollout(api_server: ApiServer, rollout_runs: UiRuns) -> None:
    run = rollout_runs.rolled_back
    rollout = _rollouts(api_server, "viewer", "canary_rollout")[run.run_id]
    assert rollout["outcome"] == "rolled_back"
    assert rollout["run_state"] == "failed"
    assert rollout["current_weight"] == 0
    # header route, step 1 at 20%, the analysis's own rollback, the rollback task
    assert [(p["task_id"], p["weight"]) for p in rollout["weights"]] == [
        ("canary.header_route", 0),
        ("canary.step_1.set_weight", 20),
        ("canary.step_1.analyze", 0),
        ("canary.rollback", 0),
    ]
    steps = rollout["steps"]
    assert [(s["index"], s["weight"]) for s in steps] == [(1, 20), (2, 40), (3, 60), (4, 100)]
    verdict = run.xcom("canary.step_1.analyze", "verdict")
    assert steps[0]["verdict"] == "FAIL"
    assert steps[0]["reason"] == verdict["reason"]
    # The page shows the verdict's own checks. The 10%-error canary FAILs error-rate; another
    # check may share the FAIL when its own evidence is within 1/n of the top one (on a loaded
    # machine a freshly started canary can also be slower at its tail), so the test pins the
    # page to the verdict rather than to one machine's latency.
    shown = [(c["name"], c["status"], c["canary_value"]) for c in steps[0]["checks"]]
    assert shown == [(c["name"], c["status"], c["canary_value"]) for c in verdict["checks"]]
    failing = {check["name"]: check for check in steps[0]["checks"] if check["status"] == "FAIL"}
    assert "error-rate" in failing, steps[0]["checks"]
    assert failing["error-rate"]["canary_value"] > 0.05
    for later in steps[1:3]:
        assert later["verdict"] is None
        assert later["set_weight"]["state"] == "skipped"
        assert later["analysis"]["state"] == "skipped"
    assert rollout["rollback_reason"] == run.xcom("canary.rollback")["reason"]
    assert rollout["rollback_reason"].startswith("canary.step_1.analyze: health analysis FAIL")
    assert rollout["rolled_back_at"] == verdict["rolled_back_at"]
    assert rollout["missing"] == []


def test_malformed_xcom_is_reported_not_fatal(api_server: ApiServer, rollout_runs: UiRuns) -> None:
    rollouts = _rollouts(api_server, "admin")
    malformed = rollouts[rollout_runs.malformed.run_id]
    assert malformed["dag_id"] == "canary_ui_malformed"
    assert malformed["steps"][0]["verdict"] is None
    assert malformed["steps"][0]["weight"] is None
    assert "canary.step_1.set_weight: no XCom" in malformed["missing"]
    assert any("not a verdict object" in item for item in malformed["missing"])
    assert any(item.startswith("canary.plan: plan XCom 'steps'") for item in malformed["missing"])
    # A DAG that merely has a task called "promote" is no rollout.
    assert rollout_runs.unrelated.run_id not in rollouts
    assert all(item["dag_id"] != "canary_ui_unrelated" for item in rollouts.values())


def test_single_run_endpoint(api_server: ApiServer, rollout_runs: UiRuns) -> None:
    run_id = rollout_runs.rolled_back.run_id
    with api_server.client("viewer") as client:
        found = client.get(f"/canary-rollouts/rollouts/canary_rollout/{quote(run_id, safe='')}")
        unknown = client.get("/canary-rollouts/rollouts/canary_rollout/no-such-run")
    assert found.status_code == 200
    assert [item["outcome"] for item in found.json()["rollouts"]] == ["rolled_back"]
    assert unknown.status_code == 404
    assert "no-such-run" in unknown.json()["detail"]


def test_user_without_permission_sees_nothing(api_server: ApiServer, rollout_runs: UiRuns) -> None:
    assert _rollouts(api_server, "nobody") == {}
    run_id = rollout_runs.rolled_back.run_id
    with api_server.client("nobody") as client:
        single = client.get(f"/canary-rollouts/rollouts/canary_rollout/{quote(run_id, safe='')}")
        page = client.get("/canary-rollouts/")
    assert single.status_code == 403
    assert "canary_rollout" in single.json()["detail"]
    assert "step_1" not in single.text
    assert page.status_code == 200
    assert "No canary rollouts in the DAGs you may read" in page.text
    assert 'data-dag-id="canary_rollout"' not in page.text


@pytest.mark.parametrize(
    "user,readable,hidden",
    [
        ("rollout-reader", "canary_rollout", "canary_ui_malformed"),
        ("malformed-reader", "canary_ui_malformed", "canary_rollout"),
    ],
)
def test_a_user_sees_nothing_of_a_dag_they_may_not_read(
    api_server: ApiServer, rollout_runs: UiRuns, user: str, readable: str, hidden: str
) -> None:
    """Two rollout DAGs, a user allowed to read one: the other's runs, steps and reasons are
    absent from the JSON, the page and the single-run endpoint (403 naming only the DAG id)."""
    runs = {
        "canary_rollout": [rollout_runs.healthy.run_id, rollout_runs.rolled_back.run_id],
        "canary_ui_malformed": [rollout_runs.malformed.run_id],
    }
    seen = _rollouts(api_server, user)
    assert {item["dag_id"] for item in seen.values()} == {readable}
    assert set(runs[readable]) <= set(seen)
    assert not set(runs[hidden]) & set(seen)
    assert _rollouts(api_server, user, dag_id=hidden) == {}
    with api_server.client(user) as client:
        page = client.get("/canary-rollouts/")
        singles = [
            client.get(f"/canary-rollouts/rollouts/{hidden}/{quote(run_id, safe='')}")
            for run_id in runs[hidden]
        ]
    assert page.status_code == 200
    assert f'data-dag-id="{readable}"' in page.text
    assert f'data-dag-id="{hidden}"' not in page.text
    assert f"/dags/{hidden}" not in page.text  # no link to its runs or tasks
    for run_id in runs[hidden]:
        assert run_id not in page.text
    if hidden == "canary_rollout":
        assert "health analysis FAIL" not in page.text
    for single in singles:
        assert single.status_code == 403
        assert "step_1" not in single.text and "verdict" not in single.text


def test_page_shows_steps_verdicts_and_rollback_reason(
    api_server: ApiServer, rollout_runs: UiRuns
) -> None:
    with api_server.client("viewer") as client:
        page = client.get("/canary-rollouts/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "Rolled back:</strong> canary.step_1.analyze: health analysis FAIL" in page.text
    assert 'class="verdict-marker" data-step="1" data-weight="20"' in page.text
    assert "no analysis at 100%" in page.text
    assert f'data-run-id="{rollout_runs.healthy.run_id}"' in page.text
    assert "<svg" in page.text


def test_the_shadow_phase_is_shown_as_a_step_with_its_numbers(
    api_server: ApiServer, rollout_runs: UiRuns
) -> None:
    run = rollout_runs.healthy
    shadow = _rollouts(api_server, "viewer", "canary_rollout")[run.run_id]["shadow"]
    recorded = run.xcom("canary.shadow.analyze", "verdict")
    assert (shadow["verdict"], shadow["reason"]) == ("PASS", recorded["reason"])
    assert shadow["mirror_percent"] == 100.0 and not shadow["live"]
    assert shadow["mirrored_at"] == run.xcom("canary.shadow.mirror_on")["at"]
    assert [
        task["state"] for task in (shadow["mirror_on"], shadow["analysis"], shadow["mirror_off"])
    ] == ["success"] * 3
    # the limit the sensor recorded when it started, the pairs and every record's outcome
    assert shadow["limits"] == [
        ["prediction-agreement", "max_disagreement=0.02"],
        ["mirrored-error-rate", "max_rate=0.2"],
    ]
    check, mirrored = shadow["checks"]
    assert (check["name"], check["status"], check["canary_value"]) == (
        "prediction-agreement",
        "PASS",
        0.0,
    )
    assert check["canary_requests"] == recorded["pairing"]["pairs"] > 0
    # v2's mirrored requests from Istio telemetry: none failed
    assert (mirrored["name"], mirrored["status"], mirrored["canary_value"]) == (
        "mirrored-error-rate",
        "PASS",
        0.0,
    )
    assert mirrored["canary_requests"] > 0
    pairing = recorded["pairing"]
    assert shadow["pairing"] == pairing
    assert shadow["examples"] == []  # a PASS keeps no example pairs

    with api_server.client("viewer") as client:
        page = client.get("/canary-rollouts/")
    card = page.text.split(f'data-run-id="{run.run_id}"', 1)[1].split("</section>", 1)[0]
    assert (
        '<tr class="step shadow" data-step="shadow"><td>shadow</td><td class="num">mirror 100%'
        in card
    )
    assert f'<div data-count="pairs"><dt>pairs</dt><dd>{pairing["pairs"]:,}</dd></div>' in card
    assert "max_disagreement=0.02" in card


def test_plugin_is_listed_with_its_nav_entry(api_server: ApiServer) -> None:
    with api_server.client("admin") as client:
        plugins = client.get("/api/v2/plugins").json()["plugins"]
        errors = client.get("/api/v2/plugins/importErrors").json()
    ours = next(plugin for plugin in plugins if plugin["name"] == "canary_rollouts")
    assert ours["fastapi_apps"][0]["url_prefix"] == "/canary-rollouts"
    assert ours["external_views"][0]["url_route"] == "canary-rollouts"
    assert errors["total_entries"] == 0, errors
