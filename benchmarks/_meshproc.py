"""Benchmark helper: run the mesh's runner, data plane and metrics in this process, with two model backends."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
import tempfile
from pathlib import Path

from aiohttp import web

from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey
from airflow_canary.local.dataplane.proxy import create_data_app
from airflow_canary.local.dataplane.telemetry import Telemetry, create_metrics_app
from airflow_canary.local.workloads.runner import PORT_ANNOTATION, ProcessRunner

SERVER = Path(__file__).resolve().parent.parent / "tests" / "local" / "apps" / "version_server.py"


def deployment(version: str, replicas: int) -> dict:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": f"model-{version}", "namespace": "default"},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "model", "version": version}},
            "template": {
                "metadata": {"labels": {"app": "model", "version": version}},
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "image": "bench",
                            "command": [sys.executable, str(SERVER), version],
                            "ports": [{"containerPort": 8080}],
                            "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}},
                        }
                    ]
                },
            },
        },
    }


async def main(replicas: int, canary_weight: int) -> None:
    store = ObjectStore()
    telemetry = Telemetry()
    runner = ProcessRunner(store, Path(tempfile.mkdtemp(prefix="mesh-bench-")), {})
    await runner.start()
    store.create(
        ResourceKey("", "services", "default", "model-service"),
        {
            "apiVersion": "v1",
            "kind": "Service",
            "spec": {"selector": {"app": "model"}, "ports": [{"port": 80}]},
        },
    )
    store.create(
        ResourceKey("networking.istio.io", "destinationrules", "default", "model-destination"),
        {
            "spec": {
                "host": "model-service",
                "subsets": [{"name": v, "labels": {"version": v}} for v in ("v1", "v2")],
            }
        },
    )
    store.create(
        ResourceKey("networking.istio.io", "virtualservices", "default", "model-virtual-service"),
        {
            "spec": {
                "hosts": ["model-service"],
                "http": [
                    {
                        "route": [
                            {
                                "destination": {"host": "model-service", "subset": "v1"},
                                "weight": 100 - canary_weight,
                            },
                            {
                                "destination": {"host": "model-service", "subset": "v2"},
                                "weight": canary_weight,
                            },
                        ]
                    }
                ],
            }
        },
    )
    for version in ("v1", "v2"):
        store.create(
            ResourceKey("apps", "deployments", "default", f"model-{version}"),
            deployment(version, replicas),
        )
    sites = []
    for app in (create_data_app(store, telemetry), create_metrics_app(telemetry)):
        app_runner = web.AppRunner(app, access_log=None)
        await app_runner.setup()
        await web.TCPSite(app_runner, "127.0.0.1", 0).start()
        sites.append(app_runner)
    while True:
        statuses = [
            store.get(ResourceKey("apps", "deployments", "default", f"model-{v}")).get("status")
            or {}
            for v in ("v1", "v2")
        ]
        if all(s.get("readyReplicas") == replicas for s in statuses):
            break
        await asyncio.sleep(0.1)
    backends = [int(p["metadata"]["annotations"][PORT_ANNOTATION]) for p in store.list("", "pods")]
    print(
        json.dumps(
            {
                "data_port": sites[0].addresses[0][1],
                "metrics_port": sites[1].addresses[0][1],
                "backends": backends,
                "pids": sorted(runner.pids()),
            }
        ),
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for site in sites:
        await site.cleanup()
    await runner.stop()


if __name__ == "__main__":
    from airflow_canary.local.mesh import run_event_loop

    run_event_loop(
        main(
            int(sys.argv[1]) if len(sys.argv) > 1 else 1,
            int(sys.argv[2]) if len(sys.argv) > 2 else 50,
        )
    )
