"""Kubernetes manifests given to the deploy operator: parsed from a dict, YAML text or a file."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from airflow_canary import names
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
            f"manifest must be a dict, YAML text or a path to a YAML file, got "
            f"{type(manifest).__name__} {manifest!r}"
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
        return list(yaml.load_all(text, Loader=_StrictLoader))  # noqa: S506 (a SafeLoader)
    except yaml.YAMLError as err:
        raise ManifestError(f"manifest is not valid YAML: {err}") from None


class _StrictLoader(yaml.SafeLoader):
    """YAML as kubectl reads it (sigs.k8s.io/yaml over go-yaml): a key defined twice in one
    mapping is an error (go-yaml: ``mapping key "x" already defined at line N``), and a document
    whose aliases expand to more than ``MAX_EXPANDED_NODES`` nodes is refused (go-yaml refuses
    "excessive aliasing", the billion-laughs document). Anchors, aliases and merge keys
    (``<<: *defaults``) are otherwise accepted; a merged key may be overridden."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    earlier = seen.get(key)
                except TypeError:  # an unhashable key: construct_mapping below says so
                    continue
                if earlier is not None:
                    raise ManifestError(
                        f"manifest is not valid YAML: mapping key {key!r} defined twice, at "
                        f"line {earlier.start_mark.line + 1} and line "
                        f"{key_node.start_mark.line + 1}"
                    )
                seen[key] = key_node
        return super().construct_mapping(node, deep=deep)

    def construct_document(self, node: yaml.Node) -> Any:
        size = _expanded_size(node, {})
        if size > MAX_EXPANDED_NODES:
            raise ManifestError(
                f"manifest document at line {node.start_mark.line + 1} expands to more than "
                f"{MAX_EXPANDED_NODES:,} YAML nodes through its aliases (excessive aliasing, "
                "as kubectl refuses it); write the objects out instead of nesting aliases"
            )
        return super().construct_document(node)


#: The most nodes a manifest document may expand to through YAML aliases: orders of magnitude
#: above any real Deployment, far below what exhausts a worker's memory.
MAX_EXPANDED_NODES = 100_000


def _expanded_size(node: yaml.Node, sizes: dict[int, int]) -> int:
    """Nodes in ``node`` with every alias expanded, counted without expanding them."""
    known = sizes.get(id(node))
    if known is not None:
        return known
    sizes[id(node)] = 1  # a recursive alias counts once instead of looping
    total = 1
    if isinstance(node, yaml.SequenceNode):
        total += sum(_expanded_size(child, sizes) for child in node.value)
    elif isinstance(node, yaml.MappingNode):
        total += sum(
            _expanded_size(key, sizes) + _expanded_size(value, sizes) for key, value in node.value
        )
    sizes[id(node)] = total
    return min(total, MAX_EXPANDED_NODES * 10)


def _check_object(index: int, obj: object) -> None:
    if not isinstance(obj, Mapping):
        raise ManifestError(
            f"manifest object #{index + 1} must be a mapping (a Kubernetes object), got "
            f"{type(obj).__name__} {obj!r}"
        )
    kind = obj.get("kind")
    api_version = obj.get("apiVersion")
    metadata = obj.get("metadata")
    if metadata is not None and not isinstance(metadata, Mapping):
        raise ManifestError(
            f"manifest object #{index + 1} ({kind!r}) has metadata {metadata!r}; expected a "
            "mapping with a name"
        )
    name = (metadata or {}).get("name")
    if not isinstance(kind, str) or kind not in DEPLOYABLE_KINDS:
        raise ManifestError(
            f"manifest object #{index + 1} is a {kind!r} named {name!r}; the deploy operator applies "
            f"{', '.join(DEPLOYABLE_KINDS)} objects"
        )
    if not isinstance(api_version, str) or not api_version.startswith(DEPLOYABLE_KINDS[kind]):
        raise ManifestError(
            f"{kind} {name!r} has apiVersion {api_version!r}; expected one of {', '.join(DEPLOYABLE_KINDS[kind])}"
        )
    if name is None or name == "":
        raise ManifestError(f"{kind} #{index + 1} in the manifest has no metadata.name")
    if kind == "Service":
        names.service_name(f"{kind} metadata.name", name, ManifestError)
    else:
        names.object_name(f"{kind} metadata.name", name, ManifestError)
    namespace = (metadata or {}).get("namespace")
    if namespace is not None:
        names.namespace_name(f"{kind} {name!r} metadata.namespace", namespace, ManifestError)


def deployments(objects: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    return [o for o in objects if o.get("kind") == "Deployment"]
