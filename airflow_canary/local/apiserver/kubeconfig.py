"""The kubeconfig the local mesh writes so kubectl, the kubernetes client and Airflow reach its API."""

from __future__ import annotations

import base64
import ipaddress
import os
import secrets
import ssl
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CONTEXT = "canary-mesh"
#: The context of the read-only user (the ``view`` role: get, list, watch).
VIEWER_CONTEXT = "canary-mesh-viewer"
#: The context whose user gets short-lived tokens from an exec credential plugin.
EXEC_CONTEXT = "canary-mesh-exec"


@dataclass(frozen=True)
class MeshCredentials:
    """Where the mesh API listens, the bearer token it accepts and the CA (PEM) its certificate is from.

    The API is served over TLS because kubectl (client-go) only sends credentials over TLS.
    """

    server: str
    token: str
    ca_pem: bytes = b""
    namespace: str = "default"
    #: The read-only user's token (context ``canary-mesh-viewer``); empty: no such user.
    viewer_token: str = ""
    #: The exec credential plugin's argv (context ``canary-mesh-exec``); empty: no such user.
    exec_command: tuple[str, ...] = ()


@dataclass(frozen=True)
class ServingCert:
    """A self-signed certificate for 127.0.0.1/localhost and its private key, both PEM."""

    cert_pem: bytes
    key_pem: bytes

    def ssl_context(self, directory: Path) -> ssl.SSLContext:
        """A server SSL context; the PEMs are written (key 0600) to ``directory`` for OpenSSL to load."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / "apiserver.crt", directory / "apiserver.key"
        cert_file.write_bytes(self.cert_pem)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(self.key_pem)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(cert_file, key_file)
        return context


def generate_serving_cert(days: int = 365) -> ServingCert:
    """A self-signed (CA and leaf at once) P-256 certificate valid for 127.0.0.1 and localhost."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "canary-mesh")])
    now = datetime.now(timezone.utc)
    public = key.public_key()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(public)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )
    return ServingCert(
        cert_pem=cert.public_bytes(serialization.Encoding.PEM),
        key_pem=key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


def new_token() -> str:
    return secrets.token_urlsafe(32)


def kubeconfig_document(creds: MeshCredentials) -> dict[str, object]:
    cluster: dict[str, str] = {"server": creds.server}
    if creds.ca_pem:
        cluster["certificate-authority-data"] = base64.b64encode(creds.ca_pem).decode()
    users: list[dict[str, object]] = [{"name": CONTEXT, "user": {"token": creds.token}}]
    if creds.viewer_token:
        users.append({"name": VIEWER_CONTEXT, "user": {"token": creds.viewer_token}})
    if creds.exec_command:
        users.append(
            {
                "name": EXEC_CONTEXT,
                "user": {
                    "exec": {
                        "apiVersion": "client.authentication.k8s.io/v1",
                        "command": creds.exec_command[0],
                        "args": list(creds.exec_command[1:]),
                        "interactiveMode": "Never",
                        "provideClusterInfo": False,
                    }
                },
            }
        )
    contexts = [
        {
            "name": str(user["name"]),
            "context": {"cluster": CONTEXT, "user": user["name"], "namespace": creds.namespace},
        }
        for user in users
    ]
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CONTEXT, "cluster": cluster}],
        "users": users,
        "contexts": contexts,
        "current-context": CONTEXT,
        "preferences": {},
    }


def write_kubeconfig(path: str | os.PathLike[str], creds: MeshCredentials) -> Path:
    """Write (atomically, mode 0600: it holds a token) a kubeconfig whose current context is the mesh."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        yaml.safe_dump(kubeconfig_document(creds), handle, sort_keys=False)
    os.replace(tmp, target)
    return target


def read_credentials(path: str | os.PathLike[str]) -> MeshCredentials | None:
    """The mesh credentials in a kubeconfig written by ``write_kubeconfig``; None if absent or foreign."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError):
        return None
    if not isinstance(doc, dict):
        return None
    try:
        cluster = next(c["cluster"] for c in doc["clusters"] if c["name"] == CONTEXT)
        user = next(u["user"] for u in doc["users"] if u["name"] == CONTEXT)
        context = next(c["context"] for c in doc["contexts"] if c["name"] == CONTEXT)
    except (KeyError, StopIteration, TypeError):
        return None
    if not user.get("token"):
        return None
    ca_data = cluster.get("certificate-authority-data")
    viewer: dict[str, object] = next(
        (u["user"] for u in doc["users"] if u.get("name") == VIEWER_CONTEXT), {}
    )
    return MeshCredentials(
        server=cluster["server"],
        token=user["token"],
        ca_pem=base64.b64decode(ca_data) if ca_data else b"",
        namespace=context.get("namespace", "default"),
        viewer_token=str(viewer.get("token") or ""),
    )
