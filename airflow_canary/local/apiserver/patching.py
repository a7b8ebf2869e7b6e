"""PATCH handler of the local API server: JSON, merge and strategic merge patches, each ending in a replace."""

from __future__ import annotations

from aiohttp import web

from airflow_canary.local.apiserver.crud import Crud, scale_of
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
