"""The local mesh's Kubernetes API: the subset kubectl, the kubernetes client and the product use, over aiohttp."""

from __future__ import annotations

import asyncio
import copy
import hmac
import json
import re
import secrets
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.patch import (
    PatchError,
    PatchType,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from airflow_canary.local.apiserver.request import (
    ApiError,
    ResourcePath,
    bad_request,
    invalid,
    parse_field_selector,
    parse_label_selector,
    parse_resource_path,
    selected,
)
from airflow_canary.local.apiserver.resources import ResourceRegistry, ResourceType
from airflow_canary.local.apiserver.schema import CauseReason, CRDSchemas, Violation, prune
from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey, StoreError

Obj = dict[str, Any]

#: What ``/version`` reports: the Kubernetes minor this API subset follows.
SERVER_VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.0+canary-mesh",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-01-01T00:00:00Z",
    "goVersion": "go1.23",
    "compiler": "gc",
    "platform": "linux/amd64",
}
#: Paths anonymous clients may read, as on a real cluster (system:public-info-viewer).
PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CRD = ("apiextensions.k8s.io", "customresourcedefinitions")
_BINARY_TYPES = frozenset({"application/vnd.kubernetes.protobuf", "application/cbor"})


class KubeApi:
    """Request handling over one ObjectStore; CRDs applied to it teach ``schemas`` and ``registry``."""

    def __init__(self, store: ObjectStore, token: str, schemas: CRDSchemas | None = None) -> None:
        self.store = store
        self.token = token
        self.schemas = schemas or CRDSchemas()
        self.registry = ResourceRegistry()
        self.closing = asyncio.Event()
        for crd in store.list(*_CRD):
            self._learn_crd(crd)
        if store.find(ResourceKey("", "namespaces", "", "default")) is None:
            store.create(ResourceKey("", "namespaces", "", "default"), _namespace("default"))

    # -- plumbing ------------------------------------------------------------------------------

    def _learn_crd(self, crd: Obj) -> None:
        self.schemas.add_crd(crd)
        self.registry.add_crd(crd)

    def _forget_crd(self, crd: Obj) -> None:
        self.schemas.remove_crd(crd["metadata"]["name"])
        self.registry.remove_crd(crd)

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if header or request.path not in PUBLIC_PATHS:
            scheme, _, presented = header.partition(" ")
            if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip(), self.token):
                return ApiError(401, "Unauthorized", "Unauthorized").response()
        try:
            return await handler(request)
        except ApiError as exc:
            return exc.response()
        except StoreError as exc:
            return ApiError(exc.code, exc.reason, str(exc)).response()
        except web.HTTPException as exc:
            if exc.status == 404:
                return ApiError(
                    404, "NotFound", "the server could not find the requested resource"
                ).response()
            if exc.status == 405:
                return ApiError(
                    405,
                    "MethodNotAllowed",
                    f"the server does not allow this method ({request.method})",
                ).response()
            raise

    # -- discovery -----------------------------------------------------------------------------

    async def version(self, request: web.Request) -> web.Response:
        return web.json_response(SERVER_VERSION)

    async def healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def api_versions(self, request: web.Request) -> web.Response:
        host = request.host or "127.0.0.1"
        return web.json_response(
            {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": host}],
            }
        )

    def _group_doc(self, group: str, versions: list[str]) -> Obj:
        listed = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": listed, "preferredVersion": listed[0]}

    async def api_groups(self, request: web.Request) -> web.Response:
        groups = [self._group_doc(g, vs) for g, vs in self.registry.groups().items() if g]
        return web.json_response({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})

    async def api_group(self, request: web.Request) -> web.Response:
        group = request.match_info["group"]
        versions = self.registry.groups().get(group)
        if not group or not versions:
            raise ApiError(
                404, "NotFound", f"the server could not find the requested resource (group {group})"
            )
        return web.json_response(
            {"kind": "APIGroup", "apiVersion": "v1", **self._group_doc(group, versions)}
        )

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rtype in self.registry.types():
            if rtype.group != group or version not in rtype.versions:
                continue
            resources.append(
                {
                    "name": rtype.plural,
                    "singularName": rtype.singular,
                    "namespaced": rtype.namespaced,
                    "kind": rtype.kind,
                    "verbs": list(_verbs(rtype)),
                    **({"shortNames": list(rtype.short_names)} if rtype.short_names else {}),
                    **({"categories": list(rtype.categories)} if rtype.categories else {}),
                    "storageVersionHash": "",
                }
            )
            for sub in rtype.subresources:
                entry: Obj = {
                    "name": f"{rtype.plural}/{sub}",
                    "singularName": "",
                    "namespaced": rtype.namespaced,
                    "kind": rtype.kind,
                    "verbs": ["get", "patch", "update"],
                }
                if sub == "scale":
                    entry.update({"group": "autoscaling", "version": "v1", "kind": "Scale"})
                resources.append(entry)
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    # -- routing of resource requests ----------------------------------------------------------

    async def core(self, request: web.Request) -> web.StreamResponse:
        return await self._dispatch(
            request, "", request.match_info["version"], request.match_info["tail"]
        )

    async def grouped(self, request: web.Request) -> web.StreamResponse:
        info = request.match_info
        return await self._dispatch(request, info["group"], info["version"], info["tail"])

    async def _dispatch(
        self, request: web.Request, group: str, version: str, tail: str
    ) -> web.StreamResponse:
        if not any(version in vs for g, vs in self.registry.groups().items() if g == group):
            gv = f"{group}/{version}" if group else version
            raise ApiError(
                404,
                "NotFound",
                f"the server could not find the requested resource (group version {gv})",
            )
        segments = [s for s in tail.split("/") if s]
        if not segments:
            if request.method != "GET":
                raise ApiError(
                    405, "MethodNotAllowed", f"{request.method} is not allowed on discovery"
                )
            return web.json_response(self._resource_list(group, version))
        path = parse_resource_path(self.registry, group, version, segments)
        method = request.method
        if path.subresource is not None:
            if path.subresource not in path.rtype.subresources:
                raise ApiError(
                    404, "NotFound", f"{path.rtype.plural} has no subresource {path.subresource!r}"
                )
            if method == "GET":
                return self._get(request, path)
            if method == "PUT":
                return await self._replace(request, path)
            if method == "PATCH":
                return await self._patch(request, path)
            raise ApiError(
                405,
                "MethodNotAllowed",
                f"{method} is not allowed on {path.rtype.plural}/{path.subresource}",
            )
        if path.name is None:
            if method == "GET":
                if _truthy(request.query.get("watch")):
                    return await self._watch(request, path)
                return self._list(request, path)
            if method == "POST":
                return await self._create(request, path)
            if method == "DELETE":
                return await self._delete_collection(request, path)
        else:
            if method == "GET":
                return self._get(request, path)
            if method == "PUT":
                return await self._replace(request, path)
            if method == "PATCH":
                return await self._patch(request, path)
            if method == "DELETE":
                return await self._delete(request, path)
        raise ApiError(405, "MethodNotAllowed", f"{method} is not allowed on {request.path}")

    # -- helpers -------------------------------------------------------------------------------

    def _key(self, path: ResourcePath, name: str | None = None) -> ResourceKey:
        return ResourceKey(
            path.rtype.group, path.rtype.plural, path.namespace or "", name or path.name or ""
        )

    def _served(self, obj: Obj, path: ResourcePath) -> Obj:
        """The stored object as the requested version: one stored object, every version served."""
        obj["apiVersion"] = path.api_version
        obj["kind"] = path.rtype.kind
        return obj

    def _require_namespace(self, path: ResourcePath) -> None:
        if path.rtype.namespaced and path.namespace is not None:
            if self.store.find(ResourceKey("", "namespaces", "", path.namespace)) is None:
                raise ApiError(
                    404,
                    "NotFound",
                    f'namespaces "{path.namespace}" not found',
                    details={"name": path.namespace, "kind": "namespaces"},
                )

    def _not_found(self, path: ResourcePath, name: str) -> ApiError:
        return ApiError(
            404,
            "NotFound",
            f'{_qualified(path.rtype)} "{name}" not found',
            details={"name": name, "group": path.rtype.group, "kind": path.rtype.plural},
        )

    def _fetch(self, path: ResourcePath) -> Obj:
        obj = self.store.find(self._key(path))
        if obj is None:
            raise self._not_found(path, path.name or "")
        return obj

    async def _body(self, request: web.Request) -> Any:
        if request.content_type in _BINARY_TYPES:
            # client-go retries with JSON after a 415 for a protobuf/CBOR body.
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({request.content_type}) - "
                "accepted media types include: application/json, application/yaml",
            )
        raw = await request.read()
        if not raw:
            raise bad_request("the request body is empty; expected a JSON object")
        try:
            return json.loads(raw)
        except ValueError:
            try:
                import yaml

                return yaml.safe_load(raw)
            except Exception as exc:
                raise bad_request(f"the request body is not valid JSON or YAML: {exc}") from None

    # -- reads ---------------------------------------------------------------------------------

    def _get(self, request: web.Request, path: ResourcePath) -> web.Response:
        obj = self._served(self._fetch(path), path)
        if path.subresource == "scale":
            return web.json_response(_scale_of(obj))
        if _wants_table(request):
            return web.json_response(self._table(request, path.rtype, [obj]))
        return web.json_response(obj)

    def _select(self, request: web.Request, path: ResourcePath) -> list[Obj]:
        labels = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
        items = self.store.list(
            path.rtype.group, path.rtype.plural, path.namespace if path.rtype.namespaced else None
        )
        return [self._served(o, path) for o in items if selected(o, labels, fields)]

    def _list(self, request: web.Request, path: ResourcePath) -> web.Response:
        items = self._select(request, path)
        if _wants_table(request):
            return web.json_response(self._table(request, path.rtype, items))
        return web.json_response(
            {
                "kind": path.rtype.list_kind,
                "apiVersion": path.api_version,
                "metadata": {"resourceVersion": self.store.resource_version},
                "items": items,
            }
        )

    def _table(self, request: web.Request, rtype: ResourceType, items: list[Obj]) -> Obj:
        include = request.query.get("includeObject", "Metadata")
        columns = rtype.columns or ()
        rows = []
        for obj in items:
            if include == "Object":
                row_obj: Obj | None = obj
            elif include == "None":
                row_obj = None
            else:
                row_obj = {
                    "kind": "PartialObjectMetadata",
                    "apiVersion": "meta.k8s.io/v1",
                    "metadata": obj["metadata"],
                }
            row: Obj = {"cells": [col.cell(obj) for col in columns]}
            if row_obj is not None:
                row["object"] = row_obj
            rows.append(row)
        return {
            "kind": "Table",
            "apiVersion": "meta.k8s.io/v1",
            "metadata": {"resourceVersion": self.store.resource_version},
            "columnDefinitions": [
                {
                    "name": col.name,
                    "type": col.type,
                    "format": col.format,
                    "description": col.description,
                    "priority": col.priority,
                }
                for col in columns
            ],
            "rows": rows,
        }

    async def _watch(self, request: web.Request, path: ResourcePath) -> web.StreamResponse:
        """A streaming watch: JSON lines of ``{"type", "object"}`` until timeoutSeconds or shutdown."""
        labels = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
        namespace = path.namespace if path.rtype.namespaced else None
        timeout = float(request.query.get("timeoutSeconds") or 1800)
        since = request.query.get("resourceVersion", "")
        queue: asyncio.Queue[tuple[str, Obj]] = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def listener(event: str, key: ResourceKey, obj: Obj) -> None:
            if key.group == path.rtype.group and key.plural == path.rtype.plural:
                if namespace is None or key.namespace == namespace:
                    try:
                        loop.call_soon_threadsafe(queue.put_nowait, (event, obj))
                    except RuntimeError:
                        pass  # the loop is closed: the server is gone

        unsubscribe = self.store.subscribe(listener)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        try:
            if since in ("", "0"):
                # "Start at most recent": current objects first, as synthetic ADDED events.
                for obj in self._select(request, path):
                    await response.write(_event("ADDED", self._event_object(request, path, obj)))
            deadline = loop.time() + timeout
            closing = asyncio.ensure_future(self.closing.wait())
            try:
                while (remaining := deadline - loop.time()) > 0 and not self.closing.is_set():
                    getter = asyncio.ensure_future(queue.get())
                    done, _ = await asyncio.wait(
                        {getter, closing}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED
                    )
                    if getter not in done:
                        getter.cancel()
                        continue
                    event, obj = getter.result()
                    if since and _rv(obj) <= _rv_int(since):
                        continue
                    if selected(obj, labels, fields):
                        served = self._served(obj, path)
                        await response.write(
                            _event(event, self._event_object(request, path, served))
                        )
            finally:
                closing.cancel()
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            unsubscribe()
        return response

    def _event_object(self, request: web.Request, path: ResourcePath, obj: Obj) -> Obj:
        # `kubectl get -w` asks for Tables: each event then carries a one-row Table.
        return self._table(request, path.rtype, [obj]) if _wants_table(request) else obj

    # -- writes --------------------------------------------------------------------------------

    def _admit(
        self, request: web.Request, path: ResourcePath, obj: Any, *, name: str | None
    ) -> tuple[Obj, list[str]]:
        """Check and default an object about to be written; returns it and the warnings to send."""
        rtype = path.rtype
        if not isinstance(obj, dict):
            raise bad_request(f"the body must be a {rtype.kind} object, got {type(obj).__name__}")
        obj = copy.deepcopy(obj)
        if obj.get("apiVersion", path.api_version) != path.api_version:
            raise bad_request(
                f"the API version in the data ({obj['apiVersion']}) does not match the expected API version ({path.api_version})"
            )
        if obj.get("kind", rtype.kind) != rtype.kind:
            raise bad_request(
                f"the kind in the data ({obj['kind']}) does not match the expected kind ({rtype.kind})"
            )
        obj["apiVersion"], obj["kind"] = path.api_version, rtype.kind
        meta = obj.get("metadata")
        if meta is None:
            meta = obj["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request(f"metadata must be an object, got {json.dumps(meta)}")
        if rtype.namespaced:
            if meta.get("namespace") not in (None, "", path.namespace):
                raise bad_request(
                    f"the namespace of the provided object ({meta['namespace']}) does not match the namespace sent on the request ({path.namespace})"
                )
            meta["namespace"] = path.namespace
        else:
            meta.pop("namespace", None)
        if name is not None:
            if meta.get("name") not in (None, "", name):
                raise bad_request(
                    f"the name of the object ({meta['name']}) does not match the name on the URL ({name})"
                )
            meta["name"] = name
        elif not meta.get("name") and meta.get("generateName"):
            meta["name"] = meta["generateName"] + secrets.token_hex(3)[:5]
        problems = _metadata_violations(rtype, meta)
        warnings: list[str] = []
        unknown = self.schemas.unknown_fields(obj)
        if unknown:
            mode = request.query.get("fieldValidation", "Warn")
            if mode == "Strict":
                fields = ", ".join(f'unknown field "{u}"' for u in unknown)
                raise bad_request(
                    f'{rtype.kind} in version "{path.version}" cannot be handled as a {rtype.kind}: strict decoding error: {fields}'
                )
            prune(obj, unknown)
            if mode != "Ignore":
                warnings = [f'unknown field "{u}"' for u in unknown]
        _default(rtype, obj)
        problems += self.schemas.violations(obj)
        if (rtype.group, rtype.plural) == _CRD:
            problems += _crd_violations(obj)
        if problems:
            raise invalid(rtype, str(meta.get("name") or ""), problems)
        return obj, warnings

    async def _create(self, request: web.Request, path: ResourcePath) -> web.Response:
        self._require_namespace(path)
        obj, warnings = self._admit(request, path, await self._body(request), name=None)
        if (
            path.rtype.subresources
            and "status" in path.rtype.subresources
            and path.rtype.kind != "Pod"
        ):
            obj.pop("status", None)
        if path.rtype.kind == "Namespace":
            obj["status"] = {"phase": "Active"}
        if (path.rtype.group, path.rtype.plural) == _CRD:
            obj["status"] = _crd_status(obj)
        key = self._key(path, obj["metadata"]["name"])
        if _dry_run(request):
            if self.store.find(key) is not None:
                raise ApiError(
                    409, "AlreadyExists", f'{_qualified(path.rtype)} "{key.name}" already exists'
                )
            return _json(obj, 201, warnings)
        try:
            stored = self.store.create(key, obj)
        except StoreError as exc:
            if exc.code == 409:
                raise ApiError(
                    409,
                    "AlreadyExists",
                    f'{_qualified(path.rtype)} "{key.name}" already exists',
                    details={
                        "name": key.name,
                        "group": path.rtype.group,
                        "kind": path.rtype.plural,
                    },
                ) from None
            raise
        if (path.rtype.group, path.rtype.plural) == _CRD:
            self._learn_crd(stored)
        return _json(self._served(stored, path), 201, warnings)

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
            if _dry_run(request):
                return _json(self._served(obj, path), 200, warnings)
            stored = self.store.replace(self._key(path), obj, status_only=True)
            return _json(self._served(stored, path), 200, warnings)
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
        if (path.rtype.group, path.rtype.plural) == _CRD:
            obj["status"] = _crd_status(obj)
        if _dry_run(request):
            return _json(self._served(obj, path), 200, warnings)
        stored = self.store.replace(self._key(path), obj)
        if (path.rtype.group, path.rtype.plural) == _CRD:
            self._learn_crd(stored)
        return _json(self._served(stored, path), 200, warnings)

    async def _patch(self, request: web.Request, path: ResourcePath) -> web.Response:
        content_type = request.content_type
        try:
            kind = PatchType(content_type)
        except ValueError:
            kind = None
        if (
            kind is None
            or kind is PatchType.APPLY
            or (kind is PatchType.STRATEGIC and not path.rtype.strategic_merge)
        ):
            accepted = ["application/json-patch+json", "application/merge-patch+json"]
            if path.rtype.strategic_merge:
                accepted.append("application/strategic-merge-patch+json")
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
            )
        patch = await self._body(request)
        current = self._fetch(path)
        served = (
            _scale_of(self._served(current, path))
            if path.subresource == "scale"
            else self._served(current, path)
        )
        try:
            if kind is PatchType.JSON:
                patched = json_patch(served, patch)
            elif kind is PatchType.MERGE:
                if not isinstance(patch, dict):
                    raise PatchError("a merge patch must be a JSON object", 400)
                patched = merge_patch(served, patch)
            else:
                if not isinstance(patch, dict):
                    raise PatchError("a strategic merge patch must be a JSON object", 400)
                patched = strategic_merge_patch(served, patch)
        except PatchError as exc:
            if exc.code == 400:
                raise bad_request(str(exc)) from None
            raise ApiError(422, "Invalid", str(exc)) from None
        return await self._replace(request, path, body=patched)

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
        if _dry_run(request):
            return web.json_response(_scale_of(self._served(updated, path)))
        stored = self.store.replace(self._key(path), updated)
        return web.json_response(_scale_of(self._served(stored, path)))

    async def _delete(self, request: web.Request, path: ResourcePath) -> web.Response:
        options: Obj = {}
        raw = await request.read()
        if raw and request.content_type not in _BINARY_TYPES:
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
                    f'Operation cannot be fulfilled on {_qualified(path.rtype)} "{path.name}": '
                    f"Precondition failed: {field}: {wanted}, {field} in object meta: {current['metadata'].get(field)}",
                )
        if _dry_run(request):
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
        if (key.group, key.plural) == _CRD:
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
        if not _dry_run(request):
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

    async def openapi_absent(self, request: web.Request) -> web.Response:
        raise ApiError(404, "NotFound", "the server does not serve OpenAPI v2; use /openapi/v3")

    def _group_versions(self) -> list[tuple[str, str]]:
        return [(g, v) for g, versions in self.registry.groups().items() for v in versions]

    async def openapi_v3_index(self, request: web.Request) -> web.Response:
        """The OpenAPI v3 index: one document per group version (kubectl reads it before writes)."""
        paths = {}
        for group, version in self._group_versions():
            rel = f"api/{version}" if not group else f"apis/{group}/{version}"
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}"}
        return web.json_response({"paths": paths})

    async def openapi_v3_group_version(self, request: web.Request) -> web.Response:
        """A minimal per-group-version document: the PATCH operations and the query parameters they
        accept, which is what kubectl checks to choose server-side field validation (``fieldValidation``).
        Schemas are not published, so kubectl falls back to its compiled-in types for patches."""
        parts = request.match_info["tail"].strip("/").split("/")
        if parts[0] == "api" and len(parts) == 2:
            group, version = "", parts[1]
        elif parts[0] == "apis" and len(parts) == 3:
            group, version = parts[1], parts[2]
        else:
            raise ApiError(404, "NotFound", f"no OpenAPI v3 document at {request.path}")
        if (group, version) not in self._group_versions():
            raise ApiError(404, "NotFound", f"no OpenAPI v3 document at {request.path}")
        prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
        parameters = [
            {"name": name, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
            for name in ("dryRun", "fieldManager", "fieldValidation", "force")
        ]
        paths: dict[str, Obj] = {}
        for rtype in self.registry.types():
            if rtype.group != group or version not in rtype.versions:
                continue
            scope = "/namespaces/{namespace}" if rtype.namespaced else ""
            gvk = {"group": group, "version": version, "kind": rtype.kind}
            paths[f"{prefix}{scope}/{rtype.plural}/{{name}}"] = {
                "patch": {
                    "operationId": f"patch{rtype.kind}",
                    "parameters": parameters,
                    "responses": {"200": {"description": "OK"}},
                    "x-kubernetes-action": "patch",
                    "x-kubernetes-group-version-kind": gvk,
                }
            }
        return web.json_response(
            {
                "openapi": "3.0.0",
                "info": {
                    "title": "Kubernetes (airflow-canary mesh)",
                    "version": SERVER_VERSION["gitVersion"],
                },
                "paths": paths,
                "components": {"schemas": {}},
            }
        )


# -- module helpers -----------------------------------------------------------------------------


def _qualified(rtype: ResourceType) -> str:
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def _verbs(rtype: ResourceType) -> tuple[str, ...]:
    return ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


def _truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any("as=Table" in part for part in accept.split(","))


def _unconditional_update(rtype: ResourceType) -> bool:
    # Built-in kinds accept an update without resourceVersion (last write wins); custom
    # resources require one, as the real API server does.
    return not rtype.crd_name and rtype.group != "networking.istio.io"


def _rv(obj: Obj) -> int:
    return _rv_int(obj.get("metadata", {}).get("resourceVersion", "0"))


def _rv_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def _event(kind: str, obj: Obj) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()


def _json(obj: Obj, status: int, warnings: list[str]) -> web.Response:
    response = web.json_response(obj, status=status)
    for warning in warnings:
        response.headers.add("Warning", f'299 - "{warning}"'.replace("\n", " "))
    return response


def _namespace(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }


def _metadata_violations(rtype: ResourceType, meta: Obj) -> list[Violation]:
    problems = []
    name = meta.get("name")
    if not name:
        problems.append(
            Violation("metadata.name", "name or generateName is required", CauseReason.REQUIRED)
        )
    elif not isinstance(name, str) or len(name) > 253 or not _DNS_SUBDOMAIN.match(name):
        problems.append(
            Violation(
                "metadata.name",
                f"a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', "
                f"and must start and end with an alphanumeric character, got {json.dumps(name)}",
            )
        )
    elif rtype.kind in ("Namespace", "Service") and (len(name) > 63 or not _DNS_LABEL.match(name)):
        problems.append(
            Violation(
                "metadata.name",
                f"must be an RFC 1123 label (at most 63 characters, no dots), got {json.dumps(name)}",
            )
        )
    for field in ("labels", "annotations"):
        values = meta.get(field)
        if values is None:
            continue
        if not isinstance(values, dict):
            problems.append(
                Violation(
                    f"metadata.{field}", f"must be a map of strings, got {json.dumps(values)}"
                )
            )
            continue
        for key, value in values.items():
            if not isinstance(value, str):
                problems.append(
                    Violation(f"metadata.{field}.{key}", f"must be string, got {json.dumps(value)}")
                )
    return problems


def _default(rtype: ResourceType, obj: Obj) -> None:
    """The defaults the real API server fills in that clients read back."""
    spec = obj.get("spec")
    if not isinstance(spec, dict):
        return
    if rtype.kind == "Deployment":
        spec.setdefault("replicas", 1)
        spec.setdefault("revisionHistoryLimit", 10)
        spec.setdefault("progressDeadlineSeconds", 600)
        spec.setdefault(
            "strategy",
            {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxSurge": "25%", "maxUnavailable": "25%"},
            },
        )
    elif rtype.kind == "Service":
        spec.setdefault("type", "ClusterIP")
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                if "port" in port:
                    port.setdefault("targetPort", port["port"])


def _crd_violations(crd: Obj) -> list[Violation]:
    spec = crd.get("spec") or {}
    names = spec.get("names") or {}
    problems = []
    for field in ("plural", "kind"):
        if not names.get(field):
            problems.append(
                Violation(f"spec.names.{field}", "required value is missing", CauseReason.REQUIRED)
            )
    if not spec.get("group"):
        problems.append(Violation("spec.group", "required value is missing", CauseReason.REQUIRED))
    if not spec.get("versions"):
        problems.append(
            Violation("spec.versions", "must have at least one version", CauseReason.REQUIRED)
        )
    expected = f"{names.get('plural')}.{spec.get('group')}"
    if not problems and crd["metadata"].get("name") != expected:
        problems.append(
            Violation(
                "metadata.name",
                f'must be spec.names.plural+"."+spec.group: {expected}, got {crd["metadata"].get("name")!r}',
            )
        )
    return problems


def _crd_status(crd: Obj) -> Obj:
    names = (crd.get("spec") or {}).get("names") or {}
    return {
        "acceptedNames": names,
        "conditions": [
            {
                "type": "NamesAccepted",
                "status": "True",
                "reason": "NoConflicts",
                "message": "no conflicts found",
            },
            {
                "type": "Established",
                "status": "True",
                "reason": "InitialNamesAccepted",
                "message": "the initial names have been accepted",
            },
        ],
        "storedVersions": [
            v["name"] for v in (crd.get("spec") or {}).get("versions") or [] if v.get("storage")
        ],
    }


def _scale_of(deployment: Obj) -> Obj:
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


APP_KEY_API = web.AppKey("kube_api", KubeApi)


def create_api_app(
    store: ObjectStore, token: str, schemas: CRDSchemas | None = None
) -> web.Application:
    """The Kubernetes API as an aiohttp application; requests need ``Authorization: Bearer <token>``."""
    api = KubeApi(store, token, schemas)
    app = web.Application(middlewares=[api.middleware], client_max_size=32 * 1024 * 1024)
    app[APP_KEY_API] = api

    async def on_shutdown(_: web.Application) -> None:
        api.closing.set()

    app.on_shutdown.append(on_shutdown)
    router = app.router
    router.add_get("/version", api.version)
    router.add_get("/version/", api.version)
    for health in ("/healthz", "/livez", "/readyz"):
        router.add_get(health, api.healthz)
    router.add_get("/api", api.api_versions)
    router.add_get("/apis", api.api_groups)
    router.add_get("/openapi/v2", api.openapi_absent)
    router.add_get("/openapi/v3", api.openapi_v3_index)
    router.add_get("/openapi/v3/{tail:.*}", api.openapi_v3_group_version)
    router.add_route("*", "/api/{version}{tail:(/.*)?}", api.core)
    router.add_get("/apis/{group}", api.api_group)
    router.add_route("*", "/apis/{group}/{version}{tail:(/.*)?}", api.grouped)
    return app
