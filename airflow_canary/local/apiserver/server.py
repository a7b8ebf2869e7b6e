"""The local mesh's Kubernetes API: the subset kubectl, the kubernetes client and the product use, over aiohttp."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from airflow_canary.local.apiserver.authn import TokenSigner, authorize, request_verb
from airflow_canary.local.apiserver.base import ApiBase, truthy
from airflow_canary.local.apiserver.discovery import Discovery
from airflow_canary.local.apiserver.faults import ResetConnection
from airflow_canary.local.apiserver.patching import Patching
from airflow_canary.local.apiserver.request import ApiError, parse_resource_path
from airflow_canary.local.apiserver.schema import CRDSchemas
from airflow_canary.local.apiserver.store import ObjectStore, StoreError
from airflow_canary.local.apiserver.watch import Watch

#: Paths anonymous clients may read, as on a real cluster (system:public-info-viewer).
PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})


#: Set on a write whose reply the injected faults drop after it was stored.
RESET_AFTER_KEY = "canary.reset_after_write"
#: Where the middleware leaves the authenticated ``User`` on the request.
USER_KEY = "canary.user"


class KubeApi(Discovery, Watch, Patching, ApiBase):
    """Request handling over one ObjectStore: authentication, then routing to the handler of each concern."""

    @web.middleware
    async def middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        if header or request.path not in PUBLIC_PATHS:
            user = self.authenticator.authenticate(header)
            if user is None:
                return ApiError(401, "Unauthorized", "Unauthorized").response()
            request[USER_KEY] = user
        try:
            response = await handler(request)
            if request.get(RESET_AFTER_KEY):
                raise ResetConnection()
            return response
        except ResetConnection:
            # The client sees its connection drop (a write may already be stored).
            if request.transport is not None:
                request.transport.abort()
            return web.Response(status=500)
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

    async def faults_endpoint(self, request: web.Request) -> web.Response:
        """``GET``/``POST /_mesh/faults``: read or set the injected faults (not a Kubernetes API;
        only users with write rights)."""
        user = request[USER_KEY]
        if request.method == "POST":
            if user.read_only:
                raise ApiError(403, "Forbidden", f"User {user.name!r} cannot set faults")
            return web.json_response(self.faults.configure(await self._body(request)))
        return web.json_response(self.faults.state())

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
        authorize(
            request[USER_KEY], request_verb(method, path, truthy(request.query.get("watch"))), path
        )
        self.faults.throttle()
        if self.faults.inject(method, request.path):
            request[RESET_AFTER_KEY] = True
        if self.faults.write_latency_seconds:
            await request.read()  # the body is in before the write waits for storage
            await self.faults.delay_write(method)
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
                if truthy(request.query.get("watch")):
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


APP_KEY_API = web.AppKey("kube_api", KubeApi)


def create_api_app(
    store: ObjectStore,
    token: str,
    schemas: CRDSchemas | None = None,
    *,
    viewer_token: str | None = None,
    signer: TokenSigner | None = None,
) -> web.Application:
    """The Kubernetes API as an aiohttp application; requests need ``Authorization: Bearer <token>``:
    ``token`` (admin), ``viewer_token`` (read-only) or one ``signer`` issued and not yet expired."""
    api = KubeApi(store, token, schemas, viewer_token=viewer_token, signer=signer)
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
    router.add_route("*", "/_mesh/faults", api.faults_endpoint)
    router.add_get("/api", api.api_versions)
    router.add_get("/apis", api.api_groups)
    router.add_get("/openapi/v2", api.openapi_absent)
    router.add_get("/openapi/v3", api.openapi_v3_index)
    router.add_get("/openapi/v3/{tail:.*}", api.openapi_v3_group_version)
    router.add_route("*", "/api/{version}{tail:(/.*)?}", api.core)
    router.add_get("/apis/{group}", api.api_group)
    router.add_route("*", "/apis/{group}/{version}{tail:(/.*)?}", api.grouped)
    return app
