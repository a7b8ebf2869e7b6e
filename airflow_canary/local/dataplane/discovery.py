"""Prometheus HTTP service discovery of the mesh's pods, following the prometheus.io annotations.

A pod is a scrape target when its template carries ``prometheus.io/scrape: "true"``, as with
Prometheus's ``kubernetes_sd_configs`` (role: pod) on a real cluster; ``prometheus.io/path``
(default ``/metrics``) and ``prometheus.io/port`` (a container port, mapped to the process's
local port) refine it. Prometheus reads the list from ``/sd/pods`` through ``http_sd_configs``.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from airflow_canary.local.apiserver.store import ObjectStore
from airflow_canary.local.workloads.runner import PORT_ANNOTATION

SCRAPE = "prometheus.io/scrape"
PATH = "prometheus.io/path"


def _ready(pod: dict[str, Any]) -> bool:
    for condition in (pod.get("status") or {}).get("conditions") or []:
        if condition.get("type") == "Ready":
            return condition.get("status") == "True"
    return False


def pod_scrape_targets(store: ObjectStore) -> list[dict[str, Any]]:
    """Target groups in Prometheus's http_sd format, one per ready annotated pod."""
    groups = []
    for pod in store.list("", "pods"):
        meta = pod.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if str(annotations.get(SCRAPE, "")).lower() != "true" or not _ready(pod):
            continue
        port = annotations.get(PORT_ANNOTATION)
        if not port:
            continue
        labels = {
            "namespace": meta.get("namespace", ""),
            "pod": meta.get("name", ""),
            "__metrics_path__": annotations.get(PATH) or "/metrics",
        }
        owners = meta.get("ownerReferences") or []
        if owners:
            labels["workload"] = owners[0].get("name", "")
        groups.append({"targets": [f"127.0.0.1:{port}"], "labels": labels})
    return groups


def add_discovery_routes(app: web.Application, store: ObjectStore) -> None:
    """Serve the pod targets at ``/sd/pods`` on ``app``."""

    async def pods(_request: web.Request) -> web.Response:
        return web.json_response(pod_scrape_targets(store))

    app.router.add_get("/sd/pods", pods)
