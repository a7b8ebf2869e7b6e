"""Faults of the infrastructure under a rollout: the Kubernetes API, Prometheus and model-v2.

Each test runs the example DAG on Airflow's real components (``airflow_deployment``), injects
one fault at a chosen point, asserts the outcome the product promises (no fault promotes a bad
canary, leaves traffic half-changed or loses a record) and appends its row to
``artifacts/fault-outcomes.jsonl`` (``python benchmarks/faults.py`` prints the table).

- The Kubernetes API faults come from the mesh's ``/_mesh/faults`` (answered as kube-apiserver
  answers them: 500 InternalError, 429 with Retry-After, dropped connections, and etcd's
  "request timed out" for every write while it has no quorum).
- "API server restart" restarts the whole mesh process with its state file: the mesh serves the
  API, the data plane and the pods in one process, so its restart is harsher than a
  kube-apiserver restart (pods and proxy restart too, counters start again from zero).
- Prometheus is SIGKILLed and restarted on the same port and storage (WAL replay).
- model-v2's pods break under load after a number of predictions.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import CLEAR_FAULTS, ROUTE, Rollout, mesh_faults, run_rollout, slow
from tests.faults.outcomes import Outcome, record, split_of
from tests.faults.route_watch import RouteWatch
from tests.fixtures.deployment import Deployment
from tests.fixtures.stack import FAST

#: CANARY_POLL_INTERVAL_SECONDS in the stack's environment
POLL_SECONDS = 1.0
STEP_ANALYSES = ("canary.step_1.analyze", "canary.step_2.analyze", "canary.step_3.analyze")


@pytest.fixture
def no_api_faults(airflow_deployment: Deployment) -> Iterator[Deployment]:
    """The deployment, with the mesh's injected faults cleared afterwards (the mesh is shared)."""
    try:
        yield airflow_deployment
    finally:
        mesh_faults(
            airflow_deployment,
            **CLEAR_FAULTS,
            errorKinds=["500", "429", "reset", "reset-after-write"],
        )


def at_weight(deployment: Deployment, watch: RouteWatch, weight: int, timeout: float = 900) -> None:
    """Wait until the route sends ``weight`` percent to v2 (the step's weight is written)."""
    deployment.wait_for(
        lambda: bool(watch.seen) and watch.seen[-1].split.get("v2", 0) == weight,
        timeout,
        f"v2 at {weight}%",
    )


def half_changed(run: Rollout, steps: list[int]) -> list[dict[str, int]]:
    """Splits seen that are no state of the rollout: the weights of a step, all-v1 or all-v2."""
    legal = {0, 100, *steps}
    return [
        split
        for split in run.splits
        if split
        and (split.get("v2", 0) not in legal or split.get("v1", 0) + split.get("v2", 0) != 100)
    ]


def seconds_to_safe(run: Rollout, fault_at: float, finished_at: float) -> float:
    """From the fault to the first state with all traffic on one version (the watcher's, or the
    trigger's rollback time), else to the run's end."""
    candidates = [finished_at]
    for seen in run.watch.seen:
        if seen.at >= fault_at and 100 in seen.split.values():
            candidates.append(seen.at)
            break
    for verdict in run.verdicts.values():
        if verdict.get("rolled_back_at"):
            rolled = verdict["rolled_back_at"].replace("Z", "+00:00")
            candidates.append(datetime.fromisoformat(rolled).timestamp())
    return round(max(0.0, min(candidates) - fault_at), 1)


def v2_path(run: Rollout, final: dict[str, int]) -> list[int]:
    """v2's weight in every state the route went through, the final one read from the API."""
    path: list[int] = []
    for weight in [*(s.get("v2", 0) for s in run.splits), final["v2"]]:
        if not path or path[-1] != weight:
            path.append(weight)
    return path


