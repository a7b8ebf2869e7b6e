"""DeployModelVersionOperator applies manifests by server-side apply: other owners' fields stay,
unknown fields fail before anything is written, and "changed" follows resourceVersion."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from airflow_canary.hooks.istio import (
    IstioApplyConflictError,
    IstioHook,
    IstioInvalidError,
    IstioNotFoundError,
)
from airflow_canary.operators.deploy import DeployModelVersionOperator

VERSION_SERVER = Path(__file__).resolve().parents[1] / "local" / "apps" / "version_server.py"


def _deployment(model: str, **spec: Any) -> dict[str, Any]:
    """model-v2 without replicas: the count is left to whoever scales it."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model-v2", "labels": {"app": "model"}},
        "spec": {
            "selector": {"matchLabels": {"app": "model", "version": "v2"}},
            "template": {
                "metadata": {"labels": {"app": "model", "version": "v2"}},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "model:v2",
                            "command": [sys.executable, str(VERSION_SERVER)],
                            "env": [{"name": "VERSION", "value": model}],
                            "resources": {"requests": {"cpu": 1, "memory": "1024Mi"}},
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {
                                "httpGet": {"path": "/healthz", "port": 8080},
                                "periodSeconds": 1,
                            },
                        }
                    ]
                },
            },
            **spec,
        },
    }


@pytest.fixture
def connected(mesh: Any, fresh_namespace: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    return fresh_namespace


def _deploy(namespace: str, manifest: Any, **kwargs: Any) -> dict[str, Any]:
    op = DeployModelVersionOperator(
        task_id="deploy",
        manifest=manifest,
        namespace=namespace,
        deferrable=False,
        timeout=90,
        poll_interval=0.3,
        **kwargs,
    )
    result: dict[str, Any] = op.execute({})
    return result


def test_an_autoscaled_count_and_other_tools_fields_survive_a_new_deploy(
    connected: str, mesh: Any
) -> None:
    ns = connected
    _deploy(ns, _deployment("model-a"))
    hook = IstioHook()
    assert hook.get_deployment("model-v2", ns)["spec"]["replicas"] == 1  # apps/v1 default
    # an autoscaler scales it, Argo CD labels it, someone restarts it
    for args in (
        ("scale", "deployment/model-v2", "--replicas=3"),
        ("label", "deployment/model-v2", "argocd.argoproj.io/instance=models"),
        ("rollout", "restart", "deployment/model-v2"),
    ):
        run = mesh.kubectl("-n", ns, *args)
        assert run.returncode == 0, run.stderr
    restarted = hook.get_deployment("model-v2", ns)
    restarted_at = restarted["spec"]["template"]["metadata"]["annotations"][
        "kubectl.kubernetes.io/restartedAt"
    ]

    result = _deploy(ns, _deployment("model-b"))
    assert result["objects"] == [{"kind": "Deployment", "name": "model-v2", "changed": True}]
    live = hook.get_deployment("model-v2", ns)
    assert live["spec"]["replicas"] == 3
    assert live["metadata"]["labels"] == {
        "app": "model",
        "argocd.argoproj.io/instance": "models",
    }
    template = live["spec"]["template"]
    assert template["metadata"]["annotations"]["kubectl.kubernetes.io/restartedAt"] == restarted_at
    assert template["spec"]["containers"][0]["env"] == [{"name": "VERSION", "value": "model-b"}]
    managers = {(e["manager"], e["operation"]) for e in live["metadata"]["managedFields"]}
    assert ("airflow-canary", "Apply") in managers
    assert not any(m == "OpenAPI-Generator" for m, _ in managers)
    assert live["status"]["updatedReplicas"] == 3 and live["status"]["availableReplicas"] == 3


def test_a_rerun_with_the_server_normalised_quantities_changes_nothing(connected: str) -> None:
    ns = connected
    first = _deploy(ns, _deployment("model-a"))
    assert first["objects"][0]["changed"] is True
    stored = IstioHook().get_deployment("model-v2", ns)
    resources = stored["spec"]["template"]["spec"]["containers"][0]["resources"]
    assert resources == {"requests": {"cpu": "1", "memory": "1Gi"}}
    again = _deploy(ns, _deployment("model-a"))
    assert again["objects"][0]["changed"] is False


def test_a_replica_count_someone_else_set_is_a_conflict_naming_them(
    connected: str, mesh: Any
) -> None:
    ns = connected
    _deploy(ns, _deployment("model-a", replicas=1))
    assert mesh.kubectl("-n", ns, "scale", "deployment/model-v2", "--replicas=2").returncode == 0
    with pytest.raises(IstioApplyConflictError) as err:
        _deploy(ns, _deployment("model-a", replicas=1), wait_for_ready=False)
    message = str(err.value)
    assert message.startswith(
        f"cannot apply Deployment 'model-v2' in namespace {ns!r}: other field managers own "
        "fields the manifest changes: .spec.replicas (owned by "
    )
    assert "force_conflicts=True" in message
    assert IstioHook().get_deployment("model-v2", ns)["spec"]["replicas"] == 2
    forced = _deploy(ns, _deployment("model-a", replicas=1), force_conflicts=True)
    assert forced["objects"][0]["changed"] is True
    assert IstioHook().get_deployment("model-v2", ns)["spec"]["replicas"] == 1


def test_a_misspelled_field_fails_naming_it_and_writes_nothing(connected: str) -> None:
    ns = connected
    typo = copy.deepcopy(_deployment("model-a"))
    typo["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {"periodSeconds": 1}
    with pytest.raises(IstioInvalidError) as err:
        _deploy(ns, typo)
    assert ".spec.template.spec.containers[0].readinesProbe: field not declared in schema" in str(
        err.value
    )
    with pytest.raises(IstioNotFoundError):
        IstioHook().get_deployment("model-v2", ns)
    json.dumps(str(err.value))
