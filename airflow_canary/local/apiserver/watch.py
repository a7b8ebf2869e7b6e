"""Watch handler of the local API server: streamed JSON-lines events, as kubectl get -w and informers read them."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.base import ApiBase, rv, rv_int, wants_table
from airflow_canary.local.apiserver.request import (
    ResourcePath,
    parse_field_selector,
    parse_label_selector,
    selected,
)
from airflow_canary.local.apiserver.store import ResourceKey

Obj = dict[str, Any]


class Watch(ApiBase):
    """``?watch=true`` on a collection: synthetic ADDED events for ``resourceVersion`` 0, then live events."""

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
                    if since and rv(obj) <= rv_int(since):
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
        return self._table(request, path.rtype, [obj]) if wants_table(request) else obj


def _event(kind: str, obj: Obj) -> bytes:
    return (json.dumps({"type": kind, "object": obj}) + "\n").encode()