def final_split(deployment: Deployment) -> dict[str, int]:
    """The route's split read from the API after the run: the watcher may stop before the
    last write's event reaches it."""
    split = split_of(deployment.stack.stack.virtual_service())
    return {"v1": split.get("v1", 0), "v2": split.get("v2", 0)}


def verdict_of(run: Rollout, final: dict[str, int]) -> str:
    """The rollout's verdict: the last judged step's, with how the run ended."""
    judged = [run.verdicts[t]["verdict"] for t in STEP_ANALYSES if t in run.verdicts]
    if run.tasks.get("canary.promote") == "success":
        outcome = "promoted"
    elif run.state == "failed" and final.get("v2", 0) == 0:
        outcome = "rolled back"
    else:
        outcome = f"run {run.state}"
    return f"{judged[-1] if judged else '-'}, {outcome}"


def record_outcome(
    fault: str,
    injected_at: str,
    run: Rollout,
    fault_at: float,
    finished_at: float,
    test: str,
    final: dict[str, int],
) -> None:
    missing, checked = run.missing_records()
    record(
        Outcome(
            fault=fault,
            injected_at=injected_at,
            verdict=verdict_of(run, final),
            final_split=final,
            seconds_to_safe=seconds_to_safe(run, fault_at, finished_at),
            records_lost=bool(missing),
            records_checked=checked,
            test=test,
            run_id=run.run_id,
        )
    )


def faulted_rollout(
    deployment: Deployment,
    conf: dict[str, Any],
    weight: int,
    inject: Callable[[Deployment], str],
    delay: float = 0.0,
) -> tuple[Rollout, float, float]:
    """Run ``conf``; once v2 is at ``weight`` percent and ``delay`` seconds more, call
    ``inject(deployment)`` (the fault). The run, when the fault was injected (epoch seconds)
    and when the run finished."""
    times: dict[str, float] = {}

    def injector(dep: Deployment, run_id: str, watch: RouteWatch) -> dict[str, Any]:
        started["run_id"] = run_id
        try:
            at_weight(dep, watch, weight)
            time.sleep(delay)
            times["fault"] = time.time()
            what = inject(dep)
        except BaseException:
            stop_run(dep, run_id)
            raise
        return {"fault": what}

    started: dict[str, str] = {}
    try:
        # Generous: on a loaded 2-core machine a rollout's dozen tasks take minutes.
        run = run_rollout(deployment, conf, injector, timeout=900)
    except BaseException:
        if "run_id" in started:
            stop_run(deployment, started["run_id"])
        raise
    return run, times["fault"], time.time()


def stop_run(deployment: Deployment, run_id: str) -> None:
    """Mark a run failed: one left going would move the shared route under the next test."""
    with deployment.client() as api:
        api.patch(f"/dags/canary_rollout/dagRuns/{run_id}", json={"state": "failed"})


def assert_finished_safely(run: Rollout, steps: list[int], final: dict[str, int]) -> None:
    assert run.state in ("success", "failed"), run.tasks
    assert half_changed(run, steps) == []
    if run.state == "success":
        assert final == {"v1": 0, "v2": 100}
        assert run.tasks["canary.promote"] == "success"
    else:
        assert final == {"v1": 100, "v2": 0}, "a failed rollout ends with all traffic on stable"
    assert run.missing_records()[0] == []


# -- Kubernetes API faults ---------------------------------------------------------------------


