"""Who is calling the local API server and what they may do: bearer tokens (static, or short-lived from an exec credential plugin) and read-only users."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from airflow_canary.local.apiserver.request import ApiError, ResourcePath

#: The user of the mesh's default context: may do everything (system:masters).
ADMIN_USER = "canary-admin"
#: A user bound to the ``view`` ClusterRole: get, list and watch only.
VIEWER_USER = "canary-viewer"
#: The user whose short-lived tokens the exec credential plugin issues: may do everything.
EXEC_USER = "canary-exec"
#: Verbs the ``view`` ClusterRole grants.
READ_VERBS = frozenset({"get", "list", "watch"})
_PREFIX = "canary-exec"


@dataclass(frozen=True)
class User:
    """An authenticated caller."""

    name: str
    read_only: bool = False


@dataclass(frozen=True)
class TokenSigner:
    """Issues and checks bearer tokens valid for ``ttl_seconds``: ``canary-exec.<user>.<expiry>.<hmac>``.

    Like an EKS token (15 minutes), a token stops working when it expires and the client must run
    its exec credential plugin again for a new one.
    """

    key: bytes
    ttl_seconds: float

    def issue(self, user: str = EXEC_USER, now: float | None = None) -> tuple[str, float]:
        """A token for ``user`` and its expiry (epoch seconds)."""
        expiry = (time.time() if now is None else now) + self.ttl_seconds
        payload = f"{_PREFIX}.{user}.{expiry:.3f}"
        return f"{payload}.{self._sign(payload)}", expiry

    def verify(self, token: str, now: float | None = None) -> User | None:
        """The token's user, or None when it is forged, malformed or expired."""
        parts = token.split(".")
        if len(parts) != 5 or parts[0] != _PREFIX:
            return None
        payload, signature = ".".join(parts[:4]), parts[4]
        if not hmac.compare_digest(signature, self._sign(payload)):
            return None
        try:
            expiry = float(f"{parts[2]}.{parts[3]}")
        except ValueError:
            return None
        if (time.time() if now is None else now) >= expiry:
            return None
        return User(parts[1])

    def _sign(self, payload: str) -> str:
        return hmac.new(self.key, payload.encode(), hashlib.sha256).hexdigest()

    def save(self, path: Path) -> Path:
        """Write the key and lifetime (mode 0600) for the credential plugin to read."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            json.dump({"key": self.key.hex(), "ttl_seconds": self.ttl_seconds}, handle)
        return path

    @classmethod
    def load(cls, path: Path) -> TokenSigner:
        data = json.loads(path.read_text())
        return cls(bytes.fromhex(data["key"]), float(data["ttl_seconds"]))

    @classmethod
    def generate(cls, ttl_seconds: float) -> TokenSigner:
        return cls(secrets.token_bytes(32), ttl_seconds)


class Authenticator:
    """Maps a bearer token to its user: the admin and viewer static tokens, or a signed short-lived one."""

    def __init__(
        self, admin_token: str, viewer_token: str | None = None, signer: TokenSigner | None = None
    ) -> None:
        self._static = {admin_token: User(ADMIN_USER)}
        if viewer_token:
            self._static[viewer_token] = User(VIEWER_USER, read_only=True)
        self.signer = signer

    def authenticate(self, header: str) -> User | None:
        scheme, _, presented = header.partition(" ")
        if scheme.lower() != "bearer":
            return None
        presented = presented.strip()
        for token, user in self._static.items():
            if hmac.compare_digest(presented, token):
                return user
        if self.signer is not None:
            return self.signer.verify(presented)
        return None


def request_verb(method: str, path: ResourcePath, watch: bool) -> str:
    """The RBAC verb of a resource request (k8s.io/apiserver/pkg/endpoints/request/requestinfo.go)."""
    if method == "GET":
        if path.name is not None:
            return "get"
        return "watch" if watch else "list"
    if method == "DELETE":
        return "delete" if path.name is not None else "deletecollection"
    return {"POST": "create", "PUT": "update", "PATCH": "patch"}.get(method, method.lower())


def authorize(user: User, verb: str, path: ResourcePath) -> None:
    """Raise 403 Forbidden, worded as the RBAC authorizer words it, when ``user`` may not ``verb``."""
    if not user.read_only or verb in READ_VERBS:
        return
    rtype = path.rtype
    resource = rtype.plural + (f"/{path.subresource}" if path.subresource else "")
    if path.namespace:
        scope = f"in the namespace {json.dumps(path.namespace)}"
    else:
        scope = "at the cluster scope"
    reason = (
        f"User {json.dumps(user.name)} cannot {verb} resource {json.dumps(resource)} "
        f"in API group {json.dumps(rtype.group)} {scope}"
    )
    qualified = f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural
    subject = f"{qualified} {json.dumps(path.name)}" if path.name else qualified
    raise ApiError(
        403,
        "Forbidden",
        f"{subject} is forbidden: {reason}",
        details={
            **({"name": path.name} if path.name else {}),
            "group": rtype.group,
            "kind": rtype.plural,
        },
    )
