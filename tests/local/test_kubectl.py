"""kubectl as an independent client of the mesh API: apply, get, patch, replace, delete, tables."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from tests.conftest import EXAMPLE_MANIFESTS, SEED_FLOW, seed_manifest
from tests.fixtures.crds import ISTIO_CRDS_ENV, crd_dir
from tests.fixtures.mesh import Mesh

VS = "model-virtual-service"


def _ok(result) -> str:  # type: ignore[no-untyped-def]
    assert result.returncode == 0, f"kubectl failed ({result.returncode}): {result.stderr}"
    return str(result.stdout)


def test_apply_seed_manifests_and_read_back(mesh: Mesh, fresh_namespace: str) -> None:
    ns = ("-n", fresh_namespace)
    out = _ok(mesh.kubectl("apply", *ns, "-f", str(EXAMPLE_MANIFESTS), "-f", str(SEED_FLOW)))
    assert "deployment.apps/model-v1 created" in out
    assert f"virtualservice.networking.istio.io/{VS} configured" in out  # vs-00 .. vs-05 in order

    vs = yaml.safe_load(_ok(mesh.kubectl("get", *ns, "virtualservices", "-o", "yaml")))["items"][0]
    assert vs["spec"]["http"][0]["match"][0]["headers"]["x-canary-version"] == {"exact": "v2"}

    _ok(mesh.kubectl("apply", *ns, "-f", str(seed_manifest("vs-02-canary-10.yaml"))))
    weights = _ok(
        mesh.kubectl("get", *ns, "vs", VS, "-o", "jsonpath={.spec.http[0].route[*].weight}")
    )
    assert weights.split() == ["90", "10"]

    table = _ok(mesh.kubectl("get", *ns, "vs"))
    header, row = table.splitlines()[:2]
    assert header.split() == ["NAME", "GATEWAYS", "HOSTS", "AGE"]
    assert row.split()[:2] == [VS, '["model-service"]']
    deploys = _ok(mesh.kubectl("get", *ns, "deploy")).splitlines()
    assert deploys[0].split() == ["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    assert {line.split()[0] for line in deploys[1:]} == {"model-v1", "model-v2"}
    pods = mesh.kubectl("get", *ns, "pods")
    assert pods.returncode == 0
    if pods.stdout.strip():  # pods exist once the runner has started replicas
        assert pods.stdout.splitlines()[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    dr = _ok(mesh.kubectl("get", *ns, "dr", "model-destination", "-o", "json"))
    # Written as v1alpha3, read through the group's preferred version, as on a real cluster.
    assert json.loads(dr)["apiVersion"] == "networking.istio.io/v1"


def test_patch_replace_conflict_and_delete(
    mesh: Mesh, fresh_namespace: str, tmp_path: Path
) -> None:
    ns = ("-n", fresh_namespace)
    _ok(mesh.kubectl("apply", *ns, "-f", str(seed_manifest("vs-01-canary-1.yaml"))))
    stale = _ok(mesh.kubectl("get", *ns, "vs", VS, "-o", "yaml"))

    _ok(
        mesh.kubectl("patch", *ns, "vs", VS, "--type=merge", "-p", '{"spec":{"gateways":["mesh"]}}')
    )
    ops = [
        {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 1},
        {"op": "replace", "path": "/spec/http/0/route/1/weight", "value": 50},
        {"op": "replace", "path": "/spec/http/0/route/0/weight", "value": 50},
    ]
    _ok(mesh.kubectl("patch", *ns, "vs", VS, "--type=json", "-p", json.dumps(ops)))
    got = json.loads(_ok(mesh.kubectl("get", *ns, "vs", VS, "-o", "json")))
    assert got["spec"]["gateways"] == ["mesh"]
    assert [r["weight"] for r in got["spec"]["http"][0]["route"]] == [50, 50]

    failed_test = mesh.kubectl("patch", *ns, "vs", VS, "--type=json", "-p", json.dumps(ops[:1]))
    assert failed_test.returncode != 0
    assert "testing value /spec/http/0/route/1/weight failed" in failed_test.stderr

    strategic = mesh.kubectl("patch", *ns, "vs", VS, "-p", '{"spec":{"gateways":[]}}')
    assert strategic.returncode != 0
    assert "strategic-merge-patch" in strategic.stderr

    stale_file = tmp_path / "stale.yaml"
    stale_file.write_text(stale)
    conflict = mesh.kubectl("replace", *ns, "-f", str(stale_file))
    assert conflict.returncode != 0
    assert "Conflict" in conflict.stderr and "the object has been modified" in conflict.stderr

    _ok(mesh.kubectl("delete", *ns, "-f", str(seed_manifest("vs-01-canary-1.yaml"))))
    missing = mesh.kubectl("get", *ns, "vs", VS)
    assert missing.returncode != 0
    assert "NotFound" in missing.stderr


def test_invalid_virtual_service_rejected_naming_the_field(
    mesh: Mesh, fresh_namespace: str
) -> None:
    vs = yaml.safe_load((seed_manifest("vs-01-canary-1.yaml")).read_text())
    vs["spec"]["http"][0]["route"][1]["weight"] = "ten"
    del vs["spec"]["http"][0]["route"][0]["destination"]["host"]
    result = mesh.kubectl("apply", "-n", fresh_namespace, "-f", "-", input=json.dumps(vs))
    assert result.returncode != 0
    assert "is invalid" in result.stderr
    assert 'spec.http[0].route[1].weight: must be integer, got "ten"' in result.stderr
    assert "spec.http[0].route[0].destination.host" in result.stderr


def test_crd_cel_rule_rejects_a_too_short_timeout(
    mesh: Mesh, fresh_namespace: str, istio_crds_dir: Path
) -> None:
    # The session mesh starts with $CANARY_ISTIO_CRDS applied; their CEL rules run on writes.
    vs = yaml.safe_load((seed_manifest("vs-00-all-v1.yaml")).read_text())
    vs["spec"]["http"][0]["timeout"] = (
        "0.5ms"  # the CRD's CEL rule: duration(self) >= duration('1ms')
    )
    result = mesh.kubectl("apply", "-n", fresh_namespace, "-f", "-", input=json.dumps(vs))
    assert result.returncode != 0
    assert "spec.http[0].timeout: must be a valid duration greater than 1ms" in result.stderr


def test_unknown_fields_are_refused_under_kubectl_strict_validation(
    mesh: Mesh, fresh_namespace: str, istio_crds_dir: Path
) -> None:
    # Known fields come from the applied CRD's schema (the built-in check knows only a few).
    vs = yaml.safe_load((seed_manifest("vs-00-all-v1.yaml")).read_text())
    vs["spec"]["htpp"] = []
    result = mesh.kubectl("apply", "-n", fresh_namespace, "-f", "-", input=json.dumps(vs))
    assert result.returncode != 0
    assert 'unknown field "spec.htpp"' in result.stderr


def test_scale_and_get_all(mesh: Mesh, fresh_namespace: str) -> None:
    ns = ("-n", fresh_namespace)
    _ok(mesh.kubectl("apply", *ns, "-f", str(seed_manifest("deployment-model-v2.yaml"))))
    _ok(mesh.kubectl("scale", *ns, "deployment/model-v2", "--replicas=1"))
    replicas = _ok(
        mesh.kubectl("get", *ns, "deploy", "model-v2", "-o", "jsonpath={.spec.replicas}")
    )
    assert replicas == "1"
    crds = _ok(mesh.kubectl("get", "crd", "-o", "name"))
    if crd_dir(ISTIO_CRDS_ENV) is not None:  # applied at start by `mesh --crds`
        assert (
            "customresourcedefinition.apiextensions.k8s.io/virtualservices.networking.istio.io"
            in crds
        )
