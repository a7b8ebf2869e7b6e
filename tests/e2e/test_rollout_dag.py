"""The example rollout DAG end to end: real Airflow runs, the local mesh, real Prometheus, real model servers."""

from __future__ import annotations

import pytest

from tests.e2e.conftest import E2E
from tests.fixtures.example_runs import PromotedRun, RolledBackRun
from tests.fixtures.stack import FAST

ALL_V2 = [{"route": [{"destination": {"host": "model-service", "subset": "v2"}, "weight": 100}]}]
ALL_V1 = [{"route": [{"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}]}]


@pytest.fixture
def e2e_clean(e2e: E2E) -> E2E:
    e2e.reset_traffic()
    return e2e


def test_good_canary_is_promoted_and_retries_change_nothing(promoted_run: PromotedRun) -> None:
    run = promoted_run.run
    assert promoted_run.http == ALL_V2  # header route removed, all traffic on v2
    plan = run.xcom("canary.plan")
    assert plan["steps"] == [20, 40, 60, 100]
    # The plan's power statement, from the stack's own traffic in Prometheus: 5-second bakes
    # at 150 requests/s are thin for every limit, and the plan says so before traffic moves.
    power = [line for line in plan["power"] if line.startswith("step 20%: error-rate: about ")]
    assert power and "in the 5-second bake" in power[0], plan["power"]
    assert "too thin to judge this limit" in power[0]
    assert not any(line.startswith("step 100%") for line in plan["power"])
    weights = [run.xcom(f"canary.step_{i}.set_weight")["split"]["v2"] for i in range(1, 5)]
    assert weights == [20, 40, 60, 100]
    for step in (1, 2, 3):
        verdict = run.xcom(f"canary.step_{step}.analyze", "verdict")
        assert verdict["verdict"] == "PASS", verdict
        assert verdict["checks"] and all(c["canary_requests"] >= 100 for c in verdict["checks"])
    states = run.task_states()
    assert states["canary.rollback"] == "skipped" and states["canary.promote"] == "success"

    # A retry of a finished task writes nothing: the VirtualService and model-v2 keep their versions.
    assert promoted_run.resource_version_after_retry == promoted_run.resource_version, (
        promoted_run.promote_retry_output[-2000:]
    )
    assert "unchanged" in promoted_run.deploy_retry_output


def test_canary_with_errors_is_rolled_back_with_a_reason(rolled_back_run: RolledBackRun) -> None:
    run = rolled_back_run.run
    assert rolled_back_run.http == ALL_V1
    verdict = run.xcom("canary.step_1.analyze", "verdict")
    assert verdict["verdict"] == "FAIL", verdict
    # Error rate FAILs; another check shares the FAIL only on evidence of its own (its e-value
    # within 1/n of the top one), e.g. a freshly started canary slower at its tail on a loaded
    # machine, so the test does not pin that.
    failing = {c["name"]: c for c in verdict["checks"] if c["status"] == "FAIL"}
    assert "error-rate" in failing, verdict
    assert failing["error-rate"]["canary_value"] > 0.05
    assert failing["error-rate"]["stable_value"] < 0.01
    assert run.xcom("canary.rollback")["reason"].startswith(
        "canary.step_1.analyze: health analysis FAIL: error rate"
    )


def test_crashing_canary_fails_the_deploy_and_never_moves_traffic(e2e_clean: E2E) -> None:
    before = e2e_clean.stack.virtual_service()["metadata"]["resourceVersion"]
    run = e2e_clean.run_dag("canary_e2e_crash")
    assert run.state == "failed"
    states = run.task_states()
    assert states["deploy_v2"] == "failed"
    assert states["canary.header_route"] == "upstream_failed"
    assert "CrashLoopBackOff" in run.log or "restarts=" in run.log
    # the rollback ran, found nothing to undo, and wrote nothing
    assert states["canary.rollback"] == "success"
    assert e2e_clean.stack.virtual_service()["metadata"]["resourceVersion"] == before


def test_unknown_virtual_service_fails_at_the_plan_and_moves_nothing(e2e_clean: E2E) -> None:
    before = e2e_clean.stack.virtual_service()["metadata"]["resourceVersion"]
    run = e2e_clean.run_dag("canary_rollout", {**FAST, "virtual_service": "no-such-vs"})
    assert run.state == "failed"
    states = run.task_states()
    assert states["canary.plan"] == "failed"
    assert states["canary.header_route"] == "upstream_failed"
    assert "VirtualService 'no-such-vs' not found in namespace 'default'" in run.log
    assert "Canary rollout failed before any traffic moved" in run.log
    assert e2e_clean.stack.virtual_service()["metadata"]["resourceVersion"] == before
