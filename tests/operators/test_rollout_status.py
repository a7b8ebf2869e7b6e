"""Readiness as ``kubectl rollout status`` judges it, against Deployment status as the real controller reports it.

The pure tests pin kubectl's ``DeploymentStatusViewer.Status``
(k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go); the mesh tests pin the Deployment
controller's ``calculateStatus``/``syncRolloutStatus`` (pkg/controller/deployment) through the
real ``kubernetes`` client, kubectl and the product's operator and trigger.
"""

from __future__ import annotations

import asyncio
import copy
import json
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from airflow.sdk.exceptions import AirflowException

from airflow_canary.hooks.istio import IstioHook
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.readiness import RolloutState, deployment_readiness
from airflow_canary.triggers.deploy import DeploymentReadyTrigger

VERSION_SERVER = Path(__file__).resolve().parents[1] / "local" / "apps" / "version_server.py"
PORT_ANNOTATION = "mesh.airflow-canary.io/port"


def _doc(generation: int, wanted: int, **status: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "model-v2", "generation": generation},
        "spec": {"replicas": wanted},
        "status": status,
    }


def test_a_template_change_with_only_old_pods_available_is_not_ready() -> None:
    # What a real server reports right after a template change: updatedReplicas is 0 and so
    # omitted (omitempty); availableReplicas counts the old ReplicaSet's pods.
    doc = _doc(3, 2, observedGeneration=3, replicas=2, availableReplicas=2)
    readiness = deployment_readiness(doc)
    assert readiness.state is RolloutState.PROGRESSING
    assert "0 out of 2 new replicas have been updated" in readiness.message


def test_each_step_of_kubectl_rollout_status() -> None:
    assert (
        "spec update to be observed"
        in deployment_readiness(_doc(4, 2, observedGeneration=3)).message
    )
    both = _doc(3, 2, observedGeneration=3, replicas=4, updatedReplicas=2, availableReplicas=2)
    assert "2 old replicas are pending termination" in deployment_readiness(both).message
    starting = _doc(3, 2, observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=1)
    assert "1 of 2 updated replicas are available" in deployment_readiness(starting).message
    done = _doc(3, 2, observedGeneration=3, replicas=2, updatedReplicas=2, availableReplicas=2)
    assert deployment_readiness(done).ready
    # scaled to zero: every integer is omitted, and that is a finished rollout
    assert deployment_readiness(_doc(2, 0, observedGeneration=2)).ready


def test_progress_deadline_exceeded_fails_with_the_conditions_message() -> None:
    doc = _doc(2, 1, observedGeneration=2, replicas=1, updatedReplicas=1)
    doc["status"]["conditions"] = [
        {
            "type": "Progressing",
            "status": "False",
            "reason": "ProgressDeadlineExceeded",
            "message": 'ReplicaSet "model-v2-abc" has timed out progressing.',
        }
    ]
    readiness = deployment_readiness(doc)
    assert readiness.failed and not readiness.ready
    assert readiness.message == (
        'deployment "model-v2" exceeded its progress deadline: '
        'ReplicaSet "model-v2-abc" has timed out progressing.'
    )


def _deployment(version: str, replicas: int = 2, **extra_env: str) -> dict[str, Any]:
    env = [{"name": "VERSION", "value": version}]
    env += [{"name": k, "value": v} for k, v in extra_env.items()]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model-v2"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "model", "version": "v2"}},
            "template": {
                "metadata": {"labels": {"app": "model", "version": "v2"}},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "model:v2",
                            "command": [sys.executable, str(VERSION_SERVER)],
                            "env": env,
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
        },
    }


