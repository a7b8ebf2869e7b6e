"""Faults of Airflow's own processes mid-rollout: the triggerer, a LocalExecutor worker, the scheduler.

Each test injects one fault into a run of the example ``canary_rollout`` DAG on the real
deployment (``tests/fixtures/deployment.py``), asserts the outcome, and appends its row to
``artifacts/fault-outcomes.jsonl``. What each pins:

- Airflow rebuilds a deferred task's trigger from its serialised kwargs on whichever triggerer
  is healthy once the old one stops heartbeating (``triggerer_health_check_threshold``);
- a task whose worker died stops heartbeating, the scheduler fails that try after
  ``task_instance_heartbeat_timeout`` and retries it (``retries``);
- the trigger of an analysis rolls back on FAIL by itself, without the scheduler or a worker.
"""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.faults.conftest import DAG_ID, Rollout, mesh_faults, run_rollout, slow
from tests.faults.outcomes import Outcome, record, split_of
from tests.faults.route_watch import RouteWatch
from tests.fixtures.deployment import Deployment, DeploymentError
from tests.fixtures.stack import FAST, FAST_FAIL

#: a whole rollout on real Airflow, and the first test also starts the stack and the deployment
pytestmark = pytest.mark.timeout(1800)

STEP_1 = "canary.step_1.analyze"


def verdict_names(run: Rollout) -> dict[str, str]:
    return {task: verdict["verdict"] for task, verdict in run.verdicts.items()}


def whole(http: list[dict[str, Any]], steps: list[int]) -> bool:
    """A state a rollout of ``steps`` may show: one weighted route with stable at 100 - w and
    the canary at w (w = 0, a step, or 100; a version at 0 may be left out), plus at most the
    testers' header route, which sends them to the canary alone.

    The header route is written before step 1 (canary at 0) and stays through the last step
    (at 100 when 100 is a step) until promote or rollback removes it in the same write that
    sets the final split; a finished run is checked for no header route separately.
    """
    weighted = [route for route in http if not route.get("match")]
    headers = [route for route in http if route.get("match")]
    if len(weighted) != 1 or len(headers) > 1:
        return False
    split = split_of({"spec": {"http": http}})
    canary = split.get("v2", 0)
    if canary not in {0, 100, *steps} or sum(split.values()) != 100 or set(split) - {"v1", "v2"}:
        return False
    return all(
        split_of({"spec": {"http": [{**route, "match": None}]}}) == {"v2": 100} for route in headers
    )


def assert_only_whole_states(run: Rollout, steps: list[int]) -> None:
    """Every version of the route the watch saw is whole (see :func:`whole`), and traffic moved
    only forward until a rollback sent all of it to stable."""
    strays = [
        json.loads(seen.http) for seen in run.watch.seen if not whole(json.loads(seen.http), steps)
    ]
    assert not strays, strays
    final = json.loads(run.watch.seen[-1].http)
    assert not [route for route in final if route.get("match")], final  # testers' route removed
    weights = run.canary_weights
    rolled_back = weights[-1] == 0 and max(weights) > 0
    forward = weights[:-1] if rolled_back else weights
    assert forward == sorted(forward), weights


def outcome(
    run: Rollout,
    fault: str,
    injected_at: str,
    seconds_to_safe: float | None,
    test: str,
) -> Outcome:
    missing, checked = run.missing_records()
    steps = verdict_names(run)
    verdict = f"run {run.state}; " + ", ".join(
        f"{task.split('.')[1]} {name}" for task, name in sorted(steps.items())
    )
    return Outcome(
        fault=fault,
        injected_at=injected_at,
        verdict=verdict,
        final_split=run.splits[-1],
        seconds_to_safe=None if seconds_to_safe is None else round(seconds_to_safe, 1),
        records_lost=bool(missing),
        records_checked=checked + (f"; missing: {', '.join(missing)}" if missing else ""),
        test=test,
        run_id=run.run_id,
    )


# -- the triggerer ------------------------------------------------------------------------------


def kill_triggerer_mid_analysis(deployment: Deployment, run_id: str, _: RouteWatch) -> dict:
    """SIGKILL the triggerer once step 1's analysis has published two polls; restart it 3 s later."""
    progress: dict[str, Any] = {}

    def judging() -> bool:
        if deployment.task_states(DAG_ID, run_id).get(STEP_1) != "deferred":
            return False
        progress.update(deployment.xcom(DAG_ID, run_id, STEP_1, key="progress") or {})
        return int(progress.get("polls", 0)) >= 2

    deployment.wait_for(judging, 600, "step 1's analysis to poll twice in the triggerer")
    before = dict(progress)
    killed_at = time.time()
    deployment.kill("triggerer")
    time.sleep(3)  # down across several polls
    deployment.start("triggerer")

    def resumed() -> bool:
        now = deployment.xcom(DAG_ID, run_id, STEP_1, key="progress") or {}
        state = deployment.task_states(DAG_ID, run_id).get(STEP_1)
        return now.get("at") != before.get("at") or state != "deferred"

    deployment.wait_for(resumed, 300, "the restarted triggerer to resume step 1's analysis")
    return {"before": before, "killed_at": killed_at, "resumed_at": time.time()}


