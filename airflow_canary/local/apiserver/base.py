"""State every request handler of the local API server shares: the store, the learnt schemas and resource types, and object lookup."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.authn import Authenticator, TokenSigner
from airflow_canary.local.apiserver.faults import Faults
from airflow_canary.local.apiserver.request import (
    ApiError,
    ResourcePath,
    bad_request,
    parse_field_selector,
    parse_label_selector,
    selected,
)
from airflow_canary.local.apiserver.resources import ResourceRegistry, ResourceType
from airflow_canary.local.apiserver.schema import CRDSchemas
from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey

Obj = dict[str, Any]

CRD = ("apiextensions.k8s.io", "customresourcedefinitions")
BINARY_TYPES = frozenset({"application/vnd.kubernetes.protobuf", "application/cbor"})


class ApiBase:
    """The store, schemas and registry, and the lookups every handler needs; CRDs in the store teach the rest."""

    def __init__(
        self,
        store: ObjectStore,
        token: str,
        schemas: CRDSchemas | None = None,
        *,
        viewer_token: str | None = None,
        signer: TokenSigner | None = None,
    ) -> None:
        self.store = store
        self.authenticator = Authenticator(token, viewer_token, signer)
        self.faults = Faults()
        self.schemas = schemas or CRDSchemas()
        self.registry = ResourceRegistry()
        self.closing = asyncio.Event()
        for crd in store.list(*CRD):
            self._learn_crd(crd)
        if store.find(ResourceKey("", "namespaces", "", "default")) is None:
            store.create(ResourceKey("", "namespaces", "", "default"), namespace_object("default"))

    # -- plumbing ------------------------------------------------------------------------------

    def _learn_crd(self, crd: Obj) -> None:
        self.schemas.add_crd(crd)
        self.registry.add_crd(crd)

    def _forget_crd(self, crd: Obj) -> None:
        self.schemas.remove_crd(crd["metadata"]["name"])
        self.registry.remove_crd(crd)

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
            f'{qualified(path.rtype)} "{name}" not found',
            details={"name": name, "group": path.rtype.group, "kind": path.rtype.plural},
        )

    def _fetch(self, path: ResourcePath) -> Obj:
        obj = self.store.find(self._key(path))
        if obj is None:
            raise self._not_found(path, path.name or "")
        return obj

    async def _body(self, request: web.Request) -> Any:
        if request.content_type in BINARY_TYPES:
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

    def _select(self, request: web.Request, path: ResourcePath) -> list[Obj]:
        labels = parse_label_selector(request.query.get("labelSelector", ""))
        fields = parse_field_selector(request.query.get("fieldSelector", ""))
        items = self.store.list(
            path.rtype.group, path.rtype.plural, path.namespace if path.rtype.namespaced else None
        )
        return [self._served(o, path) for o in items if selected(o, labels, fields)]

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


def qualified(rtype: ResourceType) -> str:
    return f"{rtype.plural}.{rtype.group}" if rtype.group else rtype.plural


def truthy(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def dry_run(request: web.Request) -> bool:
    return "All" in request.query.getall("dryRun", [])


def wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any("as=Table" in part for part in accept.split(","))


def rv(obj: Obj) -> int:
    return rv_int(obj.get("metadata", {}).get("resourceVersion", "0"))


def rv_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        return 0


def json_response(obj: Obj, status: int, warnings: list[str]) -> web.Response:
    response = web.json_response(obj, status=status)
    for warning in warnings:
        response.headers.add("Warning", f'299 - "{warning}"'.replace("\n", " "))
    return response


def namespace_object(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {"kubernetes.io/metadata.name": name}},
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    }
