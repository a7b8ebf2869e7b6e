"""kubectl applies and reads Gateway API objects on a mesh started with the Gateway API CRDs.

Pins kube-apiserver behaviour for CRD-backed kinds: the kinds exist once the CRDs are applied,
writes are validated against the CRD schema (422 naming the field), structural-schema defaults
are filled in (HTTPRoute ``backendRefs[].weight`` 1, a rule without ``matches`` gets a
``PathPrefix /`` match, parentRef ``group``/``kind`` defaults), and ``status`` is a subresource:
a write to the main resource keeps it, a write to ``/status`` changes only it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from tests.fixtures.mesh import Mesh, start_mesh

pytestmark = pytest.mark.timeout(180)

ROUTE = """
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: model-route
spec:
  parentRefs:
  - name: edge
  hostnames: [models.example.com]
  rules:
  - backendRefs:
    - name: model-v1
      port: 80
"""

GATEWAY = """
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: edge
spec:
  gatewayClassName: local
  listeners:
  - name: http
    port: 80
    protocol: HTTP
"""

GRANT = """
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata:
  name: routes-from-default
spec:
  from:
  - group: gateway.networking.k8s.io
    kind: HTTPRoute
    namespace: default
  to:
  - group: ""
    kind: Service
"""


@pytest.fixture(scope="module")
def gateway_mesh(tmp_path_factory: pytest.TempPathFactory, gateway_api_crds_dir: Path) -> Mesh:
    with start_mesh(tmp_path_factory.mktemp("gw-mesh"), crds=gateway_api_crds_dir) as mesh:
        yield mesh  # type: ignore[misc]


def _ok(mesh: Mesh, *args: str, input: str | None = None) -> str:
    result = mesh.kubectl(*args, input=input)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_kubectl_applies_and_reads_gateway_api_kinds_with_defaults(gateway_mesh: Mesh) -> None:
    resources = _ok(gateway_mesh, "api-resources", "--api-group=gateway.networking.k8s.io")
    for kind in ("HTTPRoute", "Gateway", "ReferenceGrant"):
        assert kind in resources
    _ok(gateway_mesh, "apply", "-f", "-", input=GATEWAY)
    _ok(gateway_mesh, "apply", "-f", "-", input=ROUTE)
    gateway_mesh.create_namespace("models")
    _ok(gateway_mesh, "apply", "-n", "models", "-f", "-", input=GRANT)
    route = json.loads(_ok(gateway_mesh, "get", "httproute", "model-route", "-o", "json"))
    parent = route["spec"]["parentRefs"][0]
    assert (parent["group"], parent["kind"]) == ("gateway.networking.k8s.io", "Gateway")
    rule = route["spec"]["rules"][0]
    assert rule["backendRefs"][0]["weight"] == 1
    assert rule["backendRefs"][0]["kind"] == "Service"
    assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": "/"}}]
    listed = _ok(gateway_mesh, "get", "httproutes")
    assert "model-route" in listed and "models.example.com" in listed
    assert "routes-from-default" in _ok(gateway_mesh, "get", "referencegrants", "-n", "models")
    # The defaults are stored: a client reading back and replacing sees no change.
    again = json.loads(_ok(gateway_mesh, "get", "httproute", "model-route", "-o", "json"))
    assert again["spec"] == route["spec"]


def test_invalid_weight_is_refused_naming_the_field(gateway_mesh: Mesh) -> None:
    doc = yaml.safe_load(ROUTE)
    doc["metadata"]["name"] = "too-heavy"
    doc["spec"]["rules"][0]["backendRefs"][0]["weight"] = 1_000_001
    result = gateway_mesh.kubectl("apply", "-f", "-", input=json.dumps(doc))
    assert result.returncode != 0
    assert "spec.rules[0].backendRefs[0].weight" in result.stderr, result.stderr
    assert "1000001" in result.stderr


def test_status_is_a_subresource(gateway_mesh: Mesh) -> None:
    _ok(gateway_mesh, "apply", "-f", "-", input=ROUTE)
    path = "/apis/gateway.networking.k8s.io/v1/namespaces/default/httproutes/model-route"
    status = {
        "parents": [
            {
                "parentRef": {
                    "group": "gateway.networking.k8s.io",
                    "kind": "Gateway",
                    "name": "edge",
                },
                "controllerName": "example.com/gateway-controller",
                "conditions": [
                    {
                        "type": "Accepted",
                        "status": "True",
                        "reason": "Accepted",
                        "message": "",
                        "lastTransitionTime": "2026-01-01T00:00:00Z",
                        "observedGeneration": 1,
                    }
                ],
            }
        ]
    }
    with gateway_mesh.http() as client:
        current = client.get(path).json()
        written = client.put(path + "/status", json={**current, "status": status})
        assert written.status_code == 200, written.text
        assert written.json()["status"] == status
        current = client.get(path).json()
        current["spec"]["rules"][0]["backendRefs"][0]["weight"] = 5
        current["status"] = {"parents": []}
        replaced = client.put(path, json=current).json()
        assert replaced["spec"]["rules"][0]["backendRefs"][0]["weight"] == 5
        assert replaced["status"] == status  # the main resource cannot write status