@slow
def test_triggerer_killed_mid_analysis_resumes_its_evidence_and_verdict(
    airflow_deployment: Deployment, healthy_baseline: Rollout
) -> None:
    """The step's trigger comes back from its serialised state with the same start, so the polls
    it missed are replayed from Prometheus and the bake time does not start over; a healthy
    canary reaches the verdicts of the uninterrupted run and is promoted, never rolled back."""
    run = run_rollout(
        airflow_deployment, {**FAST, "bake_time_seconds": 20}, kill_triggerer_mid_analysis
    )
    before = run.fault["before"]
    verdict = run.verdicts.get(STEP_1, {})
    assert run.state == "success", run.tasks
    assert verdict_names(run) == verdict_names(healthy_baseline)
    # the same analysis resumed: same start, the evidence of the polls before the kill kept
    assert verdict["started_at"] == before["started_at"]
    assert verdict["polls"] > before["polls"]
    assert verdict["rolled_back_at"] is None
    assert run.canary_weights == [0, 20, 40, 60, 100]
    assert_only_whole_states(run, FAST["steps"])
    row = outcome(
        run,
        "triggerer SIGKILL, restarted 3 s later",
        f"step 1 (20%) analysis, after poll {before['polls']}",
        run.fault["resumed_at"] - run.fault["killed_at"],
        "test_triggerer_killed_mid_analysis_resumes_its_evidence_and_verdict",
    )
    record(row)
    assert not row.records_lost, row.records_checked


# -- a LocalExecutor worker ---------------------------------------------------------------------


#: how long the mesh holds each write while a worker is to be killed in one (slow storage)
HELD_WRITE_SECONDS = 5


def kill_worker_of(task_id: str) -> Any:
    """A fault: SIGKILL the worker running ``task_id`` (and its task process) while its write to
    the VirtualService is in flight.

    A traffic write takes milliseconds, too short to catch; so from the time the task is
    scheduled the mesh holds every write for ``HELD_WRITE_SECONDS`` (``writeLatencySeconds``,
    as a slowly committing etcd does), and the worker is killed once a write is held
    (``delayedWrites``) and its process is seen. The held write is then stored with its client
    gone, which kube-apiserver may also do: the retry must take the route as it finds it.
    """

    def inject(deployment: Deployment, run_id: str, watch: RouteWatch) -> dict:
        killed: list[int] = []
        version = {"at_kill": ""}

        def due() -> bool:
            state = deployment.task_states(DAG_ID, run_id).get(task_id)
            if state in ("success", "skipped", "upstream_failed", "failed"):
                raise DeploymentError(f"{task_id} ended {state} before its write could be held")
            return state in ("scheduled", "queued", "running")

        deployment.wait_for(due, 900, f"{task_id} to be scheduled")
        mesh_faults(deployment, writeLatencySeconds=HELD_WRITE_SECONDS)
        try:
            ti_id = deployment.ti_id(DAG_ID, run_id, task_id)

            def held_and_killed() -> bool:
                if not mesh_faults(deployment)["delayedWrites"]:
                    return False
                if ti_id not in deployment.worker_titles().values():
                    return False
                pids = deployment.kill_worker(ti_id)
                killed.extend(pids)
                version["at_kill"] = watch.seen[-1].resource_version if watch.seen else ""
                return bool(pids)

            deployment.wait_for(held_and_killed, 300, f"a write of {task_id} to be held")
            killed_at = time.time()
        finally:
            mesh_faults(deployment, writeLatencySeconds=0)

        def retried_and_done() -> bool:
            return deployment.task_states(DAG_ID, run_id).get(task_id) in ("success", "failed")

        deployment.wait_for(retried_and_done, 300, f"{task_id} to be retried to an end")
        return {"killed": killed, "killed_at": killed_at, "done_at": time.time(), **version}

    return inject


