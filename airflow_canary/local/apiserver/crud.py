"""Create, read, update and delete handlers of the local API server, with the scale and status subresources."""

from __future__ import annotations

import copy
import json
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.admission import Admission, crd_status
from airflow_canary.local.apiserver.base import (
    BINARY_TYPES,
    CRD,
    dry_run,
    json_response,
    qualified,
    wants_table,
)
from airflow_canary.local.apiserver.managed_fields import (
    Manager,
    builtin_lists,
    record_update,
    write_managers,
)
from airflow_canary.local.apiserver.request import (
    ApiError,
    ResourcePath,
    bad_request,
    field_manager,
    invalid,
)
from airflow_canary.local.apiserver.resources import ResourceType
from airflow_canary.local.apiserver.schema import CauseReason, Violation
from airflow_canary.local.apiserver.store import ResourceKey, StoreError

Obj = dict[str, Any]


class Crud(Admission):
    """get, list, create, replace and delete (one and collection), including ``/scale`` and ``/status``."""

    def _own(
        self,
        request: web.Request,
        path: ResourcePath,
        before: Obj | None,
        obj: Obj,
        subresource: str = "",
    ) -> None:
        """Record in ``obj``'s ``managedFields`` that the request's field manager (operation
        Update) now owns what it added or changed; a write that changes nothing keeps them as
        they were (and so does not bump resourceVersion)."""
        previous = copy.deepcopy(((before or {}).get("metadata") or {}).get("managedFields") or [])
        obj.setdefault("metadata", {})["managedFields"] = previous
        manager = Manager(field_manager(request), "Update", subresource)
        managers, changed = record_update(
            before, obj, manager, path.api_version, builtin=builtin_lists(path.rtype)
        )
        if changed:
            write_managers(obj, managers, previous, {manager})

    def _get(self, request: web.Request, path: ResourcePath) -> web.Response:
        obj = self._served(self._fetch(path), path)
        if path.subresource == "scale":
            return web.json_response(scale_of(obj))
        if wants_table(request):
            return web.json_response(self._table(request, path.rtype, [obj]))
        return web.json_response(obj)

    def _list(self, request: web.Request, path: ResourcePath) -> web.Response:
        items = self._select(request, path)
        if wants_table(request):
            return web.json_response(self._table(request, path.rtype, items))
        return web.json_response(
            {
                "kind": path.rtype.list_kind,
                "apiVersion": path.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": items,
            }
        )

    async def _create(self, request: web.Request, path: ResourcePath) -> web.Response:
        self._require_namespace(path)
        obj, warnings = self._admit(request, path, await self._body(request), name=None)
        self._own(request, path, None, obj)
        if (
            path.rtype.subresources
            and "status" in path.rtype.subresources
            and path.rtype.kind != "Pod"
        ):
            obj.pop("status", None)
        if path.rtype.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        if (path.rtype.group, path.rtype.plural) == CRD:
            obj["status"] = crd_status(obj)
        key = self._key(path, obj["metadata"]["name"])
        if dry_run(request):
            if self.store.find(key) is not None:
                raise ApiError(
                    409, "AlreadyExists", f'{qualified(path.rtype)} "{key.name}" already exists'
                )
            return json_response(obj, 201, warnings)
        try:
            stored = self.store.create(key, obj)
        except StoreError as exc:
            if exc.code == 409:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{qualified(path.rtype)} "{key.name}" already exists',
                    details={
                        "name": key.name,
                        "group": path.rtype.group,
                        "kind": path.rtype.plural,
                    },
                ) from None
            raise
        if (path.rtype.group, path.rtype.plural) == CRD:
            self._learn_crd(stored)
        return json_response(self._served(stored, path), 201, warnings)

    async def _replace(
        self, request: web.Request, path: ResourcePath, body: Any = None
    ) -> web.Response:
        body = await self._body(request) if body is None else body
        current = self._fetch(path)
        if path.subresource == "scale":
            return self._write_scale(request, path, current, body)
        if path.subresource == "status":
            if not isinstance(body, dict):
                raise bad_request("the body must be an object")
            candidate = self._served(copy.deepcopy(current), path)
            candidate["status"] = body.get("status", {})
            candidate["metadata"]["resourceVersion"] = (body.get("metadata") or {}).get(
                "resourceVersion", ""
            )
            obj, warnings = self._admit(request, path, candidate, name=path.name)
            if dry_run(request):
                return json_response(self._served(obj, path), 200, warnings)
            stored = self.store.replace(self._key(path), obj, status_only=True)
            return json_response(self._served(stored, path), 200, warnings)
        obj, warnings = self._admit(request, path, body, name=path.name)
        if not obj["metadata"].get("resourceVersion") and not _unconditional_update(path.rtype):
            raise invalid(
                path.rtype,
                path.name or "",
                [
                    Violation(
                        "metadata.resourceVersion",
                        "must be specified for an update",
                        CauseReason.INVALID,
                    )
                ],
            )
        self._own(request, path, current, obj)
        if (path.rtype.group, path.rtype.plural) == CRD:
            obj["status"] = crd_status(obj)
        if dry_run(request):
            return json_response(self._served(obj, path), 200, warnings)
        stored = self.store.replace(self._key(path), obj)
        if (path.rtype.group, path.rtype.plural) == CRD:
            self._learn_crd(stored)
        return json_response(self._served(stored, path), 200, warnings)

    def _write_scale(
        self, request: web.Request, path: ResourcePath, current: Obj, scale: Any
    ) -> web.Response:
        replicas = (scale.get("spec") or {}).get("replicas") if isinstance(scale, dict) else None
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(
                path.rtype,
                path.name or "",
                [
                    Violation(
                        "spec.replicas",
                        f"must be a non-negative integer, got {json.dumps(replicas)}",
                    )
                ],
            )
        wanted_rv = (scale.get("metadata") or {}).get("resourceVersion")
        updated = copy.deepcopy(current)
        updated["spec"]["replicas"] = replicas
        updated["metadata"]["resourceVersion"] = wanted_rv or current["metadata"]["resourceVersion"]
        self._own(request, path, current, updated, "scale")
        if dry_run(request):
            return web.json_response(scale_of(self._served(updated, path)))
        stored = self.store.replace(self._key(path), updated)
        return web.json_response(scale_of(self._served(stored, path)))

    async def _delete(self, request: web.Request, path: ResourcePath) -> web.Response:
        options: Obj = {}
        raw = await request.read()
        if raw and request.content_type not in BINARY_TYPES:
            try:
                options = json.loads(raw) or {}
            except ValueError:
                raise bad_request("the DeleteOptions body is not valid JSON") from None
        current = self._fetch(path)
        preconditions = options.get("preconditions") or {}
        for field in ("uid", "resourceVersion"):
            wanted = preconditions.get(field)
            if wanted and wanted != current["metadata"].get(field):
                raise ApiError(
                    409,
                    "Conflict",
                    f'Operation cannot be fulfilled on {qualified(path.rtype)} "{path.name}": '
                    f"Precondition failed: {field}: {wanted}, {field} in object meta: {current['metadata'].get(field)}",
                )
        if dry_run(request):
            return web.json_response(self._served(current, path))
        orphan = (
            options.get("propagationPolicy") == "Orphan"
            or request.query.get("propagationPolicy") == "Orphan"
        )
        deleted = self._delete_object(self._key(path), cascade=not orphan)
        if path.rtype.group in ("", "apps") and path.rtype.kind != "Pod":
            # Built-in kinds answer a finished delete with a Success Status; pods and custom
            # resources answer with the deleted object, as the real server does.
            return web.json_response(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": {
                        "name": path.name,
                        "group": path.rtype.group,
                        "kind": path.rtype.plural,
                        "uid": deleted["metadata"].get("uid"),
                    },
                }
            )
        return web.json_response(self._served(deleted, path))

    def _delete_object(self, key: ResourceKey, *, cascade: bool) -> Obj:
        deleted = self.store.delete(key)
        if (key.group, key.plural) == CRD:
            self._forget_crd(deleted)
        if key.plural == "namespaces" and key.group == "":
            for other in list(self.store.keys()):
                if other.namespace == key.name:
                    self.store.delete(other)
        elif cascade:
            self._collect_dependents(deleted["metadata"].get("uid"))
        return deleted

    def _collect_dependents(self, uid: str | None) -> None:
        """Garbage-collect objects owned (``ownerReferences``) by the deleted object, like the GC does."""
        if not uid:
            return
        for key in list(self.store.keys()):
            obj = self.store.find(key)
            owners = (obj or {}).get("metadata", {}).get("ownerReferences") or []
            if any(ref.get("uid") == uid for ref in owners):
                try:
                    self._delete_object(key, cascade=True)
                except StoreError:
                    pass  # already gone (a controller may delete its own objects)

    async def _delete_collection(self, request: web.Request, path: ResourcePath) -> web.Response:
        items = self._select(request, path)
        if not dry_run(request):
            for obj in items:
                meta = obj["metadata"]
                self._delete_object(
                    self._key(path, meta["name"])
                    if path.namespace is not None
                    else ResourceKey(
                        path.rtype.group, path.rtype.plural, meta.get("namespace", ""), meta["name"]
                    ),
                    cascade=True,
                )
        return web.json_response(
            {
                "kind": path.rtype.list_kind,
                "apiVersion": path.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": items,
            }
        )


def _unconditional_update(rtype: ResourceType) -> bool:
    # Built-in kinds accept an update without resourceVersion (last write wins); custom
    # resources require one, as the real API server does.
    return not rtype.crd_name and rtype.group != "networking.istio.io"


def scale_of(deployment: Obj) -> Obj:
    meta = deployment["metadata"]
    selector = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return {
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            k: meta[k]
            for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
            if k in meta
        },
        "spec": {"replicas": (deployment.get("spec") or {}).get("replicas", 0)},
        "status": {
            "replicas": (deployment.get("status") or {}).get("replicas", 0),
            "selector": ",".join(f"{k}={v}" for k, v in selector.items()),
        },
    }
