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
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Rollout, run_rollout, slow
from tests.faults.outcomes import Outcome, record, split_of
from tests.faults.route_watch import RouteWatch
from tests.fixtures.deployment import Deployment
from tests.fixtures.stack import FAST

#: CANARY_POLL_INTERVAL_SECONDS in the stack's environment
POLL_SECONDS = 1.0
STEP_ANALYSES = ("canary.step_1.analyze", "canary.step_2.analyze", "canary.step_3.analyze")
CLEAR_FAULTS = {"errorFraction": 0, "rejectWritesSeconds": 0, "seed": 0}


def mesh_faults(deployment: Deployment, **faults: Any) -> dict[str, Any]:
    """Set (or with no arguments read) the mesh API server's injected faults, with the
    credentials and CA of the mesh's kubeconfig."""
    import ssl

    import httpx

    from airflow_canary.local.apiserver.kubeconfig import read_credentials

    credentials = read_credentials(deployment.stack.stack.kubeconfig)
    assert credentials is not None, "the mesh's kubeconfig has no credentials"
    with httpx.Client(
        base_url=credentials.server,
        headers={"Authorization": f"Bearer {credentials.token}"},
        verify=ssl.create_default_context(cadata=credentials.ca_pem.decode()),
        timeout=10,
    ) as http:
        answer = http.post("/_mesh/faults", json=faults) if faults else http.get("/_mesh/faults")
    answer.raise_for_status()
    state: dict[str, Any] = answer.json()
    return state


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
        final = final_split(deployment)
    finally:
        injected = mesh_faults(deployment, errorFraction=0)["injected"]
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
    """etcd without quorum for 20 s from the middle of step 1's bake: every write in that time
    fails with "etcdserver: request timed out" and the VirtualService does not change; the next
    weight change fails loudly, Airflow retries the task, and the rollout completes."""
    deployment = no_api_faults

    def inject(dep: Deployment) -> str:
        mesh_faults(dep, rejectWritesSeconds=20)
        return "every write rejected for 20 s"

    run, fault_at, finished_at = faulted_rollout(deployment, FAST, 20, inject)
    final = final_split(deployment)
    injected = mesh_faults(deployment)["injected"]
    record_outcome(
        "Kubernetes API: every write rejected for 20 s",
        "step 1 (20%) bake",
        run,
        fault_at,
        finished_at,
        "test_a_20_second_write_outage_mid_rollout_fails_loudly_then_the_retry_completes",
        final,
    )
    assert_finished_safely(run, FAST["steps"], final)
    assert run.state == "success", (run.tasks, run.verdicts)
    assert v2_path(run, final) == [0, 20, 40, 60, 100]
    # No version of the route was written during the outage.
    assert not [s for s in run.watch.seen if fault_at < s.at < fault_at + 19], run.watch.seen
    assert injected.get("reject-write", 0) >= 1, injected


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
    # A poll in the gap judges nothing: its queries failed (no check in its line), or, when a
    # late trigger replays it from Prometheus's history, the hole in the history gives no data
    # (no requests on either arm). Every poll but the last is INCONCLUSIVE.
    gap = [
        line for line in polls[1:] if line.count(" | ") == 2 or "requests canary=0 stable=0" in line
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
    """model-v2's pods break after 40 predictions each, a few seconds into the 10% step: the
    analysis says FAIL and the trigger rolls back within one poll after Prometheus sees the
    errors (the errors' first scrape, then the next poll decides)."""
    deployment = airflow_deployment
    conf = {
        "steps": [10, 40, 60, 100],
        "bake_time_seconds": 30,
        "v2_crash_after_requests": 40,
        "v2_crash_mode": mode,
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
    assert polls_after_errors <= 2, (verdict, errors_at, polls_after_errors)


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
