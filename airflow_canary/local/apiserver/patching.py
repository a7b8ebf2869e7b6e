"""PATCH handler of the local API server: JSON, merge and strategic merge patches (each ending in a replace) and server-side apply."""

from __future__ import annotations

import copy

from aiohttp import web

from airflow_canary.local.apiserver.admission import canonical_quantities
from airflow_canary.local.apiserver.base import dry_run, json_response
from airflow_canary.local.apiserver.crud import Crud, scale_of
from airflow_canary.local.apiserver.managed_fields import (
    ApplyConflict,
    Manager,
    apply,
    builtin_lists,
    read_managers,
    write_managers,
)
from airflow_canary.local.apiserver.patch import (
    PatchError,
    PatchType,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from airflow_canary.local.apiserver.request import ApiError, ResourcePath, bad_request


class Patching(Crud):
    """``PATCH``: the patch is applied to the served object, then written as a replace would be."""

    async def _patch(self, request: web.Request, path: ResourcePath) -> web.Response:
        content_type = request.content_type
        try:
            kind = PatchType(content_type)
        except ValueError:
            kind = None
        if kind is PatchType.APPLY and path.subresource is None:
            return await self._apply(request, path)
        if (
            kind is None
            or kind is PatchType.APPLY
            or (kind is PatchType.STRATEGIC and not path.rtype.strategic_merge)
        ):
            accepted = ["application/json-patch+json", "application/merge-patch+json"]
            if path.rtype.strategic_merge:
                accepted.append("application/strategic-merge-patch+json")
            accepted.append("application/apply-patch+yaml")
            raise ApiError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}",
            )
        patch = await self._body(request)
        current = self._fetch(path)
        served = (
            scale_of(self._served(current, path))
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

    async def _apply(self, request: web.Request, path: ResourcePath) -> web.Response:
        """Server-side apply (``application/apply-patch+yaml``): merge the applied configuration
        into the live object (or create it), record ownership in ``managedFields``, and answer
        409 when it would change fields other managers own, unless ``force=true``."""
        manager = request.query.get("fieldManager", "")
        if not manager:
            raise ApiError(
                422,
                "Invalid",
                'PatchOptions.meta.k8s.io "" is invalid: fieldManager: Required value: '
                "is required for apply patch",
            )
        config = await self._body(request)
        if not isinstance(config, dict):
            raise bad_request("an apply patch must be a YAML or JSON object")
        for field in ("apiVersion", "kind"):
            if not config.get(field):
                raise bad_request(f"{field} must be set in an apply patch")
        if (config.get("metadata") or {}).get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil in an apply patch")
        unknown = self.schemas.unknown_fields({**config, "apiVersion": path.api_version})
        if unknown:
            # Apply is always strict about unknown fields, whatever fieldValidation says.
            where = f"{path.namespace}/{path.name}" if path.namespace else str(path.name)
            raise bad_request(
                f"failed to create typed patch object ({where}; {path.api_version}, "
                f"Kind={path.rtype.kind}): "
                + "; ".join(f".{field}: field not declared in schema" for field in unknown)
            )
        config = copy.deepcopy(config)
        if path.rtype.kind in ("Deployment", "Pod"):
            canonical_quantities(config)
        force = (request.query.get("force") or "").lower() == "true"
        live = self.store.find(self._key(path))
        if live is None:
            self._require_namespace(path)
        else:
            live = self._served(live, path)
        try:
            merged, managers = apply(
                live,
                config,
                manager,
                path.api_version,
                force=force,
                builtin=builtin_lists(path.rtype),
            )
        except ApplyConflict as exc:
            raise _conflict(exc) from None
        merged["apiVersion"], merged["kind"] = path.api_version, path.rtype.kind
        merged.setdefault("metadata", {})["name"] = path.name
        if live is not None:
            merged["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
        previous = ((live or {}).get("metadata") or {}).get("managedFields") or []
        obj, warnings = self._admit(request, path, merged, name=path.name)
        applier = Manager(manager, "Apply")
        unchanged = live is not None and managers == read_managers(live)
        write_managers(obj, managers, previous, set() if unchanged else {applier})
        if live is None:
            obj.pop("status", None)
            if dry_run(request):
                return json_response(self._served(obj, path), 201, warnings)
            stored = self.store.create(self._key(path), obj)
            return json_response(self._served(stored, path), 201, warnings)
        if dry_run(request):
            return json_response(self._served(obj, path), 200, warnings)
        stored = self.store.replace(self._key(path), obj)
        return json_response(self._served(stored, path), 200, warnings)


def _conflict(exc: ApplyConflict) -> ApiError:
    """409 Conflict worded as kube-apiserver's field manager words it (internal/conflict.go)."""
    count = len(exc.conflicts)
    by_manager: dict[tuple[str, str], list[str]] = {}
    for manager, version, field in exc.conflicts:
        by_manager.setdefault((manager, version), []).append(field)
    noun = "conflict" if count == 1 else "conflicts"
    if count == 1:
        ((manager, version, field),) = exc.conflicts
        message = (
            f'Apply failed with 1 conflict: conflict with "{manager}" using {version}: {field}'
        )
    else:
        lines = []
        for (manager, version), fields in by_manager.items():
            lines.append(f'conflicts with "{manager}" using {version}:')
            lines.extend(f"- {f}" for f in fields)
        message = f"Apply failed with {count} {noun}: " + "\n".join(lines)
    return ApiError(
        409,
        "Conflict",
        message,
        details={
            "causes": [
                {
                    "reason": "FieldManagerConflict",
                    "message": f'conflict with "{manager}" using {version}',
                    "field": field,
                }
                for manager, version, field in exc.conflicts
            ]
        },
    )