@slow
@pytest.mark.timeout(1800)  # a whole rollout on a loaded 2-core machine
def test_30_percent_api_errors_mid_rollout_complete_within_the_retry_budget(
    no_api_faults: Deployment,
) -> None:
    """500s, 429s and dropped connections (before and after a stored write) on 30% of requests
    from step 1 on: every weight change and the promotion complete, traffic only moves forward."""
    deployment = no_api_faults

    def inject(dep: Deployment) -> str:
        mesh_faults(
            dep,
            errorFraction=0.3,
            errorKinds=["500", "429", "reset", "reset-after-write"],
            retryAfterSeconds=1,
            seed=16,
        )
        return "30% of API requests fail"

    fault_at = 0.0
    try:
        run, fault_at, finished_at = faulted_rollout(deployment, FAST, 20, inject)
    finally:
        injected = mesh_faults(deployment, errorFraction=0)["injected"]
    final = final_split(deployment)  # read once the faults are off: the test's own read
    record_outcome(
        "Kubernetes API: 30% of requests 500/429/reset",
        "step 1 (20%), to the end",
        run,
        fault_at,
        finished_at,
        "test_30_percent_api_errors_mid_rollout_complete_within_the_retry_budget",
        final,
    )
    # The faults happened, of several kinds.
    assert sum(injected.values()) >= 3 and len(injected) >= 2, injected
    assert_finished_safely(run, FAST["steps"], final)
    assert run.state == "success", (run.tasks, run.verdicts)
    assert v2_path(run, final) == [0, 20, 40, 60, 100]


@slow
@pytest.mark.timeout(1800)  # a whole rollout on a loaded 2-core machine
def test_a_20_second_write_outage_mid_rollout_fails_loudly_then_the_retry_completes(
    no_api_faults: Deployment,
) -> None:
    """etcd without quorum for 20 s from step 2's first write: every write in that time fails
    with "etcdserver: request timed out" and the VirtualService does not change; the weight
    change fails loudly, Airflow retries the task, and the rollout completes.

    The outage is armed during step 1's bake and begins with the next write (the mesh's
    ``rejectNextWritesSeconds``), so it meets the weight change however long the bake takes."""
    deployment = no_api_faults

    def inject(dep: Deployment) -> str:
        mesh_faults(dep, rejectNextWritesSeconds=20)
        return "every write rejected for 20 s from the next one"

    run, _, finished_at = faulted_rollout(deployment, FAST, 20, inject)
    final = final_split(deployment)
    faults = mesh_faults(deployment)
    outage_at = faults["rejectWritesStartedAt"]
    assert outage_at is not None, faults
    record_outcome(
        "Kubernetes API: every write rejected for 20 s",
        "step 2's weight change (40%)",
        run,
        outage_at,
        finished_at,
        "test_a_20_second_write_outage_mid_rollout_fails_loudly_then_the_retry_completes",
        final,
    )
    assert faults["rejectWritesStartedBy"].endswith("/virtualservices/" + ROUTE), faults
    assert faults["injected"].get("reject-write", 0) >= 1, faults
    assert_finished_safely(run, FAST["steps"], final)
    assert run.state == "success", (run.tasks, run.verdicts)
    assert v2_path(run, final) == [0, 20, 40, 60, 100]
    # No version of the route was written during the outage.
    assert not [s for s in run.watch.seen if outage_at < s.at < outage_at + 19], run.watch.seen


@slow
@pytest.mark.timeout(1800)  # a whole rollout on a loaded 2-core machine
def test_a_restarted_mesh_api_server_mid_rollout_lets_the_rollout_continue(
    airflow_deployment: Deployment,
) -> None:
    """The mesh is SIGKILLed in step 1's bake and started again with its state file on the same
    ports: the objects, their resourceVersions and the clients' credentials survive, and the
    rollout carries on to the promotion."""
    deployment = airflow_deployment

    def inject(dep: Deployment) -> str:
        before = dep.stack.stack.virtual_service()["metadata"]["resourceVersion"]
        dep.stack.stack.restart_mesh()
        after = dep.stack.stack.virtual_service()["metadata"]["resourceVersion"]
        assert after == before, "the restarted API server serves the stored object"
        return "mesh SIGKILLed and restarted"

    run, fault_at, finished_at = faulted_rollout(deployment, FAST, 20, inject)
    final = final_split(deployment)
    record_outcome(
        "Kubernetes API server (mesh) SIGKILLed and restarted with its state file",
        "step 1 (20%) bake",
        run,
        fault_at,
        finished_at,
        "test_a_restarted_mesh_api_server_mid_rollout_lets_the_rollout_continue",
        final,
    )
    assert_finished_safely(run, FAST["steps"], final)
    assert run.state == "success", (run.tasks, run.verdicts)
    assert v2_path(run, final) == [0, 20, 40, 60, 100]


