"""DeployModelVersionOperator and ScaleDeploymentOperator against the local mesh (real processes)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from airflow.sdk.exceptions import AirflowException

from airflow_canary.hooks.istio import IstioHook
from airflow_canary.manifests import ManifestError
from airflow_canary.operators.deploy import DeployModelVersionOperator, ScaleDeploymentOperator

VERSION_SERVER = Path(__file__).resolve().parents[1] / "local" / "apps" / "version_server.py"


def _deployment(command: list[str], replicas: int = 2) -> dict[str, Any]:
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
                            "command": command,
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


DESTINATION_RULE = {
    "apiVersion": "networking.istio.io/v1",
    "kind": "DestinationRule",
    "metadata": {"name": "model-destination"},
    "spec": {"host": "model-service", "subsets": [{"name": "v2", "labels": {"version": "v2"}}]},
}


@pytest.fixture
def connected(mesh: Any, fresh_namespace: str, monkeypatch: pytest.MonkeyPatch) -> str:
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    return fresh_namespace


def test_deploys_from_yaml_text_waits_until_ready_and_a_rerun_changes_nothing(
    connected: str,
) -> None:
    manifest = yaml.safe_dump_all(
        [_deployment([sys.executable, str(VERSION_SERVER), "v2"]), DESTINATION_RULE]
    )
    op = DeployModelVersionOperator(
        task_id="deploy",
        manifest=manifest,
        namespace=connected,
        deferrable=False,
        timeout=60,
        poll_interval=0.5,
    )
    result = op.execute({})
    assert result["deployments"] == ["model-v2"]
    assert [o["changed"] for o in result["objects"]] == [True, True]
    hook = IstioHook()
    deployment = hook.get_deployment("model-v2", connected)
    assert deployment["status"]["availableReplicas"] == 2
    before = deployment["metadata"]["resourceVersion"]

    again = op.execute({})
    assert [o["changed"] for o in again["objects"]] == [False, False]
    assert hook.get_deployment("model-v2", connected)["metadata"]["resourceVersion"] == before

    ScaleDeploymentOperator(
        task_id="scale", deployment="model-v2", namespace=connected, replicas=0
    ).execute({})
    assert hook.get_deployment("model-v2", connected)["spec"]["replicas"] == 0


def test_a_crashing_container_fails_with_the_pods_states(connected: str) -> None:
    crash = [sys.executable, "-c", "import sys; print('cannot load model'); sys.exit(3)"]
    op = DeployModelVersionOperator(
        task_id="deploy",
        manifest=_deployment(crash, replicas=1),
        namespace=connected,
        deferrable=False,
        timeout=6,
        poll_interval=0.5,
    )
    with pytest.raises(AirflowException) as err:
        op.execute({})
    message = str(err.value)
    assert "no traffic was moved" in message
    assert "0 of 1 updated replicas are available" in message
    assert "restarts=" in message and ("CrashLoopBackOff" in message or "Error" in message)


def test_a_manifest_without_a_deployment_fails_at_parse_time() -> None:
    with pytest.raises(
        ManifestError,
        match="must contain a Deployment; it holds DestinationRule 'model-destination'",
    ):
        DeployModelVersionOperator(task_id="deploy", manifest=DESTINATION_RULE)
    with pytest.raises(ValueError, match="timeout must be positive, got 0"):
        DeployModelVersionOperator(task_id="deploy", manifest=_deployment(["x"]), timeout=0)


def test_templated_manifest_is_checked_after_rendering() -> None:
    op = DeployModelVersionOperator(task_id="deploy", manifest="{{ params.manifest }}")
    assert op.manifest == "{{ params.manifest }}"


def test_a_manifest_file_is_read_when_the_task_renders_not_when_the_dag_is_parsed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import pendulum
    from airflow.sdk import DAG

    folder = tmp_path / "dags"
    folder.mkdir()
    manifest = yaml.safe_dump(_deployment(["serve"], replicas=1))
    (folder / "model-v2.yaml").write_text(
        manifest.replace("replicas: 1", "replicas: {{ params.n }}")
    )
    # Parsing from elsewhere must not try to open the relative path.
    monkeypatch.chdir(tmp_path)
    with DAG(
        "deploy_file",
        start_date=pendulum.datetime(2026, 1, 1),
        schedule=None,
        template_searchpath=[str(folder)],
        params={"n": 3},
    ):
        op = DeployModelVersionOperator(task_id="deploy", manifest="model-v2.yaml")
    assert op.template_ext == (".yaml", ".yml")
    assert op.template_fields_renderers == {"manifest": "yaml"}
    op.render_template_fields({"params": {"n": 3}})
    assert yaml.safe_load(op.manifest)["spec"]["replicas"] == 3


def test_deferrable_follows_the_operators_default_deferrable_setting(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    manifest = _deployment(["serve"])
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "False")
    assert DeployModelVersionOperator(task_id="d", manifest=manifest).deferrable is False
    monkeypatch.setenv("AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE", "True")
    assert DeployModelVersionOperator(task_id="d", manifest=manifest).deferrable is True
