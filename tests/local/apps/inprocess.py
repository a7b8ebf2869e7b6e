"""An in-process local mesh for tests: a real ObjectStore, ProcessRunner, data plane and metrics on free ports."""

from __future__ import annotations

import asyncio
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from airflow_canary.local.apiserver.store import NotFound, ObjectStore, ResourceKey
from airflow_canary.local.dataplane.proxy import create_data_app
from airflow_canary.local.dataplane.telemetry import Telemetry, create_metrics_app
from airflow_canary.local.workloads.runner import ProcessRunner
from tests.conftest import seed_manifest

APPS = Path(__file__).resolve().parent
VERSION_SERVER = APPS / "version_server.py"

_PLURALS = {
    "Deployment": ("apps", "deployments"),
    "Service": ("", "services"),
    "Pod": ("", "pods"),
    "VirtualService": ("networking.istio.io", "virtualservices"),
    "DestinationRule": ("networking.istio.io", "destinationrules"),
    "HTTPRoute": ("gateway.networking.k8s.io", "httproutes"),
    "Gateway": ("gateway.networking.k8s.io", "gateways"),
    "ReferenceGrant": ("gateway.networking.k8s.io", "referencegrants"),
}


def key_of(obj: dict[str, Any]) -> ResourceKey:
    group, plural = _PLURALS[obj["kind"]]
    meta = obj["metadata"]
    return ResourceKey(group, plural, meta.get("namespace", "default"), meta["name"])


def seed(name: str) -> dict[str, Any]:
    """A seed manifest by file name (without .yaml)."""
    return dict(yaml.safe_load(seed_manifest(name).read_text()))


def version_deployment(version: str, replicas: int = 2, **env: str) -> dict[str, Any]:
    """The seed's model-<version> Deployment running the test version server, with a /healthz readiness probe."""
    dep = seed(f"deployment-model-{version}")
    dep["spec"]["replicas"] = replicas
    container = dep["spec"]["template"]["spec"]["containers"][0]
    container["command"] = [sys.executable, str(VERSION_SERVER)]
    container["env"] = [{"name": "VERSION", "value": version}] + [
        {"name": k, "value": v} for k, v in env.items()
    ]
    container["readinessProbe"] = {
        "httpGet": {"path": "/healthz", "port": 8080},
        "periodSeconds": 1,
    }
    return dep


class InProcessMesh:
    """Runs the runner, data plane and metrics app in the current event loop."""

    def __init__(self, state_dir: Path, image_map: dict[str, list[str]] | None = None) -> None:
        self.store = ObjectStore()
        self.telemetry = Telemetry()
        self.runner = ProcessRunner(self.store, state_dir, image_map or {})
        self._sites: list[web.AppRunner] = []
        self.data_url = ""
        self.metrics_url = ""

    async def __aenter__(self) -> InProcessMesh:
        await self.runner.start()
        self.data_url = await self._serve(create_data_app(self.store, self.telemetry))
        self.metrics_url = (
            await self._serve(create_metrics_app(self.telemetry)) + "/stats/prometheus"
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        for site in self._sites:
            await site.cleanup()
        await self.runner.stop()

    async def _serve(self, app: web.Application) -> str:
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._sites.append(runner)
        port = runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        key = key_of(obj)
        obj = copy.deepcopy(obj)
        try:
            current = self.store.get(key)
        except NotFound:
            return self.store.create(key, obj)
        obj["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return self.store.replace(key, obj)

    def delete(self, obj: dict[str, Any]) -> None:
        self.store.delete(key_of(obj))

    def deployment_status(self, name: str, namespace: str = "default") -> dict[str, Any]:
        return dict(
            self.store.get(ResourceKey("apps", "deployments", namespace, name)).get("status") or {}
        )

    def pods(self, deployment: str, namespace: str = "default") -> list[dict[str, Any]]:
        return [
            p
            for p in self.store.list("", "pods", namespace)
            if any(o.get("name") == deployment for o in p["metadata"].get("ownerReferences", []))
        ]

    async def wait_ready(self, name: str, replicas: int, timeout: float = 20.0) -> dict[str, Any]:
        def ready() -> bool:
            status = self.deployment_status(name)
            return status.get("readyReplicas") == replicas and status.get("replicas") == replicas

        await wait_for(ready, timeout, f"deployment {name} to have {replicas} ready replicas")
        return self.deployment_status(name)


async def wait_for(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
