"""Field ownership for the local API server: ``managedFields`` (FieldsV1), server-side apply's merge and conflicts, and ownership of ordinary updates.

A field path is a tuple of FieldsV1 keys: ``("f:spec", "f:replicas")``, or for an item of a list
merged by key ``("f:spec", "f:template", "f:spec", "f:containers", 'k:{"name":"server"}', "f:image")``;
the item itself is owned through its ``"."`` path. Lists without a merge key are atomic (one leaf),
as for every list of a CustomResourceDefinition without ``x-kubernetes-list-type: map``.
Semantics follow sigs.k8s.io/structured-merge-diff as kube-apiserver uses it.
"""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

Obj = dict[str, Any]
Path = tuple[str, ...]

#: Lists of built-in kinds merged by key (``x-kubernetes-list-map-keys`` / ``patchMergeKey``).
LIST_MAP_KEYS: dict[str, tuple[str, ...]] = {
    "containers": ("name",),
    "initContainers": ("name",),
    "ephemeralContainers": ("name",),
    "env": ("name",),
    "volumes": ("name",),
    "volumeMounts": ("mountPath",),
    "imagePullSecrets": ("name",),
    "tolerations": ("key",),
}
#: Container ports are keyed by (containerPort, protocol), Service ports by (port, protocol).
_PORT_KEYS = {"containerPort": ("containerPort", "protocol"), "port": ("port", "protocol")}
#: Metadata fields that are owned like content (the rest is identity or server-managed).
_OWNED_METADATA = ("labels", "annotations", "finalizers", "ownerReferences")


class ApplyConflict(Exception):
    """Fields the applier sets to other values are owned by other managers; ``conflicts`` lists
    ``(manager, apiVersion, path)``."""

    def __init__(self, conflicts: list[tuple[str, str, str]]) -> None:
        super().__init__(f"{len(conflicts)} conflicts")
        self.conflicts = conflicts


@dataclass(frozen=True)
class Manager:
    """One ``managedFields`` entry's identity: who, how (Apply or Update) and through which subresource."""

    name: str
    operation: str
    subresource: str = ""


def builtin_lists(rtype: Any) -> bool:
    """Whether ``rtype``'s lists follow the built-in list-map keys (core and apps kinds); custom
    resources' lists are atomic."""
    return rtype.group in ("", "apps")


def _list_keys(field: str, items: list[Any], builtin: bool) -> tuple[str, ...] | None:
    if not builtin or not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        first = items[0]
        return _PORT_KEYS["containerPort"] if "containerPort" in first else _PORT_KEYS["port"]
    return LIST_MAP_KEYS.get(field)


def _item_key(item: Obj, keys: tuple[str, ...]) -> str:
    values = {k: item.get(k, "TCP" if k == "protocol" else None) for k in keys}
    return "k:" + json.dumps(values, separators=(",", ":"), sort_keys=True)


def field_paths(obj: Obj, *, builtin: bool) -> set[Path]:
    """Every owned leaf path of ``obj`` (metadata labels/annotations and all content but ``status``)."""
    paths: set[Path] = set()
    meta = obj.get("metadata") or {}
    for name in _OWNED_METADATA:
        if name in meta:
            _walk(meta[name], ("f:metadata", f"f:{name}"), name, builtin, paths)
    for key, value in obj.items():
        if key not in ("apiVersion", "kind", "metadata", "status"):
            _walk(value, (f"f:{key}",), key, builtin, paths)
    return paths


def _walk(value: Any, path: Path, field: str, builtin: bool, out: set[Path]) -> None:
    if isinstance(value, dict) and value:
        for key, child in value.items():
            _walk(child, (*path, f"f:{key}"), key, builtin, out)
        return
    if isinstance(value, list):
        keys = _list_keys(field, value, builtin)
        if keys is not None:
            for item in value:
                item_path = (*path, _item_key(item, keys))
                out.add((*item_path, "."))
                for key, child in item.items():
                    _walk(child, (*item_path, f"f:{key}"), key, builtin, out)
            return
    out.add(path)