# -- Prometheus ---------------------------------------------------------------------------------


@slow
@pytest.mark.timeout(1800)  # a whole rollout on a loaded 2-core machine
def test_prometheus_killed_mid_bake_gives_inconclusive_polls_and_judges_nothing_on_the_gap(
    airflow_deployment: Deployment,
) -> None:
    """Prometheus SIGKILLed two seconds into step 1's bake and started again after two more:
    the polls in the gap are INCONCLUSIVE (never PASS or FAIL on missing data), and the step
    either goes on to its verdict on the data after the gap, or fails once
    ``max_inconclusive_polls`` (3) polls in a row failed, with traffic back on stable."""
    deployment = airflow_deployment
    conf = {**FAST, "bake_time_seconds": 10}

    def inject(dep: Deployment) -> str:
        dep.stack.stack.kill_prometheus()
        time.sleep(2 * POLL_SECONDS)
        dep.stack.stack.start_prometheus()
        return "Prometheus SIGKILLed for 2 s, then restarted"

    run, fault_at, finished_at = faulted_rollout(
        deployment, conf, 20, inject, delay=2 * POLL_SECONDS
    )
    final = final_split(deployment)
    record_outcome(
        "Prometheus SIGKILLed mid-bake, restarted",
        "step 1 (20%) bake",
        run,
        fault_at,
        finished_at,
        "test_prometheus_killed_mid_bake_gives_inconclusive_polls_and_judges_nothing_on_the_gap",
        final,
    )
    assert_finished_safely(run, conf["steps"], final)
    first = run.verdicts["canary.step_1.analyze"]
    polls = poll_lines(deployment, run.run_id, "canary.step_1.analyze")
    # A poll in the gap judges nothing. Either its queries failed (no check in its line), or a
    # late trigger replays it from Prometheus's history, where the hole gives no new data: no
    # requests on either arm when the hole is at the baseline, otherwise the counts of the
    # poll before, unchanged (a SIGKILLed Prometheus writes no staleness markers, so an instant
    # query in the hole returns the last sample before it, up to 5 minutes old). Every poll
    # but the last is INCONCLUSIVE.
    counts = [re.search(r"requests canary=(\S+) stable=(\S+)", line) for line in polls]
    gap = [
        line
        for i, line in enumerate(polls[1:], start=1)
        if line.count(" | ") == 2
        or "requests canary=0 stable=0" in line
        or (counts[i] and counts[i - 1] and counts[i].groups() == counts[i - 1].groups())
    ]
    assert gap, f"no poll saw Prometheus down: {polls}"
    assert all(line.endswith("-> INCONCLUSIVE") for line in polls[:-1]), polls
    if first["verdict"] == "FAIL":
        assert "Prometheus failed 3 polls in a row" in first["reason"]
        assert run.state == "failed"
    else:
        assert first["verdict"] == "PASS"
        assert run.state == "success"


def poll_lines(deployment: Deployment, run_id: str, task_id: str) -> list[str]:
    """The trigger's "poll N ..." lines for one task of one run, from its trigger logs (JSON
    lines with the message in ``event``), in the order written."""
    folder = Path(deployment.env["AIRFLOW__LOGGING__BASE_LOG_FOLDER"])
    lines: list[str] = []
    for path in sorted(folder.glob(f"dag_id=*/run_id={run_id}/task_id={task_id}/*.trigger.*")):
        for line in path.read_text(errors="replace").splitlines():
            try:
                event = str(json.loads(line).get("event", ""))
            except (ValueError, AttributeError):
                continue
            if event.startswith("poll "):
                lines.append(event)
    return lines


# -- model-v2 -----------------------------------------------------------------------------------


