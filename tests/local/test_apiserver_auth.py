"""The mesh API's users and faults, as a real cluster shows them to the kubernetes client and kubectl:
RBAC 403s for a read-only user, 500s from an unreachable validating webhook, 429 throttling with
Retry-After, and short-lived tokens from an exec credential plugin that expire with 401."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.fixtures.crds import ISTIO_CRDS_ENV, crd_dir
from tests.fixtures.mesh import Seeded, start_mesh

VS = "model-virtual-service"


def _api(mesh: Any, context: str) -> k8s.ApiClient:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(mesh.kubeconfig), context=context, client_configuration=configuration
    )
    return k8s.ApiClient(configuration)


def _status(err: ApiException) -> dict[str, Any]:
    body: dict[str, Any] = json.loads(err.body)
    return body


def test_a_read_only_user_reads_but_every_write_is_forbidden(seeded: Seeded) -> None:
    mesh, ns = seeded.mesh, seeded.namespace
    custom = k8s.CustomObjectsApi(_api(mesh, "canary-mesh-viewer"))
    vs = custom.get_namespaced_custom_object("networking.istio.io", "v1", ns, "virtualservices", VS)
    before = vs["metadata"]["resourceVersion"]
    vs["spec"]["gateways"] = ["mesh"]
    with pytest.raises(ApiException) as err:
        custom.replace_namespaced_custom_object(
            "networking.istio.io", "v1", ns, "virtualservices", VS, vs
        )
    # pinned: apierrors.NewForbidden + the RBAC authorizer's forbiddenMessage
    assert err.value.status == 403
    status = _status(err.value)
    assert status["reason"] == "Forbidden"
    assert status["message"] == (
        f'virtualservices.networking.istio.io "{VS}" is forbidden: User "canary-viewer" cannot '
        f'update resource "virtualservices" in API group "networking.istio.io" in the namespace "{ns}"'
    )
    assert status["details"] == {
        "name": VS,
        "group": "networking.istio.io",
        "kind": "virtualservices",
    }
    with pytest.raises(ApiException) as err:
        k8s.CoreV1Api(_api(mesh, "canary-mesh-viewer")).delete_namespaced_service(
            "model-service", ns
        )
    assert "cannot delete resource" in _status(err.value)["message"]
    stored = seeded.stored()
    assert stored["metadata"]["resourceVersion"] == before and "gateways" not in stored["spec"]

    run = mesh.kubectl("--context", "canary-mesh-viewer", "-n", ns, "label", "vs", VS, "team=ml")
    assert run.returncode != 0
    assert "Error from server (Forbidden)" in run.stderr
    assert 'User "canary-viewer" cannot patch resource "virtualservices"' in run.stderr
    listed = mesh.kubectl("--context", "canary-mesh-viewer", "-n", ns, "get", "vs", "-o", "name")
    assert listed.returncode == 0 and f"virtualservice.networking.istio.io/{VS}" in listed.stdout


def _set_faults(mesh: Any, **faults: Any) -> dict[str, Any]:
    with mesh.http() as http:
        answer = http.post("/_mesh/faults", json=faults)
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


def test_an_unreachable_webhook_fails_istio_writes_with_500_until_it_is_back(
    seeded: Seeded,
) -> None:
    mesh, ns = seeded.mesh, seeded.namespace
    custom = k8s.CustomObjectsApi(_api(mesh, "canary-mesh"))
    vs = custom.get_namespaced_custom_object("networking.istio.io", "v1", ns, "virtualservices", VS)
    assert _set_faults(mesh, webhookFailures=2)["webhookFailures"] == 2
    for _ in range(2):
        with pytest.raises(ApiException) as err:
            custom.replace_namespaced_custom_object(
                "networking.istio.io", "v1", ns, "virtualservices", VS, vs
            )
        assert err.value.status == 500
        status = _status(err.value)
        assert status["reason"] == "InternalError"
        assert status["message"].startswith(
            'Internal error occurred: failed calling webhook "validation.istio.io": '
        )
    # reads and writes outside the webhook's groups were never affected
    written = custom.replace_namespaced_custom_object(
        "networking.istio.io", "v1", ns, "virtualservices", VS, vs
    )
    assert written["metadata"]["resourceVersion"] != vs["metadata"]["resourceVersion"]

    _set_faults(mesh, webhookFailures=1)
    run = mesh.kubectl("-n", ns, "label", "vs", VS, "team=ml")
    assert run.returncode != 0 and "failed calling webhook" in run.stderr
    assert mesh.kubectl("-n", ns, "label", "vs", VS, "team=ml").returncode == 0


def test_throttling_answers_429_with_retry_after(seeded: Seeded) -> None:
    mesh, ns = seeded.mesh, seeded.namespace
    _set_faults(mesh, throttledRequests=1, retryAfterSeconds=2)
    with mesh.http() as http:
        answer = http.get(f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/{VS}")
        assert answer.status_code == 429
        assert answer.headers["Retry-After"] == "2"
        assert answer.json()["reason"] == "TooManyRequests"
        assert answer.json()["details"] == {"retryAfterSeconds": 2}
        again = http.get(f"/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/{VS}")
        assert again.status_code == 200


def test_exec_plugin_tokens_work_until_they_expire(tmp_path: Path) -> None:
    with start_mesh(
        tmp_path / "mesh", crds=crd_dir(ISTIO_CRDS_ENV), extra_args=("--token-ttl", "2")
    ) as mesh:
        run = mesh.kubectl("--context", "canary-mesh-exec", "get", "namespaces", "-o", "name")
        assert run.returncode == 0 and "namespace/default" in run.stdout, run.stderr

        signer = mesh.state_dir / "tls" / "token-signer.json"
        plugin = subprocess.run(
            [sys.executable, "-m", "airflow_canary.local.apiserver.credential_plugin", str(signer)],
            capture_output=True,
            text=True,
            check=True,
        )
        credential = json.loads(plugin.stdout)
        assert credential["kind"] == "ExecCredential"
        assert credential["apiVersion"] == "client.authentication.k8s.io/v1"
        token = credential["status"]["token"]
        with httpx.Client(base_url=mesh.api_url, verify=str(mesh.ca_file)) as http:
            headers = {"Authorization": f"Bearer {token}"}
            assert http.get("/api/v1/namespaces", headers=headers).status_code == 200
            time.sleep(2.5)  # the token's lifetime is 2 s
            expired = http.get("/api/v1/namespaces", headers=headers)
            assert expired.status_code == 401 and expired.json()["reason"] == "Unauthorized"
            forged = token[:-4] + "0000"
            assert (
                http.get(
                    "/api/v1/namespaces", headers={"Authorization": f"Bearer {forged}"}
                ).status_code
                == 401
            )
        # the client runs the plugin again and carries on
        again = mesh.kubectl("--context", "canary-mesh-exec", "get", "namespaces", "-o", "name")
        assert again.returncode == 0, again.stderr