def fields_v1(paths: set[Path]) -> Obj:
    """The FieldsV1 document of a set of paths."""
    root: Obj = {}
    for path in sorted(paths):
        node = root
        for part in path:
            node = node.setdefault(part, {})
    return root


def paths_of(doc: Any, prefix: Path = ()) -> set[Path]:
    """The leaf paths a FieldsV1 document names."""
    if not isinstance(doc, dict) or not doc:
        return {prefix} if prefix else set()
    out: set[Path] = set()
    for key, child in doc.items():
        if key == ".":
            out.add((*prefix, "."))
        else:
            out |= paths_of(child, (*prefix, key))
    return out


def _locate(obj: Any, path: Path) -> tuple[bool, Any]:
    """(found, value) at ``path``; ``"."`` names the list item itself."""
    node: Any = obj
    for part in path:
        if part == ".":
            return True, node
        if part.startswith("f:"):
            name = part[2:]
            if not isinstance(node, dict) or name not in node:
                return False, None
            node = node[name]
        elif part.startswith("k:"):
            if not isinstance(node, list):
                return False, None
            wanted = json.loads(part[2:])
            match = [i for i in node if isinstance(i, dict) and _matches(i, wanted)]
            if not match:
                return False, None
            node = match[0]
        else:
            return False, None
    return True, node


def _matches(item: Obj, wanted: Obj) -> bool:
    return all(item.get(k, "TCP" if k == "protocol" else None) == v for k, v in wanted.items())


def _remove(obj: Obj, path: Path) -> None:
    if path and path[-1] == ".":
        path = path[:-1]
    found, parent = _locate(obj, path[:-1])
    if not found:
        return
    last = path[-1]
    if last.startswith("f:") and isinstance(parent, dict):
        parent.pop(last[2:], None)
    elif last.startswith("k:") and isinstance(parent, list):
        wanted = json.loads(last[2:])
        parent[:] = [i for i in parent if not (isinstance(i, dict) and _matches(i, wanted))]


def merge(live: Any, config: Any, field: str, builtin: bool) -> Any:
    """``config`` merged into ``live``: maps recursively, keyed lists item by item, the rest replaced."""
    if isinstance(config, dict) and isinstance(live, dict):
        out = copy.deepcopy(live)
        for key, value in config.items():
            out[key] = merge(live.get(key), value, key, builtin)
        return out
    if isinstance(config, list) and isinstance(live, list):
        keys = _list_keys(field, config or live, builtin)
        if keys is not None and all(isinstance(i, dict) for i in live):
            out_list = copy.deepcopy(live)
            for item in config:
                ident = _item_key(item, keys)
                index = next(
                    (n for n, old in enumerate(out_list) if _item_key(old, keys) == ident), None
                )
                if index is None:
                    out_list.append(copy.deepcopy(item))
                else:
                    out_list[index] = merge(out_list[index], item, field, builtin)
            return out_list
    return copy.deepcopy(config)


def read_managers(obj: Obj) -> dict[Manager, tuple[str, set[Path]]]:
    """The object's ``managedFields`` as manager -> (apiVersion, owned paths)."""
    out: dict[Manager, tuple[str, set[Path]]] = {}
    for entry in (obj.get("metadata") or {}).get("managedFields") or []:
        if not isinstance(entry, dict) or not entry.get("manager"):
            continue
        manager = Manager(
            entry["manager"], entry.get("operation", "Update"), entry.get("subresource", "")
        )
        out[manager] = (entry.get("apiVersion", ""), paths_of(entry.get("fieldsV1") or {}))
    return out


