"""Apply a folder of CustomResourceDefinition YAML to the mesh's API at start (``mesh --crds DIR``).

The CRDs go through the API's own create path, as ``kubectl create -f DIR`` would send them, so
they are admitted, stored and learnt exactly like CRDs a client applies later. A CRD that already
exists (a state file kept it) is replaced with the folder's version.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import yaml

_CRDS_PATH = "/apis/apiextensions.k8s.io/v1/customresourcedefinitions"

#: The mesh's built-in Gateway API CRDs (v1.6.1, standard channel: Gateway, HTTPRoute,
#: ReferenceGrant), copied unchanged from the Gateway API project; see the folder's README.
GATEWAY_API_CRDS = Path(__file__).resolve().parent / "crds" / "gateway-api"


class CRDFolderError(Exception):
    """A CRD folder that cannot be read or applied; the message names the file and the reason."""


def read_crd_folder(directory: Path) -> list[tuple[Path, dict[str, Any]]]:
    """Every CustomResourceDefinition document of ``directory``'s ``*.yaml``/``*.yml`` files.

    Returns:
        ``(file, document)`` pairs in file-name order.

    Raises:
        CRDFolderError: the folder is missing or empty, a file is not YAML, or a document is not
            an ``apiextensions.k8s.io/v1`` CustomResourceDefinition.
    """
    if not directory.is_dir():
        raise CRDFolderError(f"{directory} is not a folder")
    files = sorted([*directory.glob("*.yaml"), *directory.glob("*.yml")])
    if not files:
        raise CRDFolderError(f"{directory} holds no *.yaml or *.yml files")
    found: list[tuple[Path, dict[str, Any]]] = []
    for path in files:
        for doc in _documents(path):
            if doc.get("kind") != "CustomResourceDefinition" or doc.get("apiVersion") != (
                "apiextensions.k8s.io/v1"
            ):
                raise CRDFolderError(
                    f"{path}: expected apiextensions.k8s.io/v1 CustomResourceDefinition documents, "
                    f"got {doc.get('apiVersion')!r} {doc.get('kind')!r}"
                )
            found.append((path, doc))
    return found


def _documents(path: Path) -> Iterator[dict[str, Any]]:
    loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
    try:
        for doc in yaml.load_all(path.read_text(encoding="utf-8"), Loader=loader):
            if doc is None:
                continue
            if not isinstance(doc, dict):
                raise CRDFolderError(f"{path}: expected a mapping, got {type(doc).__name__}")
            yield doc
    except (OSError, yaml.YAMLError) as exc:
        raise CRDFolderError(f"{path}: {exc}") from None


async def apply_crd_folder(server: str, token: str, ca_pem: bytes, directory: Path) -> list[str]:
    """Create (or replace) every CRD of ``directory`` through the API at ``server``.

    Returns:
        The names of the CRDs applied.

    Raises:
        CRDFolderError: a file cannot be read, or the API refuses a CRD (its Status message).
    """
    crds = read_crd_folder(directory)
    context = ssl.create_default_context(cadata=ca_pem.decode("ascii"))
    applied: list[str] = []
    headers = {"Authorization": f"Bearer {token}"}
    async with aiohttp.ClientSession(base_url=server, headers=headers) as session:
        for path, crd in crds:
            name = str((crd.get("metadata") or {}).get("name"))
            async with session.post(_CRDS_PATH, json=crd, ssl=context) as created:
                if created.status == 409:
                    await _replace(session, context, crd, name, path)
                elif created.status >= 300:
                    raise CRDFolderError(f"{path}: {name}: {await _message(created)}")
            applied.append(name)
    return applied


async def _replace(
    session: aiohttp.ClientSession,
    context: ssl.SSLContext,
    crd: dict[str, Any],
    name: str,
    path: Path,
) -> None:
    async with session.get(f"{_CRDS_PATH}/{name}", ssl=context) as current:
        if current.status >= 300:
            raise CRDFolderError(f"{path}: {name}: {await _message(current)}")
        live = await current.json()
    body = {**crd, "metadata": {**crd["metadata"], **_kept(live["metadata"])}}
    async with session.put(f"{_CRDS_PATH}/{name}", json=body, ssl=context) as replaced:
        if replaced.status >= 300:
            raise CRDFolderError(f"{path}: {name}: {await _message(replaced)}")


def _kept(metadata: dict[str, Any]) -> dict[str, Any]:
    return {k: metadata[k] for k in ("resourceVersion", "uid") if k in metadata}


async def _message(response: aiohttp.ClientResponse) -> str:
    try:
        status = await response.json(content_type=None)
    except ValueError:
        return f"HTTP {response.status}"
    return f"HTTP {response.status}: {status.get('message', status)}"
