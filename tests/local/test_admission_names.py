"""Names and labels the mesh's API server refuses as kube-apiserver does (422 Invalid).

k8s.io/apimachinery/pkg/util/validation matches whole strings with Go's regexp, so a name with a
trailing newline is invalid; Service names are DNS-1035 labels (``ValidateServiceName``); label
keys are qualified names and label values at most 63 characters of ``[-A-Za-z0-9_.]``,
alphanumeric at both ends (``ValidateLabels``).
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fixtures.mesh import Mesh


def _create(mesh: Mesh, namespace: str, obj: dict[str, Any]) -> Any:
    kind = obj["kind"]
    path = {
        "Service": f"/api/v1/namespaces/{namespace}/services",
        "Namespace": "/api/v1/namespaces",
    }[kind]
    with mesh.http() as client:
        return client.post(path, json=obj)


def _service(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name}
    if labels is not None:
        metadata["labels"] = labels
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata,
        "spec": {"ports": [{"port": 80}], "selector": {"app": "model"}},
    }


@pytest.mark.parametrize(
    "obj",
    [
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml\n"}},
        _service("1model"),
        _service("model\n"),
        _service("model", {"version": "v2\n"}),
        _service("model", {"version": "v2 "}),
        _service("model", {"version": "x" * 64}),
        _service("model", {"bad key": "v2"}),
        _service("model", {"example.com/": "v2"}),
        _service("model", {"Example.com/version": "v2"}),
    ],
    ids=[
        "namespace-trailing-newline",
        "service-starts-with-digit",
        "service-trailing-newline",
        "label-value-newline",
        "label-value-space",
        "label-value-too-long",
        "label-key-space",
        "label-key-empty-name",
        "label-key-uppercase-prefix",
    ],
)
def test_invalid_names_and_labels_are_refused(
    mesh: Mesh, fresh_namespace: str, obj: dict[str, Any]
) -> None:
    answer = _create(mesh, fresh_namespace, obj)
    assert answer.status_code == 422, answer.text
    status = answer.json()
    assert status["reason"] == "Invalid", status
    fields = [cause["field"] for cause in status["details"]["causes"]]
    assert any(f == "metadata.name" or f.startswith("metadata.labels") for f in fields), fields


def test_valid_names_and_labels_are_stored(mesh: Mesh, fresh_namespace: str) -> None:
    labels = {"app.kubernetes.io/name": "model", "version": "v2.1_rc-1", "empty": ""}
    answer = _create(mesh, fresh_namespace, _service("model-v2", labels))
    assert answer.status_code == 201, answer.text
    assert answer.json()["metadata"]["labels"] == labels
