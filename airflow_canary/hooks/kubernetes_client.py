"""One async Kubernetes API client per event loop and connection, shared by the hooks of a process.

Airflow's triggerer runs every trigger of a process on one asyncio loop. A trigger that builds
a client per poll pays, each time, for the provider's configuration loading, an SSL context
(the CA bundle load) and an aiohttp session, all on the loop every other trigger waits on; a
thousand triggers would each keep their own pool of connections to the API server. Here every
``AsyncIstioHook`` of a loop that uses the same Airflow connection holds a share of one client,
built once and closed by the last holder to let go.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Any

from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook


class SharedKubernetesClient:
    """The client of one Kubernetes connection on one event loop, and how many hooks hold it.

    The client is the cncf-kubernetes provider's (``AsyncKubernetesHook.get_conn()``: its
    kubeconfig/in-cluster loading and its request timeout), kept open between calls instead of
    being built and closed around each one. ``served_versions`` caches which version of each
    Istio kind the API server serves (``IstioKind`` -> version), discovered once per client.

    Use :func:`acquire` and :func:`release`, not the constructor.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, conn_id: str) -> None:
        self.loop = loop
        self.conn_id = conn_id
        self.kubernetes_hook = AsyncKubernetesHook(conn_id=conn_id)
        self.holders = 0
        self.served_versions: dict[Any, str] = {}
        self.api_client: Any = None
        # An async generator: if a loop ends with the client still held (a hook nobody
        # closed), asyncio.run() finalises it (PEP 525's shutdown_asyncgens) and so closes it.
        self._lifetime = self._open()
        self._opening: asyncio.Task[Any] | None = None
        self.closed = False

    async def _open(self) -> AsyncGenerator[Any, None]:
        async with self.kubernetes_hook.get_conn() as api_client:
            yield api_client

    async def _first(self) -> Any:
        return await anext(self._lifetime)

    async def ready(self) -> Any:
        """The open client; the first caller opens it, callers arriving meanwhile wait for it."""
        if self._opening is None:
            self._opening = self.loop.create_task(self._first())
        self.api_client = await asyncio.shield(self._opening)
        return self.api_client

    async def refresh(self) -> None:
        """Reload the connection's credentials where the provider would before a call.

        The provider loads a static configuration (token, client certificate) once and
        reloads one using an exec plugin (EKS, GKE) on every ``get_conn()`` so short-lived
        tokens are renewed; the shared client keeps that: the reload updates the configuration
        object the client reads its token from on each request.
        """
        await self.kubernetes_hook._load_config()

    async def aclose(self) -> None:
        self.closed = True
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()
            with contextlib.suppress(BaseException):
                await opening
        await self._lifetime.aclose()


#: The process's shared clients, by event loop and Airflow connection id.
_CLIENTS: dict[tuple[asyncio.AbstractEventLoop, str], SharedKubernetesClient] = {}


async def acquire(conn_id: str) -> SharedKubernetesClient:
    """A share of the running loop's client for ``conn_id``, opened if needed.

    :raises: whatever opening the client raises (e.g. Airflow's ``AirflowNotFoundException``
        for a missing connection); the next call tries again
    """
    loop = asyncio.get_running_loop()
    _forget_ended_loops()
    key = (loop, conn_id)
    shared = _CLIENTS.get(key)
    if shared is None or shared.closed:
        shared = _CLIENTS[key] = SharedKubernetesClient(loop, conn_id)
    shared.holders += 1
    try:
        await shared.ready()
    except BaseException:
        shared.holders -= 1
        opening = shared._opening
        if opening is not None and opening.done() and _CLIENTS.get(key) is shared:
            del _CLIENTS[key]
        raise
    return shared


async def release(shared: SharedKubernetesClient) -> None:
    """Give up one share; the last holder closes the client (on its own loop only)."""
    shared.holders -= 1
    if shared.holders > 0:
        return
    key = (shared.loop, shared.conn_id)
    if _CLIENTS.get(key) is shared:
        del _CLIENTS[key]
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is shared.loop and not shared.closed:
        await shared.aclose()


def _forget_ended_loops() -> None:
    for key in [key for key in _CLIENTS if key[0].is_closed()]:
        del _CLIENTS[key]  # its loop ended; the client was finalised with it


def open_clients() -> list[SharedKubernetesClient]:
    """The shared clients of this process whose loops still run (for diagnostics)."""
    _forget_ended_loops()
    return list(_CLIENTS.values())
