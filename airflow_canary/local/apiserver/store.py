"""In-memory object store of the local mesh: resourceVersions, generations, watchers, optional state file."""

from __future__ import annotations

import copy
import itertools
import json
import os
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

Obj = dict[str, Any]
Listener = Callable[[str, "ResourceKey", Obj], None]


@dataclass(frozen=True)
class ResourceKey:
    """Identity of a stored object: API group, plural resource name, namespace ('' when cluster-scoped), name."""

    group: str
    plural: str
    namespace: str
    name: str


class StoreError(Exception):
    """Base of the store's errors; ``code`` and ``reason`` map onto a Kubernetes Status."""

    code = 500
    reason = "InternalError"


class NotFound(StoreError):
    code = 404
    reason = "NotFound"


class AlreadyExists(StoreError):
    code = 409
    reason = "AlreadyExists"


class Conflict(StoreError):
    code = 409
    reason = "Conflict"


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class ObjectStore:
    """Thread-safe store of Kubernetes objects.

    Every write bumps a global ``metadata.resourceVersion``; a change to anything but
    ``metadata`` and ``status`` bumps ``metadata.generation``. Listeners are called after each
    write with ``("ADDED" | "MODIFIED" | "DELETED", key, object)`` and must not block.
    Returned objects are deep copies: callers may mutate them freely.
    """

    def __init__(self, state_file: str | os.PathLike[str] | None = None) -> None:
        self._lock = threading.RLock()
        self._objects: dict[ResourceKey, Obj] = {}
        self._listeners: list[Listener] = []
        self._counter = itertools.count(1)
        self._state_file = Path(state_file) if state_file else None
        if self._state_file and self._state_file.exists():
            self._load()

    # -- listeners -------------------------------------------------------------------------

    def subscribe(self, listener: Listener) -> Callable[[], None]:
        """Call ``listener`` after every write; returns a function that unsubscribes it."""
        with self._lock:
            self._listeners.append(listener)

        def unsubscribe() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return unsubscribe

    def _notify(self, event: str, key: ResourceKey, obj: Obj) -> None:
        for listener in list(self._listeners):
            listener(event, key, copy.deepcopy(obj))

    # -- reads -----------------------------------------------------------------------------

    def get(self, key: ResourceKey) -> Obj:
        with self._lock:
            try:
                return copy.deepcopy(self._objects[key])
            except KeyError:
                raise NotFound(f'{_qualified(key)} "{key.name}" not found') from None

    def find(self, key: ResourceKey) -> Obj | None:
        with self._lock:
            obj = self._objects.get(key)
            return copy.deepcopy(obj) if obj is not None else None

    def list(self, group: str, plural: str, namespace: str | None = None) -> list[Obj]:
        """Objects of one resource, in one namespace or (``None``) all of them, ordered by name."""
        with self._lock:
            items = [
                (k, o)
                for k, o in self._objects.items()
                if k.group == group
                and k.plural == plural
                and (namespace is None or k.namespace == namespace)
            ]
            items.sort(key=lambda kv: (kv[0].namespace, kv[0].name))
            return [copy.deepcopy(o) for _, o in items]

    def keys(self) -> Iterator[ResourceKey]:
        with self._lock:
            return iter(list(self._objects))

    @property
    def resource_version(self) -> str:
        """The newest resourceVersion handed out (list responses carry it)."""
        with self._lock:
            return str(self._last_rv)

    _last_rv = 0

    def _next_rv(self) -> str:
        self._last_rv = next(self._counter)
        return str(self._last_rv)

    # -- writes ----------------------------------------------------------------------------

    def create(self, key: ResourceKey, obj: Obj) -> Obj:
        with self._lock:
            if key in self._objects:
                raise AlreadyExists(f'{_qualified(key)} "{key.name}" already exists')
            obj = copy.deepcopy(obj)
            meta = obj.setdefault("metadata", {})
            meta["name"] = key.name
            if key.namespace:
                meta["namespace"] = key.namespace
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = _now()
            meta["generation"] = 1
            meta["resourceVersion"] = self._next_rv()
            self._objects[key] = obj
            self._save()
            stored = copy.deepcopy(obj)
        self._notify("ADDED", key, stored)
        return stored

    def replace(self, key: ResourceKey, obj: Obj, *, status_only: bool = False) -> Obj:
        """Replace an object. A non-empty ``metadata.resourceVersion`` must match (else Conflict).

        With ``status_only`` only ``status`` is taken from ``obj`` (the status subresource);
        otherwise ``status`` is kept from the stored object, as the API server does for
        resources with a status subresource.
        """
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                raise NotFound(f'{_qualified(key)} "{key.name}" not found')
            wanted_rv = (obj.get("metadata") or {}).get("resourceVersion")
            if wanted_rv and wanted_rv != current["metadata"]["resourceVersion"]:
                raise Conflict(
                    f'Operation cannot be fulfilled on {_qualified(key)} "{key.name}": '
                    "the object has been modified; please apply your changes to the latest version and try again"
                )
            new = copy.deepcopy(current)
            if status_only:
                new["status"] = copy.deepcopy(obj.get("status", {}))
            else:
                new = copy.deepcopy(obj)
                if "status" in current:
                    new["status"] = copy.deepcopy(current["status"])
                else:
                    new.pop("status", None)
                meta = new.setdefault("metadata", {})
                for field in ("uid", "creationTimestamp", "generation", "name", "namespace"):
                    if field in current["metadata"]:
                        meta[field] = current["metadata"][field]
                if _spec_of(new) != _spec_of(current):
                    meta["generation"] = int(current["metadata"].get("generation", 1)) + 1
            # A write that changes nothing is not stored: resourceVersion stays (as in etcd3's
            # GuaranteedUpdate), whatever resourceVersion the request carried.
            new.setdefault("metadata", {})["resourceVersion"] = current["metadata"][
                "resourceVersion"
            ]
            if new == current:
                return copy.deepcopy(current)
            new["metadata"]["resourceVersion"] = self._next_rv()
            self._objects[key] = new
            self._save()
            stored = copy.deepcopy(new)
        self._notify("MODIFIED", key, stored)
        return stored

    def update_status(self, key: ResourceKey, status: Obj) -> Obj | None:
        """Set ``status`` regardless of resourceVersion (controllers' writes); None if the object is gone."""
        with self._lock:
            current = self._objects.get(key)
            if current is None:
                return None
            if current.get("status") == status:
                return copy.deepcopy(current)
            current["status"] = copy.deepcopy(status)
            current["metadata"]["resourceVersion"] = self._next_rv()
            self._save()
            stored = copy.deepcopy(current)
        self._notify("MODIFIED", key, stored)
        return stored

    def delete(self, key: ResourceKey) -> Obj:
        with self._lock:
            obj = self._objects.pop(key, None)
            if obj is None:
                raise NotFound(f'{_qualified(key)} "{key.name}" not found')
            self._save()
        self._notify("DELETED", key, obj)
        return copy.deepcopy(obj)

    # -- persistence -----------------------------------------------------------------------

    def _save(self) -> None:
        if not self._state_file:
            return
        data = {
            "resourceVersion": self._last_rv,
            "objects": [
                {
                    "group": k.group,
                    "plural": k.plural,
                    "namespace": k.namespace,
                    "name": k.name,
                    "object": o,
                }
                for k, o in self._objects.items()
            ],
        }
        tmp = self._state_file.with_suffix(self._state_file.suffix + ".tmp")
        tmp.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_text(json.dumps(data))
        os.replace(tmp, self._state_file)

    def _load(self) -> None:
        assert self._state_file is not None
        data = json.loads(self._state_file.read_text())
        for item in data.get("objects", []):
            key = ResourceKey(item["group"], item["plural"], item["namespace"], item["name"])
            self._objects[key] = item["object"]
        self._last_rv = int(data.get("resourceVersion", 0))
        self._counter = itertools.count(self._last_rv + 1)


def _qualified(key: ResourceKey) -> str:
    """``plural.group`` as the API server names a resource in messages (core resources: ``plural``)."""
    return f"{key.plural}.{key.group}" if key.group else key.plural


def _spec_of(obj: Obj) -> Obj:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
