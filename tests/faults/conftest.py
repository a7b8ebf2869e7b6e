"""Fault-injection fixtures: Airflow's real components on the local stack, rollouts watched whole.

The slow fault tests (each runs a whole rollout on the real components, 2 to 3 minutes) run in
CI (``CI=true``) or when ``CANARY_FAULTS=1``, and are skipped by a plain ``make test``.
Every rollout here runs through the deployment's scheduler, LocalExecutor workers and triggerer
while a :class:`RouteWatch` records every version of the VirtualService.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.faults.route_watch import RouteWatch
from tests.fixtures.deployment import Deployment, airflow_deployment
from tests.fixtures.stack import FAST

__all__ = [
    "CLEAR_FAULTS",
    "Rollout",
    "airflow_deployment",
    "healthy_baseline",
    "mesh_faults",
    "run_rollout",
    "slow",
]

DAG_ID = "canary_rollout"
ROUTE = "model-virtual-service"
#: task states in which a finished run may leave a task
FINAL_TASK_STATES = frozenset({"success", "skipped", "failed", "upstream_failed"})

#: a fault test that runs a whole rollout on the real deployment: in CI, or when asked for
slow = pytest.mark.skipif(
    os.environ.get("CANARY_FAULTS") != "1" and os.environ.get("CI") != "true",
    reason="fault tests run whole rollouts on real Airflow: CI=true or CANARY_FAULTS=1 runs them",
)


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


@dataclass
class Rollout:
    """A finished run of the example DAG, what the route went through, and its records."""

    run_id: str
    state: str
    tasks: dict[str, str]
    verdicts: dict[str, dict[str, Any]]
    watch: RouteWatch
    fault: dict[str, Any] = field(default_factory=dict)

    @property
    def splits(self) -> list[dict[str, int]]:
        """The split of every version of the route seen, in order."""
        return [seen.split for seen in self.watch.seen]

    @property
    def canary_weights(self) -> list[int]:
        """The canary's weight through the run, each change once (a write of the header route
        leaves the weight as it was)."""
        weights: list[int] = []
        for split in self.splits:
            weight = split.get("v2", 0)
            if not weights or weights[-1] != weight:
                weights.append(weight)
        return weights

    def missing_records(self) -> tuple[list[str], str]:
        """What a finished run must have recorded and did not; and a sentence of what was checked.

        Checked: the run's final state; every task in a final state (none left running,
        queued, up for retry or deferred); a ``verdict`` XCom for every analysis that succeeded;
        the ``return_value`` of promote or rollback, whichever ran.
        """
        missing = []
        if self.state not in ("success", "failed"):
            missing.append(f"run state {self.state}")
        for task_id, state in sorted(self.tasks.items()):
            if state not in FINAL_TASK_STATES:
                missing.append(f"{task_id} left {state}")
        for task_id, state in self.tasks.items():
            if task_id.endswith(".analyze") and state == "success" and task_id not in self.verdicts:
                missing.append(f"{task_id} verdict")
        for task_id in ("canary.promote", "canary.rollback"):
            if self.tasks.get(task_id) == "success" and not self.fault.get(f"xcom:{task_id}"):
                missing.append(f"{task_id} result")
        checked = (
            "run state; every task final; verdict XCom of each analysis that ran; "
            "promote/rollback result XCom"
        )
        return missing, checked


def run_rollout(
    deployment: Deployment,
    conf: dict[str, Any],
    inject: Callable[[Deployment, str, RouteWatch], dict[str, Any]] | None = None,
    timeout: float = 900,
) -> Rollout:
    """Reset traffic, trigger ``canary_rollout`` with ``conf``, call
    ``inject(deployment, run_id, watch)`` (the fault; it returns what it did), then wait for the
    run to finish while watching the route."""
    deployment.stack.reset_traffic()
    with RouteWatch(deployment.stack.stack.api_client(), ROUTE) as watch:
        run_id = deployment.trigger(DAG_ID, conf)
        try:
            fault = inject(deployment, run_id, watch) if inject is not None else {}
            state = deployment.wait(DAG_ID, run_id, timeout)
        except BaseException:
            deployment.stop_run(DAG_ID, run_id)  # not into the next test
            raise
    tasks = deployment.task_states(DAG_ID, run_id)
    verdicts = {}
    for task_id in tasks:
        if task_id.endswith(".analyze"):
            verdict = deployment.xcom(DAG_ID, run_id, task_id, key="verdict")
            if verdict is not None:
                verdicts[task_id] = verdict
    for task_id in ("canary.promote", "canary.rollback"):
        fault[f"xcom:{task_id}"] = deployment.xcom(DAG_ID, run_id, task_id)
    return Rollout(run_id, state, tasks, verdicts, watch, fault)


@pytest.fixture(scope="package")
def healthy_baseline(airflow_deployment: Deployment) -> Iterator[Rollout]:
    """A healthy canary through 20/40/60/100% with 5-second bakes and no fault: the reference."""
    yield run_rollout(airflow_deployment, FAST)
