"""Discovery handlers of the local API server: /version, /api, /apis, resource lists and the OpenAPI v3 index."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.base import ApiBase
from airflow_canary.local.apiserver.request import ApiError
from airflow_canary.local.apiserver.resources import ResourceType

Obj = dict[str, Any]

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


class Discovery(ApiBase):
    """What the server serves: versions, groups, resources and the OpenAPI documents kubectl reads."""

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


def _verbs(rtype: ResourceType) -> tuple[str, ...]:
    return ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")
