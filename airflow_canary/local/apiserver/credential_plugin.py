"""An exec credential plugin for the local mesh: prints an ExecCredential with a fresh short-lived token, as aws-iam-authenticator or gke-gcloud-auth-plugin do."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

from airflow_canary.local.apiserver.authn import EXEC_USER, TokenSigner


def exec_credential(signer: TokenSigner) -> dict[str, object]:
    """A ``client.authentication.k8s.io/v1`` ExecCredential holding a token and its expiry."""
    token, expiry = signer.issue(EXEC_USER)
    stamp = datetime.fromtimestamp(expiry, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": token, "expirationTimestamp": stamp},
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print(
            "usage: python -m airflow_canary.local.apiserver.credential_plugin SIGNER_FILE",
            file=sys.stderr,
        )
        return 2
    try:
        signer = TokenSigner.load(Path(args[0]))
    except (OSError, ValueError, KeyError) as exc:
        print(f"cannot read the mesh's token signer {args[0]}: {exc}", file=sys.stderr)
        return 1
    json.dump(exec_credential(signer), sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
