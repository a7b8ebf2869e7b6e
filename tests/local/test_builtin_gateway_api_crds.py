"""The mesh's built-in Gateway API CRDs: what the local stack applies when no folder is named.

A plain clone has no Gateway API CRDs beside it, so the package ships the v1.6.1 standard-channel
CRDs of the kinds a rollout needs (Gateway, HTTPRoute, ReferenceGrant), copied unchanged; with
``$CANARY_GATEWAY_API_CRDS`` set that folder is used instead, and the copies must match it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_canary.local.apiserver.crd_folder import GATEWAY_API_CRDS, read_crd_folder
from airflow_canary.local.tools.stack import StackConfig, default_gateway_api_crds_dir
from tests.conftest import EXAMPLE_MANIFESTS, seed_manifest
from tests.fixtures.mesh import start_mesh

pytestmark = pytest.mark.timeout(180)


def test_the_builtin_folder_holds_the_v1_6_1_standard_crds_a_rollout_needs() -> None:
    crds = {doc["spec"]["names"]["kind"]: doc for _path, doc in read_crd_folder(GATEWAY_API_CRDS)}
    assert sorted(crds) == ["Gateway", "HTTPRoute", "ReferenceGrant"]
    for crd in crds.values():
        annotations = crd["metadata"]["annotations"]
        assert annotations["gateway.networking.k8s.io/bundle-version"] == "v1.6.1"
        assert annotations["gateway.networking.k8s.io/channel"] == "standard"
    assert "Apache License" in (GATEWAY_API_CRDS / "LICENSE").read_text()


def test_the_stack_uses_the_builtin_crds_unless_a_folder_is_named(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("CANARY_GATEWAY_API_CRDS", raising=False)
    assert default_gateway_api_crds_dir() == GATEWAY_API_CRDS
    assert StackConfig(state_dir=tmp_path).gateway_api_crds_dir == GATEWAY_API_CRDS
    monkeypatch.setenv("CANARY_GATEWAY_API_CRDS", str(tmp_path))
    assert default_gateway_api_crds_dir() == tmp_path


def test_the_builtin_crds_are_unchanged_copies_of_the_named_release(
    gateway_api_crds_dir: Path,
) -> None:
    for path in sorted(GATEWAY_API_CRDS.glob("*.yaml")):
        assert path.read_bytes() == (gateway_api_crds_dir / path.name).read_bytes(), path.name


def test_a_mesh_started_with_the_builtin_crds_serves_the_example_httproute(
    tmp_path: Path,
) -> None:
    with start_mesh(tmp_path, crds=GATEWAY_API_CRDS) as mesh:
        for path in (
            seed_manifest("service-model-service"),
            EXAMPLE_MANIFESTS / "gateway-api" / "service-model-v1.yaml",
            EXAMPLE_MANIFESTS / "gateway-api" / "service-model-v2.yaml",
            EXAMPLE_MANIFESTS / "gateway-api" / "httproute-00-all-v1.yaml",
        ):
            result = mesh.kubectl("apply", "-f", str(path))
            assert result.returncode == 0, result.stderr
        got = mesh.kubectl("get", "httproute", "model-route", "-o", "json")
        assert got.returncode == 0, got.stderr
        rule = json.loads(got.stdout)["spec"]["rules"][0]
        assert [(b["name"], b["weight"]) for b in rule["backendRefs"]] == [
            ("model-v1", 100),
            ("model-v2", 0),
        ]
        bad = mesh.kubectl(
            "patch", "httproute", "model-route", "--type=json",
            "-p", '[{"op": "replace", "path": "/spec/rules/0/backendRefs/0/weight", "value": 1000001}]',
        )  # fmt: skip
        # The schema's own bound (maximum 1000000) is enforced from the built-in CRD.
        assert bad.returncode != 0 and "1000000" in bad.stderr, bad.stderr
