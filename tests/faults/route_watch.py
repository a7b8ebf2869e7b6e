"""Every state a VirtualService goes through, seen with a real Kubernetes watch in a thread."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tests.faults.outcomes import split_of


def http_key(virtual_service: Mapping[str, Any]) -> str:
    """The routing part of a VirtualService (``spec.http``) as canonical JSON, to compare states."""
    return json.dumps(virtual_service.get("spec", {}).get("http"), sort_keys=True)


@dataclass(frozen=True)
class Seen:
    """One version of the object: when it was seen (epoch seconds), its resourceVersion, spec.http."""

    at: float
    resource_version: str
    http: str

    @property
    def split(self) -> dict[str, int]:
        return split_of({"spec": {"http": json.loads(self.http)}})


class RouteWatch:
    """Watch one VirtualService (``watch=true`` list of its namespace, as kubectl/informers do)
    from start to :meth:`stop`; ``seen`` holds every version observed, in order.

    Each ADDED/MODIFIED event is one stored version, so a write that leaves the object in a
    mixed state cannot slip between two reads.
    """

    def __init__(self, api_client: Any, name: str, namespace: str = "default") -> None:
        self.api_client = api_client
        self.name = name
        self.namespace = namespace
        self.seen: list[Seen] = []
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch-{name}", daemon=True)

    def __enter__(self) -> RouteWatch:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        from kubernetes.client import CustomObjectsApi

        api = CustomObjectsApi(self.api_client)
        listed = api.list_namespaced_custom_object(
            "networking.istio.io", "v1", self.namespace, "virtualservices"
        )
        self._resource_version = listed["metadata"]["resourceVersion"]
        for item in listed["items"]:
            self._add(item)
        self._thread.start()

    def stop(self, drain_seconds: float = 15.0) -> None:
        """Stop once the watch has delivered the version the API serves now (or after
        ``drain_seconds``): a write made just before the stop is in :attr:`seen`, however far
        the watch's events lag on a loaded machine. resourceVersions are compared for equality
        only, as Kubernetes asks of clients (they are opaque)."""
        from kubernetes.client import CustomObjectsApi

        try:
            current = CustomObjectsApi(self.api_client).get_namespaced_custom_object(
                "networking.istio.io", "v1", self.namespace, "virtualservices", self.name
            )["metadata"]["resourceVersion"]
        except Exception as err:  # the object or the API is gone: stop with what was seen
            self.errors.append(repr(err))
            current = None
        deadline = time.monotonic() + drain_seconds
        while (
            current is not None
            and self._thread.is_alive()
            and not any(seen.resource_version == str(current) for seen in self.seen)
            and time.monotonic() < deadline
        ):
            time.sleep(0.1)
        self._stop.set()
        self._thread.join(timeout=15)

    def _add(self, item: Mapping[str, Any]) -> None:
        if item["metadata"]["name"] != self.name:
            return
        version = str(item["metadata"]["resourceVersion"])
        if self.seen and self.seen[-1].resource_version == version:
            return
        self.seen.append(Seen(time.time(), version, http_key(item)))

    def _run(self) -> None:
        from kubernetes import watch
        from kubernetes.client import CustomObjectsApi

        api = CustomObjectsApi(self.api_client)
        while not self._stop.is_set():
            stream = watch.Watch()
            try:
                for event in stream.stream(
                    api.list_namespaced_custom_object,
                    "networking.istio.io",
                    "v1",
                    self.namespace,
                    "virtualservices",
                    resource_version=self._resource_version,
                    timeout_seconds=2,
                ):
                    item = event["object"]
                    self._resource_version = item["metadata"]["resourceVersion"]
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._add(item)
                    if self._stop.is_set():
                        break
            except Exception as err:  # a restarted API server: watch again from the last version
                self.errors.append(repr(err))
                time.sleep(0.2)
            finally:
                stream.stop()

    def unexpected(self, allowed: Iterable[str]) -> list[Seen]:
        """Versions whose ``spec.http`` is none of ``allowed`` (``http_key`` values)."""
        keys = set(allowed)
        return [seen for seen in self.seen if seen.http not in keys]

    def distinct(self) -> list[str]:
        """The distinct ``spec.http`` states, in the order first seen."""
        out: list[str] = []
        for seen in self.seen:
            if seen.http not in out:
                out.append(seen.http)
        return out