@slow
@pytest.mark.timeout(1800)  # a whole rollout on a loaded 2-core machine
@pytest.mark.parametrize("mode", ["fail"])
def test_model_v2_crashing_under_load_at_10_percent_is_rolled_back_from_the_trigger(
    airflow_deployment: Deployment, mode: str
) -> None:
    """model-v2's pods break after 40 live predictions each, a few seconds into the 10% step:
    the analysis says FAIL and the trigger rolls back at that poll. Not within one poll of the
    errors: the canary's jump from 0% to 100% errors is weighed as overdispersion (which is what
    keeps a shared burst seen a poll early in the canary's scrape from failing an identical
    canary; docs/decision-quality.md), so the FAIL comes a few polls after the errors' first
    scrape (3 to 4 in the pure model of these counts, tests/analysis/test_canary.py)."""
    deployment = airflow_deployment
    conf = {
        "steps": [10, 40, 60, 100],
        "bake_time_seconds": 30,
        "v2_crash_after_requests": 40,
        "v2_crash_mode": mode,
        "v2_crash_on": "live",  # the shadow phase's mirrored copies do not count
    }

    def inject(dep: Deployment) -> str:
        return "model-v2 pods break after 40 predictions each"

    run, fault_at, finished_at = faulted_rollout(deployment, conf, 10, inject)
    final = final_split(deployment)
    errors_at = first_v2_errors(deployment, fault_at - 5, finished_at)
    record_outcome(
        f"model-v2 crashes under load ({mode})",
        "step 1 (10%)",
        run,
        errors_at or fault_at,
        finished_at,
        "test_model_v2_crashing_under_load_at_10_percent_is_rolled_back_from_the_trigger",
        final,
    )
    assert_finished_safely(run, conf["steps"], final)
    assert run.state == "failed"
    verdict = run.verdicts["canary.step_1.analyze"]
    assert verdict["verdict"] == "FAIL", verdict
    assert verdict["rolled_back_at"], "the trigger rolled back itself"
    assert v2_path(run, final) == [0, 10, 0]
    assert errors_at is not None, "Prometheus never saw v2's errors"
    # Polls are evaluated at started_at + (n - 1) * poll_interval on Prometheus's data (a late
    # trigger replays them), so count in polls, not in the machine's wall-clock: the poll that
    # decided FAIL is the first poll that could see the errors' first scrape, or the next one.
    decided = datetime.fromisoformat(verdict["decided_at"].replace("Z", "+00:00")).timestamp()
    started = decided - float(verdict["elapsed_seconds"])
    deciding_poll_at = started + (int(verdict["polls"]) - 1) * POLL_SECONDS
    polls_after_errors = (deciding_poll_at - errors_at) / POLL_SECONDS
    # Before the 30-poll bake ends: FAILed on the evidence, not at the bake's end. (5 to 7
    # polls on a quiet machine; up to 17.5 seen on a loaded one, where polls carry fewer
    # requests; docs/decision-quality.md.)
    assert polls_after_errors <= 25, (verdict, errors_at, polls_after_errors)
    rolled_back = datetime.fromisoformat(verdict["rolled_back_at"].replace("Z", "+00:00"))
    assert rolled_back.timestamp() >= decided - 1  # rolled back at the verdict, by the trigger


def first_v2_errors(deployment: Deployment, start: float, end: float) -> float | None:
    """When Prometheus first had a v2 5xx in Istio's telemetry (epoch seconds), or None."""
    import httpx

    response = httpx.get(
        f"{deployment.stack.stack.prometheus_url}/api/v1/query_range",
        params={
            "query": 'sum(istio_requests_total{reporter="destination",destination_version="v2",'
            'response_code=~"5.."})',
            "start": start,
            "end": end,
            "step": 0.5,
        },
        timeout=10,
    )
    response.raise_for_status()
    for series in response.json()["data"]["result"]:
        for at, value in series["values"]:
            if float(value) > 0:
                return float(at)
    return None
