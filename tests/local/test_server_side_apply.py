"""Server-side apply, field ownership, defaulting and quantity normalisation in the mesh API, as
kube-apiserver does them (sigs.k8s.io/structured-merge-diff; pkg/apis/apps/v1 and core/v1 defaults;
k8s.io/apimachinery resource.Quantity), through kubectl and the real kubernetes client."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException

from tests.fixtures.mesh import Mesh

APPLY = "application/apply-patch+yaml"


def _deployment(**spec: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "selector": {"matchLabels": {"app": "web"}},
        "template": {
            "metadata": {"labels": {"app": "web"}},
            "spec": {
                "containers": [
                    {
                        "name": "web",
                        "image": "web:1.0",
                        "command": ["sleep", "3600"],
                        "resources": {"requests": {"cpu": 1, "memory": "1024Mi"}},
                    }
                ]
            },
        },
    }
    base.update(spec)
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": base,
    }


def _apps(mesh: Mesh) -> k8s.AppsV1Api:
    configuration = k8s.Configuration()
    k8s_config.load_kube_config(
        config_file=str(mesh.kubeconfig), client_configuration=configuration
    )
    return k8s.AppsV1Api(k8s.ApiClient(configuration))


def _raw(response: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(response.data)
    return loaded


def _apply(
    apps: k8s.AppsV1Api, ns: str, body: dict[str, Any], manager: str, force: bool = False
) -> dict[str, Any]:
    return _raw(
        apps.patch_namespaced_deployment(
            "web",
            ns,
            body,
            field_manager=manager,
            force=force,
            field_validation="Strict",
            _content_type=APPLY,
            _preload_content=False,
        )
    )


def _wait_status(
    apps: k8s.AppsV1Api, ns: str, predicate: Any, timeout: float = 20
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while True:
        live = _raw(apps.read_namespaced_deployment("web", ns, _preload_content=False))
        status = live.get("status") or {}
        if status.get("observedGeneration") == live["metadata"]["generation"] and predicate(status):
            time.sleep(0.5)  # the controller's next resync must find nothing to write
            again = _raw(apps.read_namespaced_deployment("web", ns, _preload_content=False))
            if again["metadata"]["resourceVersion"] == live["metadata"]["resourceVersion"]:
                return again
        if time.monotonic() > deadline:
            raise AssertionError(f"status never settled: {status}")
        time.sleep(0.2)


def _owners(obj: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(e["manager"], e["operation"]): e["fieldsV1"] for e in obj["metadata"]["managedFields"]}


def test_apply_creates_defaults_normalises_and_records_ownership(
    mesh: Mesh, fresh_namespace: str
) -> None:
    apps = _apps(mesh)
    created = _apply(apps, fresh_namespace, _deployment(), "airflow-canary")
    spec = created["spec"]
    # apps/v1 and core/v1 defaulting
    assert spec["replicas"] == 1 and spec["progressDeadlineSeconds"] == 600
    assert spec["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
    }
    pod = spec["template"]["spec"]
    assert pod["restartPolicy"] == "Always" and pod["dnsPolicy"] == "ClusterFirst"
    assert pod["terminationGracePeriodSeconds"] == 30
    container = pod["containers"][0]
    assert container["imagePullPolicy"] == "IfNotPresent"
    assert container["terminationMessagePath"] == "/dev/termination-log"
    # quantities in canonical form
    assert container["resources"]["requests"] == {"cpu": "1", "memory": "1Gi"}
    # the applier owns what it applied, not the server's defaults
    (entry,) = created["metadata"]["managedFields"]
    assert (entry["manager"], entry["operation"], entry["fieldsType"]) == (
        "airflow-canary",
        "Apply",
        "FieldsV1",
    )
    fields = entry["fieldsV1"]
    assert (
        "f:replicas" not in fields["f:spec"] and "f:progressDeadlineSeconds" not in fields["f:spec"]
    )
    containers = fields["f:spec"]["f:template"]["f:spec"]["f:containers"]
    assert set(containers) == {'k:{"name":"web"}'}
    assert "f:image" in containers['k:{"name":"web"}'] and "." in containers['k:{"name":"web"}']

    # the same apply again changes nothing, not even resourceVersion (once the controller's
    # status writes, which do bump it, have settled: scaled to 0 nothing runs)
    apps.patch_namespaced_deployment_scale("web", fresh_namespace, {"spec": {"replicas": 0}})
    settled = _wait_status(apps, fresh_namespace, lambda s: "replicas" not in s)
    again = _apply(apps, fresh_namespace, _deployment(), "airflow-canary")
    assert again["metadata"]["resourceVersion"] == settled["metadata"]["resourceVersion"]


def test_a_field_another_manager_owns_conflicts_and_an_omitted_one_is_left_alone(
    mesh: Mesh, fresh_namespace: str
) -> None:
    apps = _apps(mesh)
    ns = fresh_namespace
    _apply(apps, ns, _deployment(replicas=2), "airflow-canary")
    # an autoscaler sets the count through the scale subresource
    scaled = mesh.kubectl("-n", ns, "scale", "deployment/web", "--replicas=5")
    assert scaled.returncode == 0, scaled.stderr
    live = _raw(apps.read_namespaced_deployment("web", ns, _preload_content=False))
    scale_owner = [e for e in live["metadata"]["managedFields"] if e.get("subresource") == "scale"]
    assert scale_owner and scale_owner[0]["fieldsV1"] == {"f:spec": {"f:replicas": {}}}
    # the applier no longer owns spec.replicas: the scaler took it over
    assert "f:replicas" not in _owners(live)[("airflow-canary", "Apply")]["f:spec"]
    manager = scale_owner[0]["manager"]

    with pytest.raises(ApiException) as err:
        _apply(apps, ns, _deployment(replicas=2), "airflow-canary")
    assert err.value.status == 409
    status = json.loads(err.value.body)
    assert status["message"] == (
        f'Apply failed with 1 conflict: conflict with "{manager}" using apps/v1: .spec.replicas'
    )
    assert status["details"]["causes"] == [
        {
            "reason": "FieldManagerConflict",
            "message": f'conflict with "{manager}" using apps/v1',
            "field": ".spec.replicas",
        }
    ]
    # without replicas in the manifest the scaler's count stays
    kept = _apply(apps, ns, _deployment(), "airflow-canary")
    assert kept["spec"]["replicas"] == 5
    # force takes the field over
    forced = _apply(apps, ns, _deployment(replicas=2), "airflow-canary", force=True)
    assert forced["spec"]["replicas"] == 2
    assert "f:replicas" in _owners(forced)[("airflow-canary", "Apply")]["f:spec"]


def test_fields_dropped_from_the_applied_manifest_are_removed(
    mesh: Mesh, fresh_namespace: str
) -> None:
    apps = _apps(mesh)
    with_label = _deployment()
    with_label["metadata"]["labels"]["tier"] = "model"
    _apply(apps, fresh_namespace, with_label, "airflow-canary")
    # a label another tool added survives; the one we stopped applying goes
    labelled = mesh.kubectl("-n", fresh_namespace, "label", "deployment/web", "owner=ml-team")
    assert labelled.returncode == 0, labelled.stderr
    after = _apply(apps, fresh_namespace, _deployment(), "airflow-canary")
    assert after["metadata"]["labels"] == {"app": "web", "owner": "ml-team"}


def test_apply_rejects_unknown_fields_naming_them(mesh: Mesh, fresh_namespace: str) -> None:
    apps = _apps(mesh)
    typo = _deployment()
    typo["spec"]["template"]["spec"]["containers"][0]["imagePullPolicyy"] = "Always"
    with pytest.raises(ApiException) as err:
        _apply(apps, fresh_namespace, typo, "airflow-canary")
    assert err.value.status == 400
    assert (
        ".spec.template.spec.containers[0].imagePullPolicyy: field not declared in schema"
        in json.loads(err.value.body)["message"]
    )


def test_kubectl_server_side_apply_and_its_conflicts(mesh: Mesh, fresh_namespace: str) -> None:
    ns = ("-n", fresh_namespace)
    manifest = yaml.safe_dump(_deployment(replicas=2))
    first = mesh.kubectl(*ns, "apply", "--server-side", "-f", "-", input=manifest)
    assert first.returncode == 0 and "serverside-applied" in first.stdout, first.stderr
    other = yaml.safe_dump(_deployment(replicas=3))
    clash = mesh.kubectl(
        *ns, "apply", "--server-side", "--field-manager=someone-else", "-f", "-", input=other
    )
    assert clash.returncode != 0
    assert 'conflict with "kubectl" using apps/v1: .spec.replicas' in clash.stderr
    forced = mesh.kubectl(
        *ns,
        "apply",
        "--server-side",
        "--field-manager=someone-else",
        "--force-conflicts",
        "-f",
        "-",
        input=other,
    )
    assert forced.returncode == 0, forced.stderr
    replicas = mesh.kubectl(*ns, "get", "deploy", "web", "-o", "jsonpath={.spec.replicas}")
    assert replicas.stdout == "3"
