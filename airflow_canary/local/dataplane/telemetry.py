"""Istio-standard request metrics of the local mesh's data plane, served for Prometheus at /stats/prometheus."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aiohttp import web
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)

#: Istio's default buckets for istio_request_duration_milliseconds.
ISTIO_DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000,
    30000, 60000, 300000, 600000, 1800000, 3600000,
)  # fmt: skip

UNKNOWN = "unknown"

#: Label names, in the order Istio's standard metrics carry them (the subset the mesh can know).
LABEL_NAMES: tuple[str, ...] = (
    "reporter",
    "source_workload",
    "source_workload_namespace",
    "source_app",
    "source_version",
    "destination_service",
    "destination_service_name",
    "destination_service_namespace",
    "destination_workload",
    "destination_workload_namespace",
    "destination_app",
    "destination_version",
    "destination_canonical_service",
    "destination_canonical_revision",
    "request_protocol",
    "response_code",
    "response_flags",
    "connection_security_policy",
)


@dataclass(frozen=True)
class Destination:
    """Who served a request: the Service it was addressed to and the pod (workload) behind it."""

    service_name: str
    service_namespace: str
    workload: str = UNKNOWN
    workload_namespace: str = UNKNOWN
    app: str = UNKNOWN
    version: str = UNKNOWN
    canonical_service: str = UNKNOWN
    canonical_revision: str = UNKNOWN

    @property
    def service_fqdn(self) -> str:
        return f"{self.service_name}.{self.service_namespace}.svc.cluster.local"

    @classmethod
    def of_pod(cls, service_name: str, service_namespace: str, pod: dict[str, Any]) -> Destination:
        """Label a request served by ``pod`` the way Istio's destination sidecar would."""
        meta = pod.get("metadata") or {}
        labels: dict[str, str] = meta.get("labels") or {}
        owners = meta.get("ownerReferences") or []
        workload = owners[0]["name"] if owners else meta.get("name", UNKNOWN)
        app = labels.get("app", UNKNOWN)
        version = labels.get("version", UNKNOWN)
        return cls(
            service_name=service_name,
            service_namespace=service_namespace,
            workload=workload,
            workload_namespace=meta.get("namespace", service_namespace),
            app=app,
            version=version,
            canonical_service=labels.get("service.istio.io/canonical-name", app),
            canonical_revision=labels.get("service.istio.io/canonical-revision", version),
        )


class Telemetry:
    """``istio_requests_total`` and ``istio_request_duration_milliseconds`` on a private registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests_total = Counter(
            "istio_requests_total",
            "Requests handled by the mesh data plane (Istio standard metric)",
            LABEL_NAMES,
            registry=self.registry,
        )
        self.request_duration = Histogram(
            "istio_request_duration_milliseconds",
            "Request duration in milliseconds (Istio standard metric)",
            LABEL_NAMES,
            buckets=ISTIO_DURATION_BUCKETS_MS,
            registry=self.registry,
        )
        # labels() takes a lock and hashes every call; the hot path reuses the children.
        self._children: dict[tuple[str, ...], tuple[Any, Any]] = {}

    def record(
        self,
        destination: Destination,
        response_code: int,
        duration_ms: float,
        *,
        response_flags: str = "-",
        reporter: str = "destination",
    ) -> None:
        """Count one request to ``destination`` as ``reporter`` saw it.

        Istio's sidecars report twice: ``reporter="destination"`` is the server's sidecar,
        once per attempt that reached the pod; ``reporter="source"`` is the caller's sidecar,
        once per client request after retries, including answers the proxy gave itself
        (503 with response flags UH, UF, URX) that no destination ever saw.
        """
        if reporter not in ("destination", "source"):
            raise ValueError(f"reporter must be 'destination' or 'source', got {reporter!r}")
        values = (
            reporter,
            UNKNOWN,
            UNKNOWN,
            UNKNOWN,
            UNKNOWN,
            destination.service_fqdn,
            destination.service_name,
            destination.service_namespace,
            destination.workload,
            destination.workload_namespace,
            destination.app,
            destination.version,
            destination.canonical_service,
            destination.canonical_revision,
            "http",
            str(response_code),
            response_flags,
            "none",
        )
        children = self._children.get(values)
        if children is None:
            children = (self.requests_total.labels(*values), self.request_duration.labels(*values))
            self._children[values] = children
        children[0].inc()
        children[1].observe(duration_ms)

    def exposition(self) -> bytes:
        return generate_latest(self.registry)


def create_metrics_app(telemetry: Telemetry) -> web.Application:
    """The app the mesh serves on ``--metrics-port``: Prometheus text format at ``/stats/prometheus``."""

    async def stats(_request: web.Request) -> web.Response:
        return web.Response(
            body=telemetry.exposition(), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/stats/prometheus", stats)
    app.router.add_get("/metrics", stats)
    return app
