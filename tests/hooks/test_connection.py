"""The Kubernetes connection as the cncf provider reads it: both spellings of its extras, and
exec-plugin credentials that expire while a deferred wait runs."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from kubernetes_asyncio import client as async_k8s
from kubernetes_asyncio import config as async_config
from kubernetes_asyncio.client.exceptions import ApiException

from airflow_canary.hooks.istio import IstioForbiddenError, IstioHook
from airflow_canary.routing import RouteTarget, set_canary_weight
from airflow_canary.triggers.deploy import DeploymentReadyTrigger
from tests.fixtures.crds import ISTIO_CRDS_ENV, crd_dir
from tests.fixtures.mesh import Seeded, start_mesh

VERSION_SERVER = Path(__file__).resolve().parents[1] / "local" / "apps" / "version_server.py"
VS = "model-virtual-service"


@pytest.mark.parametrize("in_cluster", ["in_cluster", "extra__kubernetes__in_cluster"])
def test_in_cluster_extras_in_either_spelling_reach_the_api_server(
    seeded: Seeded, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_cluster: str
) -> None:
    """The pre-2.3 ``extra__kubernetes__`` spelling, which the provider still accepts, must not
    leave IstioHook with an empty host: both spellings read the pod's service account."""
    from kubernetes import client as k8s
    from kubernetes.config import incluster_config

    # in-cluster loading sets the process-wide default configuration: restore it afterwards
    monkeypatch.setattr(k8s.Configuration, "_default", k8s.Configuration._default)
    mesh = seeded.mesh
    # What a pod sees: the service host/port variables and the service account's files.
    host, port = mesh.api_url.removeprefix("https://").rsplit(":", 1)
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", host)
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", port)
    token = tmp_path / "token"
    token.write_text(mesh.token)
    monkeypatch.setattr(incluster_config, "SERVICE_TOKEN_FILENAME", str(token))
    monkeypatch.setattr(incluster_config, "SERVICE_CERT_FILENAME", str(mesh.ca_file))
    monkeypatch.setenv(
        "AIRFLOW_CONN_POD", json.dumps({"conn_type": "kubernetes", "extra": {in_cluster: True}})
    )
    hook = IstioHook(kubernetes_conn_id="pod")
    vs = hook.get_virtual_service(VS, seeded.namespace)
    assert vs["metadata"]["name"] == VS
    assert hook.api_client.configuration.host == mesh.api_url


@pytest.mark.parametrize("prefix", ["", "extra__kubernetes__"])
def test_kubeconfig_extras_in_either_spelling_read_the_same_context(
    seeded: Seeded, monkeypatch: pytest.MonkeyPatch, prefix: str
) -> None:
    extra = {
        f"{prefix}kube_config_path": str(seeded.mesh.kubeconfig),
        f"{prefix}cluster_context": "canary-mesh-viewer",
    }
    monkeypatch.setenv("AIRFLOW_CONN_K", json.dumps({"conn_type": "kubernetes", "extra": extra}))
    hook = IstioHook(kubernetes_conn_id="k")
    assert hook.get_virtual_service(VS, seeded.namespace)["metadata"]["name"] == VS
    # the viewer context was used: its user may read, not write
    with pytest.raises(IstioForbiddenError, match="forbidden: user canary-viewer cannot update"):
        hook.update_virtual_service(
            VS, seeded.namespace, lambda vs: set_canary_weight(vs, RouteTarget(), 10)
        )


def _slow_deployment() -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "model-v2"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "model"}},
            "template": {
                "metadata": {"labels": {"app": "model"}},
                "spec": {
                    "containers": [
                        {
                            "name": "server",
                            "image": "model:v2",
                            "command": [sys.executable, str(VERSION_SERVER), "v2"],
                            # loads for longer than a token lives
                            "env": [{"name": "START_DELAY", "value": "5"}],
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


def test_the_deferred_wait_outlives_its_exec_plugin_tokens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    with start_mesh(
        tmp_path / "mesh", crds=crd_dir(ISTIO_CRDS_ENV), extra_args=("--token-ttl", "2")
    ) as mesh:
        monkeypatch.setenv(
            "AIRFLOW_CONN_EXEC",
            json.dumps(
                {
                    "conn_type": "kubernetes",
                    "extra": {
                        "kube_config_path": str(mesh.kubeconfig),
                        "cluster_context": "canary-mesh-exec",
                    },
                }
            ),
        )
        for key, value in mesh.env.items():
            monkeypatch.setenv(key, value)

        async def one_client_for_the_whole_wait() -> int:
            # What a wait holding one client sees once its token expired.
            configuration = async_k8s.Configuration()
            await async_config.load_kube_config(
                config_file=str(mesh.kubeconfig),
                context="canary-mesh-exec",
                client_configuration=configuration,
            )
            async with async_k8s.ApiClient(configuration) as api:
                apps = async_k8s.AppsV1Api(api)
                await apps.list_namespaced_deployment("default")
                await asyncio.sleep(2.5)
                try:
                    await apps.list_namespaced_deployment("default")
                except ApiException as err:
                    return int(err.status)
                return 200

        assert asyncio.run(one_client_for_the_whole_wait()) == 401

        # Applied only now: its pod takes START_DELAY (5 s) to serve, so the wait below lasts
        # longer than a 2-second token by construction, and a ready event means it renewed.
        IstioHook().apply_object(_slow_deployment(), "default")
        trigger = DeploymentReadyTrigger(
            deployments=["model-v2"],
            namespace="default",
            deadline=time.time() + 90,
            poll_interval=0.5,
            kubernetes_conn_id="exec",
        )

        async def collect() -> list[dict[str, Any]]:
            return [event.payload async for event in trigger.run()]

        (event,) = asyncio.run(collect())
        assert event["status"] == "ready", event["message"]
