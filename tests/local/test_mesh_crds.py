"""``airflow-canary mesh --crds DIR``: CRDs applied at start through the API, then enforced.

Pins kube-apiserver behaviour: a kind exists only once its CRD is applied (404 before), objects
are validated against the CRD's openAPIV3Schema (422 naming the field), and a CRD already
stored (state file) is replaced by the folder's version.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from airflow_canary.local.apiserver.crd_folder import CRDFolderError, read_crd_folder
from tests.conftest import seed_manifest
from tests.fixtures.mesh import start_mesh


def _widget_crd(max_size: int) -> dict[str, Any]:
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "widgets.example.com"},
        "spec": {
            "group": "example.com",
            "scope": "Namespaced",
            "names": {"plural": "widgets", "singular": "widget", "kind": "Widget"},
            "versions": [
                {
                    "name": "v1",
                    "served": True,
                    "storage": True,
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "spec": {
                                    "type": "object",
                                    "required": ["size"],
                                    "properties": {
                                        "size": {
                                            "type": "integer",
                                            "minimum": 0,
                                            "maximum": max_size,
                                        }
                                    },
                                }
                            },
                        }
                    },
                }
            ],
        },
    }


def _widget(size: Any) -> dict[str, Any]:
    return {
        "apiVersion": "example.com/v1",
        "kind": "Widget",
        "metadata": {"name": "w"},
        "spec": {"size": size},
    }


def _write(directory: Path, *docs: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "crds.yaml").write_text(yaml.safe_dump_all(docs))
    return directory


def test_crds_from_a_folder_are_served_and_enforced(tmp_path: Path) -> None:
    crds = _write(tmp_path / "crds", _widget_crd(max_size=10))
    with start_mesh(tmp_path / "mesh", crds=crds) as mesh:
        api = config.new_client_from_config(config_file=str(mesh.kubeconfig))
        custom = client.CustomObjectsApi(api)
        created = custom.create_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", _widget(3)
        )
        assert created["spec"] == {"size": 3}
        with pytest.raises(ApiException) as refused:
            custom.create_namespaced_custom_object(
                "example.com",
                "v1",
                "default",
                "widgets",
                {**_widget(11), "metadata": {"name": "x"}},
            )
        assert refused.value.status == 422
        assert "spec.size" in refused.value.body
        names = mesh.kubectl("get", "crd", "-o", "name").stdout
        assert "customresourcedefinition.apiextensions.k8s.io/widgets.example.com" in names
        api.close()


def test_without_the_crd_the_kind_does_not_exist(tmp_path: Path) -> None:
    with start_mesh(tmp_path / "mesh") as mesh:
        api = config.new_client_from_config(config_file=str(mesh.kubeconfig))
        with pytest.raises(ApiException) as missing:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "example.com", "v1", "default", "widgets", _widget(3)
            )
        assert missing.value.status == 404
        api.close()


def test_a_stored_crd_is_replaced_by_the_folders_version(tmp_path: Path) -> None:
    state = tmp_path / "state.json"
    with start_mesh(
        tmp_path / "mesh", state_file=state, crds=_write(tmp_path / "a", _widget_crd(10))
    ):
        pass
    newer = _write(tmp_path / "b", _widget_crd(100))
    with start_mesh(tmp_path / "mesh", state_file=state, crds=newer) as mesh:
        api = config.new_client_from_config(config_file=str(mesh.kubeconfig))
        created = client.CustomObjectsApi(api).create_namespaced_custom_object(
            "example.com", "v1", "default", "widgets", _widget(50)
        )
        assert created["spec"] == {"size": 50}
        api.close()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "is not a folder"),
        ("", "holds no *.yaml"),
        (
            "apiVersion: v1\nkind: ConfigMap\n",
            "expected apiextensions.k8s.io/v1 CustomResourceDefinition",
        ),
        ("a: [unclosed\n", "crds.yaml"),
    ],
)
def test_a_bad_crd_folder_stops_the_mesh_naming_it(
    tmp_path: Path, content: str | None, message: str
) -> None:
    folder = tmp_path / "crds"
    if content is not None:
        folder.mkdir()
        if content:
            (folder / "crds.yaml").write_text(content)
    with pytest.raises(CRDFolderError, match=r".*" + message.replace("*", r"\*")):
        read_crd_folder(folder)
    result = subprocess.run(
        [sys.executable, "-m", "airflow_canary.cli", "mesh", "--api-port", "0",
         "--kubeconfig", str(tmp_path / "kc"), "--crds", str(folder)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2
    assert "--crds" in result.stderr and message in result.stderr
    assert str(folder) in result.stderr


def test_istio_crds_folder_validates_istio_objects(tmp_path: Path, istio_crds_dir: Path) -> None:
    with start_mesh(tmp_path / "mesh", crds=istio_crds_dir) as mesh:
        vs = yaml.safe_load(seed_manifest("vs-00-all-v1").read_text())
        vs["spec"]["http"][0]["timeout"] = "0.5ms"  # the CRD's CEL rule: >= 1ms
        api = config.new_client_from_config(config_file=str(mesh.kubeconfig))
        with pytest.raises(ApiException) as refused:
            client.CustomObjectsApi(api).create_namespaced_custom_object(
                "networking.istio.io", "v1alpha3", "default", "virtualservices", vs
            )
        assert refused.value.status == 422
        assert "spec.http[0].timeout" in refused.value.body
        api.close()
