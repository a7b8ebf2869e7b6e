"""The mesh API's exposure: it listens on loopback only and answers 401 to every request without
its token, reads, watches and writes alike, as kube-apiserver does with anonymous requests
outside the public discovery paths (``system:public-info-viewer``: /version, /healthz, /livez,
/readyz)."""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

import httpx
import psutil
import pytest

from tests.fixtures.mesh import VIRTUAL_SERVICE, Mesh, Seeded

VS_PATH = "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices"


def _listening(pid: int) -> list[tuple[str, int, int]]:
    """(address, port, pid) of every listening TCP socket of ``pid`` and its descendants."""
    root = psutil.Process(pid)
    found = []
    for process in (root, *root.children(recursive=True)):
        try:
            connections = process.net_connections(kind="inet")
        except psutil.NoSuchProcess:
            continue
        found += [
            (c.laddr.ip, c.laddr.port, process.pid)
            for c in connections
            if c.status == psutil.CONN_LISTEN
        ]
    return found


def _api_port(mesh: Mesh) -> int:
    return int(mesh.api_url.rsplit(":", 1)[1])


def _non_loopback_address() -> str | None:
    """An address of this machine that is not loopback, when it has one."""
    for addresses in psutil.net_if_addrs().values():
        for address in addresses:
            if (
                address.family == socket.AF_INET
                and not ipaddress.ip_address(address.address).is_loopback
            ):
                return str(address.address)
    return None


def test_every_port_of_the_mesh_listens_on_loopback_only(seeded: Seeded) -> None:
    listening = _listening(seeded.mesh.process.pid)
    ports = {port for _, port, _ in listening}
    assert _api_port(seeded.mesh) in ports
    assert {seeded.mesh.data_port, seeded.mesh.metrics_port} <= ports
    wide = [
        (ip, port, pid) for ip, port, pid in listening if not ipaddress.ip_address(ip).is_loopback
    ]
    assert wide == [], f"listening beyond loopback: {wide}"


def test_the_api_refuses_connections_on_other_addresses(mesh: Mesh) -> None:
    address = _non_loopback_address()
    if address is None:
        pytest.skip("this machine has no non-loopback IPv4 address to connect from")
    with pytest.raises(OSError):
        socket.create_connection((address, _api_port(mesh)), timeout=5).close()


def _requests(namespace: str) -> list[tuple[str, str, dict[str, Any]]]:
    collection = VS_PATH.format(ns=namespace)
    item = f"{collection}/{VIRTUAL_SERVICE}"
    patch = {"metadata": {"labels": {"touched": "yes"}}}
    body = {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "intruder", "namespace": namespace},
        "spec": {"hosts": ["x"]},
    }
    return [
        ("GET", "/api", {}),
        ("GET", "/apis", {}),
        ("GET", "/api/v1/namespaces", {}),
        ("GET", collection, {}),
        ("GET", item, {}),
        ("GET", collection, {"params": {"watch": "1"}}),
        ("GET", f"/api/v1/namespaces/{namespace}/pods", {"params": {"watch": "true"}}),
        ("POST", collection, {"json": body}),
        ("PUT", item, {"json": body}),
        (
            "PATCH",
            item,
            {"json": patch, "headers": {"Content-Type": "application/merge-patch+json"}},
        ),
        (
            "PATCH",
            item,
            {
                "content": '{"spec":{}}',
                "params": {"fieldManager": "intruder"},
                "headers": {"Content-Type": "application/apply-patch+yaml"},
            },
        ),
        ("DELETE", item, {}),
        ("DELETE", collection, {}),
        ("GET", "/_mesh/faults", {}),
        ("POST", "/_mesh/faults", {"json": {"webhookFailures": 100}}),
    ]


#: Authorization headers that carry no valid token: none, a wrong one, another scheme, the
#: right token in the wrong scheme or with a suffix.
def _bad_headers(token: str) -> list[dict[str, str]]:
    return [
        {},
        {"Authorization": "Bearer not-the-token"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {token}"},
        {"Authorization": f"Bearer {token}x"},
        {"Authorization": f"Bearer {token[:-1]}"},
        {"Authorization": token},
    ]


@pytest.mark.parametrize("which", range(7))
def test_every_request_without_the_token_is_401_and_changes_nothing(
    seeded: Seeded, which: int
) -> None:
    mesh = seeded.mesh
    headers = _bad_headers(mesh.token)[which]
    before = seeded.stored()["metadata"]["resourceVersion"]
    with mesh.http() as client:
        faults_before = client.get("/_mesh/faults").json()
    with httpx.Client(base_url=mesh.api_url, verify=str(mesh.ca_file), timeout=10) as client:
        for method, path, extra in _requests(seeded.namespace):
            sent_headers = {**extra.get("headers", {}), **headers}
            answer = client.request(
                method,
                path,
                **{k: v for k, v in extra.items() if k != "headers"},
                headers=sent_headers,
            )
            assert answer.status_code == 401, (method, path, answer.status_code, answer.text[:200])
            status = answer.json()
            assert status["kind"] == "Status" and status["reason"] == "Unauthorized", status
        # A token is a header, never a query parameter.
        answer = client.get(
            VS_PATH.format(ns=seeded.namespace), params={"access_token": mesh.token}
        )
        assert answer.status_code == 401
    assert seeded.stored()["metadata"]["resourceVersion"] == before
    assert "intruder" not in seeded.kubectl("get", "virtualservices", "-o", "name")
    with mesh.http() as client:
        assert client.get("/_mesh/faults").json() == faults_before


def test_only_the_public_discovery_paths_answer_without_a_token(mesh: Mesh) -> None:
    with httpx.Client(base_url=mesh.api_url, verify=str(mesh.ca_file), timeout=10) as client:
        for path in ("/version", "/healthz", "/livez", "/readyz"):
            assert client.get(path).status_code == 200, path
            # A presented token is checked even there, as kube-apiserver does.
            bad = client.get(path, headers={"Authorization": "Bearer wrong"})
            assert bad.status_code == 401, path
        assert client.get("/openapi/v2").status_code == 401
        assert client.get("/metrics").status_code == 401