def write_managers(
    obj: Obj,
    managers: dict[Manager, tuple[str, set[Path]]],
    previous: list[Any],
    touched: set[Manager],
) -> None:
    """Store ``managers`` as ``metadata.managedFields``; entries not ``touched`` keep their time."""
    times = {
        Manager(e["manager"], e.get("operation", "Update"), e.get("subresource", "")): e.get("time")
        for e in previous
        if isinstance(e, dict) and e.get("manager")
    }
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    entries = []
    for manager, (api_version, paths) in managers.items():
        if not paths:
            continue
        entry: Obj = {
            "manager": manager.name,
            "operation": manager.operation,
            "apiVersion": api_version,
            "time": now if manager in touched or not times.get(manager) else times[manager],
            "fieldsType": "FieldsV1",
            "fieldsV1": fields_v1(paths),
        }
        if manager.subresource:
            entry["subresource"] = manager.subresource
        entries.append(entry)
    obj.setdefault("metadata", {})["managedFields"] = entries


def apply(
    live: Obj | None,
    config: Obj,
    manager: str,
    api_version: str,
    *,
    force: bool,
    builtin: bool,
) -> tuple[Obj, dict[Manager, tuple[str, set[Path]]]]:
    """Server-side apply of ``config`` by ``manager`` to ``live`` (None: the object is new).

    Returns the merged object and the new ownership. Raises ApplyConflict when ``config`` sets a
    field to a value other than the live one while another manager owns it (unless ``force``,
    which takes the field over). Fields the manager applied before and no longer applies are
    removed unless another manager still owns them.
    """
    applier = Manager(manager, "Apply")
    base = copy.deepcopy(live) if live is not None else {}
    managers = read_managers(base)
    applied = field_paths(config, builtin=builtin)
    conflicts = []
    for other, (other_version, owned) in managers.items():
        if other == applier:
            continue
        for path in sorted(applied & owned):
            if path[-1] == ".":
                continue
            found, current = _locate(base, path)
            _, wanted = _locate(config, path)
            if found and current != wanted:
                conflicts.append((other, other_version, path))
    if conflicts and not force:
        raise ApplyConflict([(m.name, v, _dotted(p)) for m, v, p in conflicts])
    for other, _, path in conflicts:
        version, owned = managers[other]
        managers[other] = (version, owned - {path})
    merged = merge(base, {k: v for k, v in config.items() if k != "metadata"}, "", builtin)
    meta = merged.setdefault("metadata", {})
    for name in _OWNED_METADATA:
        value = (config.get("metadata") or {}).get(name)
        if value is not None:
            meta[name] = merge(meta.get(name), value, name, builtin)
    previously = managers.get(applier, ("", set()))[1]
    others = set().union(*(owned for m, (_, owned) in managers.items() if m != applier))
    for path in sorted(previously - applied - others, key=len, reverse=True):
        _remove(merged, path)
    managers[applier] = (api_version, applied)
    return merged, managers


def record_update(
    before: Obj | None,
    after: Obj,
    manager: Manager,
    api_version: str,
    *,
    builtin: bool,
) -> tuple[dict[Manager, tuple[str, set[Path]]], bool]:
    """Ownership after an ordinary write (create, update, patch) by ``manager``: the fields it
    added or changed become its own (and no one else's); removed fields leave every set.
    Returns the managers and whether anything changed."""
    managers = read_managers(before or {})
    old_paths = field_paths(before, builtin=builtin) if before else set()
    new_paths = field_paths(after, builtin=builtin)
    changed = {
        p
        for p in new_paths
        if p not in old_paths or _locate(before or {}, p)[1] != _locate(after, p)[1]
    }
    removed = old_paths - new_paths
    if not changed and not removed:
        return managers, False
    for other, (version, owned) in list(managers.items()):
        managers[other] = (version, owned - changed - removed)
    version, owned = managers.get(manager, (api_version, set()))
    managers[manager] = (api_version, owned | changed)
    return managers, True


def _dotted(path: Path) -> str:
    parts = []
    for part in path:
        if part.startswith("f:"):
            parts.append("." + part[2:])
        elif part.startswith("k:"):
            parts.append(
                "[" + ",".join(f"{k}={v!s}" for k, v in json.loads(part[2:]).items()) + "]"
            )
    return "".join(parts)