@pytest.fixture
def connected(mesh: Any, fresh_namespace: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    return fresh_namespace


def _served_versions(hook: IstioHook, namespace: str) -> list[str]:
    """What each pod of model-v2 answers, asked on its own port."""
    versions = []
    for pod in hook.list_pods(namespace, "app=model,version=v2"):
        port = pod["metadata"]["annotations"][PORT_ANNOTATION]
        versions.append(httpx.get(f"http://127.0.0.1:{port}/", timeout=5).json()["version"])
    return versions


def test_redeploying_a_changed_template_is_ready_only_when_every_pod_serves_it(
    connected: str, mesh: Any
) -> None:
    """The example DAG re-applies model-v2 with a new model on every run: the wait must end only
    once the new template serves everywhere, while the old pods kept serving meanwhile."""
    namespace = connected
    first = DeployModelVersionOperator(
        task_id="deploy",
        manifest=_deployment("v2-model-a"),
        namespace=namespace,
        deferrable=False,
        timeout=60,
        poll_interval=0.2,
    )
    first.execute({})
    hook = IstioHook()
    assert _served_versions(hook, namespace) == ["v2-model-a", "v2-model-a"]

    # Watch the status the controller reports during the rollout, from a second client.
    seen: list[dict[str, Any]] = []
    stop = threading.Event()

    def watch() -> None:
        watcher = IstioHook()
        while not stop.is_set():
            seen.append(watcher.get_deployment("model-v2", namespace))
            time.sleep(0.1)

    thread = threading.Thread(target=watch)
    thread.start()
    try:
        second = DeployModelVersionOperator(
            task_id="deploy",
            manifest=_deployment("v2-model-b", START_DELAY="2"),
            namespace=namespace,
            deferrable=False,
            timeout=60,
            poll_interval=0.2,
        )
        second.execute({})
        versions_when_ready = _served_versions(hook, namespace)
    finally:
        stop.set()
        thread.join()
    assert versions_when_ready == ["v2-model-b", "v2-model-b"]

    # During the rollout the old pods were still counted available while the new ones started:
    # the state the previous readiness check took for "ready".
    mid = [
        d["status"]
        for d in seen
        if d["metadata"]["generation"] == 2
        and d["status"].get("observedGeneration") == 2
        and d["status"].get("replicas", 0) > d["status"].get("updatedReplicas", 0)
    ]
    assert mid, "the rollout was never observed with old pods pending termination"
    assert any(s.get("availableReplicas") == 2 for s in mid)
    assert all(not deployment_readiness(d).ready for d in seen if d["status"] in mid)
    # kubectl agrees that the rollout is finished
    run = mesh.kubectl("-n", namespace, "rollout", "status", "deployment/model-v2", "--timeout=10s")
    assert run.returncode == 0 and "successfully rolled out" in run.stdout, run.stderr


def _stuck(deadline: int) -> dict[str, Any]:
    dep = _deployment("v2", replicas=1)
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [sys.executable, "-c", "import sys; print('no model'); sys.exit(3)"]
    dep["spec"]["progressDeadlineSeconds"] = deadline
    return dep


def test_a_stuck_rollout_fails_at_once_when_its_progress_deadline_passes(
    connected: str, mesh: Any
) -> None:
    namespace = connected
    op = DeployModelVersionOperator(
        task_id="deploy",
        manifest=_stuck(2),
        namespace=namespace,
        deferrable=False,
        timeout=120,  # far longer than the deadline: the task must not wait it out
        poll_interval=0.2,
    )
    with pytest.raises(AirflowException) as err:
        op.execute({})
    message = str(err.value)
    assert message.startswith("rollout failed; no traffic was moved")
    assert 'deployment "model-v2" exceeded its progress deadline: ReplicaSet "model-v2-' in message
    assert "has timed out progressing." in message
    # each pod's state: the crashing container, never ready, restarted
    assert "pod model-v2-" in message and "ready=False restarts=" in message
    status = IstioHook().get_deployment("model-v2", namespace)["status"]
    progressing = {c["type"]: c for c in status["conditions"]}["Progressing"]
    assert (progressing["status"], progressing["reason"]) == ("False", "ProgressDeadlineExceeded")
    # kubectl fails the same rollout the same way
    run = mesh.kubectl("-n", namespace, "rollout", "status", "deployment/model-v2", "--timeout=10s")
    assert run.returncode != 0
    assert 'deployment "model-v2" exceeded its progress deadline' in run.stderr


def test_the_deferred_wait_reports_a_stuck_rollout_as_failed(connected: str) -> None:
    namespace = connected
    IstioHook().apply_object(_stuck(2), namespace)
    trigger = DeploymentReadyTrigger(
        deployments=["model-v2"], namespace=namespace, deadline=time.time() + 120, poll_interval=0.2
    )

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(collect())
    assert event["status"] == "failed"
    assert "exceeded its progress deadline" in event["message"]
    assert "pod model-v2-" in event["message"] and "restarts=" in event["message"]
    json.dumps(event)


def test_a_deployment_without_progress_deadline_default_gets_600(connected: str) -> None:
    dep = copy.deepcopy(_deployment("v2", replicas=1))
    created = IstioHook().apply_object(dep, connected).after
    # apps/v1 defaulting (SetDefaults_Deployment)
    assert created["spec"]["progressDeadlineSeconds"] == 600
    assert created["spec"]["revisionHistoryLimit"] == 10


def test_the_deferred_wait_retries_throttled_polls(connected: str, mesh: Any) -> None:
    """429s (API Priority and Fairness) during the wait are retried at the next poll."""
    namespace = connected
    IstioHook().apply_object(_deployment("v2", replicas=1), namespace)
    with mesh.http() as http:
        assert http.post("/_mesh/faults", json={"throttledRequests": 3}).status_code == 200
    trigger = DeploymentReadyTrigger(
        deployments=["model-v2"], namespace=namespace, deadline=time.time() + 60, poll_interval=0.2
    )

    async def collect() -> list[dict[str, Any]]:
        return [event.payload async for event in trigger.run()]

    (event,) = asyncio.run(collect())
    assert event["status"] == "ready", event["message"]
    with mesh.http() as http:
        assert http.get("/_mesh/faults").json()["throttledRequests"] == 0