WORKER_FAULTS = [
    pytest.param("canary.step_2.set_weight", FAST, "success", {"v2": 100}, id="set_weight"),
    pytest.param("canary.promote", FAST, "success", {"v2": 100}, id="promote"),
    # A worse model fails the shadow phase, whose sensor runs in a worker: the rollback task
    # itself takes the mirror off (a FAIL at a weight step is rolled back by the trigger, and
    # the rollback task then finds nothing to write).
    pytest.param(
        "canary.rollback",
        {**FAST, "model_quality": "bad"},
        "failed",
        {"v1": 100},
        id="rollback",
    ),
]


@slow
@pytest.mark.parametrize(("task_id", "conf", "run_state", "final_split"), WORKER_FAULTS)
def test_worker_killed_during_a_traffic_write_is_retried_to_completion(
    airflow_deployment: Deployment,
    task_id: str,
    conf: dict[str, Any],
    run_state: str,
    final_split: dict[str, int],
) -> None:
    """The killed try fails by heartbeat timeout and its retry finishes the write; a watch on
    the VirtualService sees only whole states of the rollout, never a mixed one."""
    run = run_rollout(airflow_deployment, conf, kill_worker_of(task_id))
    assert run.fault["killed"], "no worker process was killed"
    assert run.tasks[task_id] == "success", run.tasks
    assert airflow_deployment.tries(DAG_ID, run.run_id, task_id) >= 2
    assert run.state == run_state, run.tasks
    assert run.splits[-1] == final_split
    assert_only_whole_states(run, conf["steps"])
    if task_id == "canary.rollback":
        # The killed try's held write may have been stored (the mesh stores it; kube-apiserver
        # may): then the retry finds the route rolled back and writes nothing.
        result = run.fault["xcom:canary.rollback"]
        assert result["split"] == {"v1": 100, "v2": 0}, result
        assert run.verdicts["canary.shadow.analyze"]["verdict"] == "FAIL"
        assert "mirror" not in json.loads(run.watch.seen[-1].http)[0]
    row = outcome(
        run,
        f"worker SIGKILL during {task_id.split('.')[-1]}",
        f"{task_id}: its VirtualService write in flight",
        run.fault["done_at"] - run.fault["killed_at"],
        f"test_worker_killed_during_a_traffic_write_is_retried_to_completion[{task_id}]",
    )
    record(row)
    assert not row.records_lost, row.records_checked


# -- the scheduler ------------------------------------------------------------------------------


def kill_scheduler_while_judging(deployment: Deployment, run_id: str, watch: RouteWatch) -> dict:
    """SIGKILL the scheduler (and its workers) while step 1 is judged in the triggerer; bring it
    back only after the route is on stable again."""

    def judging() -> bool:
        return deployment.task_states(DAG_ID, run_id).get(STEP_1) == "deferred"

    deployment.wait_for(judging, 600, "step 1's analysis to defer to the triggerer")
    killed_at = time.time()
    deployment.kill("scheduler")

    def on_stable() -> bool:
        return bool(watch.seen) and watch.seen[-1].split == {"v1": 100}

    deployment.wait_for(on_stable, 180, "the trigger to roll back with no scheduler")
    safe_at = watch.seen[-1].at
    # the rollback above happened with the scheduler down
    assert not deployment.components["scheduler"].alive()
    progress = deployment.xcom(DAG_ID, run_id, STEP_1, key="progress") or {}
    deployment.start("scheduler")
    return {"killed_at": killed_at, "safe_at": safe_at, "progress": progress}


@slow
def test_scheduler_down_at_a_fail_verdict_traffic_goes_back_to_stable_anyway(
    airflow_deployment: Deployment,
) -> None:
    """A canary with 10% errors is judged FAIL while no scheduler runs: the trigger sends all
    traffic back to v1 on its own; once the scheduler returns the run ends rolled back."""
    run = run_rollout(
        airflow_deployment, {**FAST_FAIL, "v2_error_rate": 0.1}, kill_scheduler_while_judging
    )
    verdict = run.verdicts[STEP_1]
    assert verdict["verdict"] == "FAIL"
    assert verdict["rolled_back_at"] is not None
    assert run.state == "failed", run.tasks
    assert run.tasks["canary.rollback"] == "success"
    assert run.tasks["canary.promote"] != "success"
    assert run.splits[-1] == {"v1": 100}
    assert run.canary_weights == [0, 20, 0]
    row = outcome(
        run,
        "scheduler SIGKILL (with its workers), restarted after the rollback",
        "step 1 (20%) analysis, before its FAIL verdict",
        run.fault["safe_at"] - run.fault["killed_at"],
        "test_scheduler_down_at_a_fail_verdict_traffic_goes_back_to_stable_anyway",
    )
    record(row)
    assert not row.records_lost, row.records_checked
