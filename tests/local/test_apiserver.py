"""The mesh's Kubernetes API through the real ``kubernetes`` client: every verb, every error shape."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from tests.conftest import seed_manifest
from tests.fixtures.mesh import Mesh, start_mesh

GROUP = "networking.istio.io"


def _seed(name: str) -> dict[str, Any]:
    return yaml.safe_load(seed_manifest(name).read_text())


@pytest.fixture(scope="module")
def api(mesh: Mesh) -> Iterator[client.ApiClient]:
    api_client = config.new_client_from_config(config_file=str(mesh.kubeconfig))
    yield api_client
    api_client.close()


@pytest.fixture
def custom(api: client.ApiClient) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


def _status(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def _create_vs(
    custom: client.CustomObjectsApi, ns: str, version: str = "v1alpha3"
) -> dict[str, Any]:
    body = _seed("vs-01-canary-1.yaml")
    body["apiVersion"] = f"{GROUP}/{version}"
    return custom.create_namespaced_custom_object(GROUP, version, ns, "virtualservices", body)


def test_custom_object_lifecycle_and_resource_versions(
    custom: client.CustomObjectsApi, fresh_namespace: str
) -> None:
    created = _create_vs(custom, fresh_namespace)
    assert created["metadata"]["namespace"] == fresh_namespace
    assert created["metadata"]["generation"] == 1
    name = created["metadata"]["name"]

    got = custom.get_namespaced_custom_object(
        GROUP, "v1alpha3", fresh_namespace, "virtualservices", name
    )
    assert got["spec"]["http"][0]["route"][1]["weight"] == 1

    got["spec"]["http"][0]["route"][0]["weight"] = 90
    got["spec"]["http"][0]["route"][1]["weight"] = 10
    replaced = custom.replace_namespaced_custom_object(
        GROUP, "v1alpha3", fresh_namespace, "virtualservices", name, got
    )
    assert replaced["metadata"]["resourceVersion"] != created["metadata"]["resourceVersion"]
    assert replaced["metadata"]["generation"] == 2

    patched = custom.patch_namespaced_custom_object(
        GROUP,
        "v1alpha3",
        fresh_namespace,
        "virtualservices",
        name,
        {"metadata": {"labels": {"step": "10"}}},
    )
    assert patched["metadata"]["labels"] == {"step": "10"}
    assert patched["metadata"]["generation"] == 2  # metadata-only change
    assert patched["metadata"]["resourceVersion"] != replaced["metadata"]["resourceVersion"]

    listed = custom.list_namespaced_custom_object(
        GROUP, "v1alpha3", fresh_namespace, "virtualservices", label_selector="step=10"
    )
    assert [i["metadata"]["name"] for i in listed["items"]] == [name]
    assert (
        custom.list_namespaced_custom_object(
            GROUP, "v1alpha3", fresh_namespace, "virtualservices", label_selector="step in (1,50)"
        )["items"]
        == []
    )
    by_field = custom.list_cluster_custom_object(
        GROUP, "v1", "virtualservices", field_selector=f"metadata.name={name}"
    )
    assert {i["metadata"]["namespace"] for i in by_field["items"]} >= {fresh_namespace}

    deleted = custom.delete_namespaced_custom_object(
        GROUP, "v1alpha3", fresh_namespace, "virtualservices", name
    )
    assert deleted["metadata"]["name"] == name
    with pytest.raises(ApiException) as missing:
        custom.get_namespaced_custom_object(
            GROUP, "v1alpha3", fresh_namespace, "virtualservices", name
        )
    assert missing.value.status == 404
    assert _status(missing.value)["reason"] == "NotFound"
    assert (
        f'virtualservices.networking.istio.io "{name}" not found'
        in _status(missing.value)["message"]
    )


def test_one_object_served_under_every_istio_version(
    custom: client.CustomObjectsApi, fresh_namespace: str
) -> None:
    created = _create_vs(custom, fresh_namespace, "v1beta1")
    name = created["metadata"]["name"]
    seen = {}
    for version in ("v1", "v1beta1", "v1alpha3"):
        obj = custom.get_namespaced_custom_object(
            GROUP, version, fresh_namespace, "virtualservices", name
        )
        assert obj["apiVersion"] == f"{GROUP}/{version}"
        seen[version] = (obj["metadata"]["uid"], obj["spec"])
    assert len(set(json.dumps(v, sort_keys=True) for v in seen.values())) == 1


def test_conflict_on_stale_replace_and_already_exists(
    custom: client.CustomObjectsApi, fresh_namespace: str
) -> None:
    created = _create_vs(custom, fresh_namespace)
    name = created["metadata"]["name"]
    custom.patch_namespaced_custom_object(
        GROUP,
        "v1alpha3",
        fresh_namespace,
        "virtualservices",
        name,
        {"spec": {"gateways": ["mesh"]}},
    )
    with pytest.raises(ApiException) as stale:
        custom.replace_namespaced_custom_object(
            GROUP, "v1alpha3", fresh_namespace, "virtualservices", name, created
        )
    assert stale.value.status == 409
    assert _status(stale.value)["reason"] == "Conflict"
    assert "the object has been modified" in _status(stale.value)["message"]

    with pytest.raises(ApiException) as exists:
        _create_vs(custom, fresh_namespace)
    assert exists.value.status == 409
    assert _status(exists.value)["reason"] == "AlreadyExists"


def test_json_patch_with_test_operation(
    custom: client.CustomObjectsApi, fresh_namespace: str
) -> None:
    name = _create_vs(custom, fresh_namespace)["metadata"]["name"]
    ops = [
        {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 1},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 10},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 90},
    ]
    json_patch = {"_content_type": "application/json-patch+json"}
    patched = custom.patch_namespaced_custom_object(
        GROUP, "v1", fresh_namespace, "virtualservices", name, ops, **json_patch
    )
    assert [r["weight"] for r in patched["spec"]["http"][0]["route"]] == [90, 10]
    with pytest.raises(ApiException) as failed:
        custom.patch_namespaced_custom_object(
            GROUP, "v1", fresh_namespace, "virtualservices", name, ops[:1], **json_patch
        )
    assert failed.value.status == 422


def test_strategic_merge_refused_on_istio_kinds(
    mesh: Mesh, fresh_namespace: str, custom: client.CustomObjectsApi
) -> None:
    name = _create_vs(custom, fresh_namespace)["metadata"]["name"]
    with mesh.http() as http:
        response = http.patch(
            f"/apis/{GROUP}/v1/namespaces/{fresh_namespace}/virtualservices/{name}",
            content=json.dumps({"spec": {"gateways": ["mesh"]}}),
            headers={"Content-Type": "application/strategic-merge-patch+json"},
        )
    assert response.status_code == 415
    assert response.json()["reason"] == "UnsupportedMediaType"


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (
            lambda vs: vs["spec"]["http"][0]["route"][0].update(weight="ten"),
            "spec.http[0].route[0].weight",
        ),
        (
            lambda vs: vs["spec"]["http"][0]["route"][1]["destination"].pop("host"),
            "spec.http[0].route[1].destination.host",
        ),
    ],
)
def test_invalid_virtual_service_is_422_naming_the_field(
    custom: client.CustomObjectsApi, fresh_namespace: str, mutate: Any, field: str
) -> None:
    body = _seed("vs-01-canary-1.yaml")
    mutate(body)
    with pytest.raises(ApiException) as rejected:
        custom.create_namespaced_custom_object(
            GROUP, "v1alpha3", fresh_namespace, "virtualservices", body
        )
    status = _status(rejected.value)
    assert rejected.value.status == 422
    assert status["reason"] == "Invalid"
    assert [c["field"] for c in status["details"]["causes"]] == [field]
    assert field in status["message"]


def test_dry_run_does_not_store(custom: client.CustomObjectsApi, fresh_namespace: str) -> None:
    body = _seed("vs-00-all-v1.yaml")
    body["apiVersion"] = f"{GROUP}/v1"
    custom.create_namespaced_custom_object(
        GROUP, "v1", fresh_namespace, "virtualservices", body, dry_run="All"
    )
    assert (
        custom.list_namespaced_custom_object(GROUP, "v1", fresh_namespace, "virtualservices")[
            "items"
        ]
        == []
    )


def test_core_and_apps_objects(api: client.ApiClient, fresh_namespace: str) -> None:
    core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
    svc = core.create_namespaced_service(fresh_namespace, _seed("service-model-service.yaml"))
    assert svc.spec.ports[0].target_port == 8080
    assert svc.spec.type == "ClusterIP"

    dep = apps.create_namespaced_deployment(fresh_namespace, _seed("deployment-model-v1.yaml"))
    assert dep.spec.replicas == 5
    # Strategic merge: containers merge by name, env is added, the image is kept.
    patched = apps.patch_namespaced_deployment(
        "model-v1",
        fresh_namespace,
        {
            "spec": {
                "template": {
                    "spec": {
                        "containers": [
                            {"name": "model-server", "env": [{"name": "MODEL", "value": "v1"}]}
                        ]
                    }
                }
            }
        },
    )
    container = patched.spec.template.spec.containers[0]
    assert (container.image, container.env[0].name) == ("your-docker-repo/model-runner:v1", "MODEL")
    assert patched.metadata.generation == 2

    scale = apps.patch_namespaced_deployment_scale(
        "model-v1", fresh_namespace, {"spec": {"replicas": 2}}
    )
    assert scale.spec.replicas == 2
    assert scale.status.selector == "app=model,version=v1"
    status = apps.patch_namespaced_deployment_status(
        "model-v1", fresh_namespace, {"status": {"replicas": 2, "readyReplicas": 1}}
    )
    assert status.status.ready_replicas == 1
    assert apps.read_namespaced_deployment("model-v1", fresh_namespace).spec.replicas == 2

    with pytest.raises(ApiException) as invalid:
        bad = _seed("deployment-model-v2.yaml")
        del bad["spec"]["selector"]
        bad["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "http"
        apps.create_namespaced_deployment(fresh_namespace, bad)
    fields = {c["field"] for c in _status(invalid.value)["details"]["causes"]}
    assert fields == {"spec.selector", "spec.template.spec.containers[0].ports[0].containerPort"}

    # Pods are the runner's; no Deployment selects version=v2 here.
    assert (
        core.list_namespaced_pod(fresh_namespace, label_selector="app=model,version=v2").items == []
    )
    deleted = apps.delete_namespaced_deployment("model-v1", fresh_namespace)
    assert deleted.status == "Success"
    with pytest.raises(ApiException) as gone:
        apps.read_namespaced_deployment("model-v1", fresh_namespace)
    assert gone.value.status == 404


def test_namespace_mismatch_and_missing_namespace(
    api: client.ApiClient, fresh_namespace: str
) -> None:
    core = client.CoreV1Api(api)
    body = _seed("service-model-service.yaml")
    body["metadata"]["namespace"] = "elsewhere"
    with pytest.raises(ApiException) as mismatch:
        core.create_namespaced_service(fresh_namespace, body)
    assert mismatch.value.status == 400
    with pytest.raises(ApiException) as missing:
        core.create_namespaced_service("no-such-namespace", _seed("service-model-service.yaml"))
    assert missing.value.status == 404


def test_requests_need_the_bearer_token(mesh: Mesh) -> None:
    with httpx.Client(base_url=mesh.api_url, verify=str(mesh.ca_file)) as anonymous:
        for headers in ({}, {"Authorization": "Bearer wrong"}):
            response = anonymous.get("/api/v1/namespaces", headers=headers)
            assert response.status_code == 401
            assert response.json() == {
                "kind": "Status",
                "apiVersion": "v1",
                "metadata": {},
                "status": "Failure",
                "message": "Unauthorized",
                "reason": "Unauthorized",
                "code": 401,
            }
    with mesh.http() as http:
        assert http.get("/api/v1/namespaces/default").json()["status"]["phase"] == "Active"


def test_discovery(mesh: Mesh) -> None:
    with mesh.http() as http:
        groups = {g["name"]: g for g in http.get("/apis").json()["groups"]}
        assert groups[GROUP]["preferredVersion"]["version"] == "v1"
        assert {v["version"] for v in groups[GROUP]["versions"]} >= {"v1", "v1beta1", "v1alpha3"}
        resources = {r["name"]: r for r in http.get(f"/apis/{GROUP}/v1alpha3").json()["resources"]}
        assert resources["virtualservices"]["shortNames"] == ["vs"]
        assert resources["destinationrules"]["kind"] == "DestinationRule"
        apps = {r["name"]: r for r in http.get("/apis/apps/v1").json()["resources"]}
        assert apps["deployments/scale"]["kind"] == "Scale"
        assert "patch" in apps["deployments"]["verbs"]


def test_watch_streams_changes(
    mesh: Mesh, fresh_namespace: str, custom: client.CustomObjectsApi
) -> None:
    name = _create_vs(custom, fresh_namespace)["metadata"]["name"]
    url = (
        f"/apis/{GROUP}/v1/namespaces/{fresh_namespace}/virtualservices?watch=true&timeoutSeconds=5"
    )
    with mesh.http() as http, http.stream("GET", url) as stream:
        lines = stream.iter_lines()
        first = json.loads(next(lines))
        assert (first["type"], first["object"]["metadata"]["name"]) == ("ADDED", name)
        custom.patch_namespaced_custom_object(
            GROUP,
            "v1",
            fresh_namespace,
            "virtualservices",
            name,
            {"metadata": {"labels": {"w": "1"}}},
        )
        second = json.loads(next(lines))
        assert second["type"] == "MODIFIED"
        assert second["object"]["metadata"]["labels"] == {"w": "1"}


def test_state_file_survives_restart(tmp_path: Path) -> None:
    state = tmp_path / "mesh-state.json"
    with start_mesh(tmp_path / "run", state_file=state) as first:
        api_client = config.new_client_from_config(config_file=str(first.kubeconfig))
        client.CustomObjectsApi(api_client).create_namespaced_custom_object(
            GROUP, "v1alpha3", "default", "virtualservices", _seed("vs-02-canary-10.yaml")
        )
        api_client.close()
    assert first.process.returncode == 0
    with start_mesh(tmp_path / "run", state_file=state) as second:
        # Same token and CA after a restart: a client built from the kubeconfig keeps working.
        assert second.token == first.token
        api_client = config.new_client_from_config(config_file=str(second.kubeconfig))
        vs = client.CustomObjectsApi(api_client).get_namespaced_custom_object(
            GROUP, "v1", "default", "virtualservices", "model-virtual-service"
        )
        api_client.close()
    assert [r["weight"] for r in vs["spec"]["http"][0]["route"]] == [90, 10]


def test_port_in_use_is_reported(tmp_path: Path) -> None:
    import socket
    import subprocess
    import sys

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "airflow_canary.cli",
                "mesh",
                "--api-port",
                str(port),
                "--kubeconfig",
                str(tmp_path / "kc"),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 1
    assert f"--api-port {port} is already in use" in result.stderr
