"""Kubernetes manifests given to the deploy operator: parsed from a dict, YAML text or a file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from airflow_canary.templating import is_template

__all__ = ["ManifestError", "deployments", "is_template", "load_manifest"]

#: kinds the deploy operator applies, with the apiVersion prefixes it accepts for each
DEPLOYABLE_KINDS: dict[str, tuple[str, ...]] = {
    "Deployment": ("apps/v1",),
    "Service": ("v1",),
    "DestinationRule": ("networking.istio.io/",),
}


class ManifestError(ValueError):
    """A manifest is unreadable or holds an object the deploy operator cannot apply."""


def load_manifest(manifest: object) -> list[dict[str, Any]]:
    """Return the objects of ``manifest``: a dict, a list of dicts, YAML text, or a path to a YAML file.

    Every object must be a Deployment (at least one), a Service or a DestinationRule with
    ``metadata.name``; anything else is refused with a message naming it.
    """
    docs: list[Any]
    if isinstance(manifest, Mapping):
        docs = [dict(manifest)]
    elif isinstance(manifest, (list, tuple)):
        docs = list(manifest)
    elif isinstance(manifest, (str, os.PathLike)):
        docs = _load_text_or_path(manifest)
    else:
        raise ManifestError(
            f"manifest must be a dict, YAML text or a path to a YAML file, got {type(manifest).__name__}"
        )
    objects = [d for d in docs if d is not None]
    if not objects:
        raise ManifestError("manifest holds no objects; expected at least one Deployment")
    for index, obj in enumerate(objects):
        _check_object(index, obj)
    if not any(o["kind"] == "Deployment" for o in objects):
        kinds = ", ".join(f"{o['kind']} {o['metadata']['name']!r}" for o in objects)
        raise ManifestError(f"manifest must contain a Deployment; it holds {kinds}")
    return objects


def _load_text_or_path(manifest: str | os.PathLike[str]) -> list[Any]:
    text = os.fspath(manifest)
    looks_like_path = "\n" not in text and text.rstrip().endswith((".yaml", ".yml", ".json"))
    if isinstance(manifest, os.PathLike) or looks_like_path:
        path = Path(text)
        if not path.is_file():
            raise ManifestError(f"manifest file {text!r} does not exist")
        text = path.read_text()
    try:
        return list(yaml.safe_load_all(text))
    except yaml.YAMLError as err:
        raise ManifestError(f"manifest is not valid YAML: {err}") from None


def _check_object(index: int, obj: object) -> None:
    if not isinstance(obj, Mapping):
        raise ManifestError(
            f"manifest object #{index + 1} must be a mapping, got {type(obj).__name__}"
        )
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    name = (obj.get("metadata") or {}).get("name")
    if kind not in DEPLOYABLE_KINDS:
        raise ManifestError(
            f"manifest object #{index + 1} is a {kind!r} named {name!r}; the deploy operator applies "
            f"{', '.join(DEPLOYABLE_KINDS)} objects"
        )
    if not isinstance(api_version, str) or not api_version.startswith(DEPLOYABLE_KINDS[kind]):
        raise ManifestError(
            f"{kind} {name!r} has apiVersion {api_version!r}; expected one of {', '.join(DEPLOYABLE_KINDS[kind])}"
        )
    if not isinstance(name, str) or not name:
        raise ManifestError(f"{kind} #{index + 1} in the manifest has no metadata.name")


def deployments(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == "Deployment"]
