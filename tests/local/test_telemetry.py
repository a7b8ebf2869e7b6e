"""Telemetry: Istio-standard metrics at /stats/prometheus count exactly the requests the data plane proxied."""

from __future__ import annotations

import asyncio
import collections
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from airflow_canary.local.dataplane.telemetry import (
    ISTIO_DURATION_BUCKETS_MS,
    Destination,
    Telemetry,
)
from tests.local.apps.inprocess import InProcessMesh, seed, version_deployment
from tests.local.test_dataplane import send

pytestmark = pytest.mark.timeout(60)


def samples(text: str, name: str) -> list[Any]:
    return [
        s
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == name
    ]


def test_counts_per_version_and_code_equal_requests_sent(tmp_path: Path) -> None:
    async def scenario() -> tuple[str, collections.Counter[tuple[int, str]]]:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            mesh.apply(seed("service-model-service"))
            mesh.apply(seed("destinationrule-model-destination"))
            mesh.apply(version_deployment("v1", 1))
            mesh.apply(version_deployment("v2", 1, STATUS="500"))  # a failing canary
            await mesh.wait_ready("model-v1", 1)
            await mesh.wait_ready("model-v2", 1)
            mesh.apply(seed("vs-03-canary-50"))
            sent = await send(session, mesh.data_url, 400)
            broken = seed("vs-04-all-v2")
            broken["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v7"
            mesh.apply(broken)
            sent += await send(session, mesh.data_url, 7)
            async with session.get(mesh.data_url + "/", headers={"Host": "unknown-host"}) as resp:
                assert resp.status == 404  # never reaches a destination: not counted
            async with session.get(mesh.metrics_url) as resp:
                assert resp.status == 200
                return await resp.text(), sent

    text, sent = run(scenario())
    assert sent[(500, "v2")] > 0 and sent[(200, "v1")] > 0 and sent[(503, "")] == 7
    # No healthy upstream: the caller's sidecar answers 503 UH itself; only reporter="source"
    # sees it (istio/istio#28387), so the destination counts everything else.
    source = [s for s in samples(text, "istio_requests_total") if s.labels["reporter"] == "source"]
    assert sum(s.value for s in source) == sum(sent.values())
    (uh,) = [s for s in source if s.labels["response_flags"] == "UH"]
    assert uh.value == 7 and uh.labels["destination_version"] == "unknown"
    assert uh.labels["destination_service"] == "model-service.default.svc.cluster.local"
    del sent[(503, "")]
    counted: collections.Counter[tuple[int, str]] = collections.Counter()
    for sample in samples(text, "istio_requests_total"):
        labels = sample.labels
        if labels["reporter"] == "source":
            continue
        assert labels["reporter"] == "destination"
        assert labels["request_protocol"] == "http"
        assert labels["destination_service"] == "model-service.default.svc.cluster.local"
        assert labels["destination_service_name"] == "model-service"
        assert labels["destination_service_namespace"] == "default"
        version = labels["destination_version"]
        if version != "unknown":
            assert labels["destination_workload"] == f"model-{version}"
            assert labels["destination_workload_namespace"] == "default"
            assert labels["destination_app"] == "model"
            assert labels["destination_canonical_service"] == "model"
            assert labels["destination_canonical_revision"] == version
        counted[(int(labels["response_code"]), "" if version == "unknown" else version)] += int(
            sample.value
        )
    assert counted == sent

    durations: collections.Counter[tuple[int, str]] = collections.Counter()
    for sample in samples(text, "istio_request_duration_milliseconds_count"):
        if sample.labels["reporter"] == "source":
            continue
        durations[(int(sample.labels["response_code"]), sample.labels["destination_version"])] += (
            int(sample.value)
        )
    assert sum(durations.values()) == sum(sent.values())
    buckets = {
        float(s.labels["le"]) for s in samples(text, "istio_request_duration_milliseconds_bucket")
    }
    assert buckets == {float(b) for b in ISTIO_DURATION_BUCKETS_MS} | {float("inf")}


def test_labels_fall_back_to_istio_canonical_labels() -> None:
    pod = {
        "metadata": {
            "name": "reco-abc",
            "namespace": "ml",
            "labels": {
                "app": "reco",
                "version": "v3",
                "service.istio.io/canonical-name": "recommender",
                "service.istio.io/canonical-revision": "2024-06",
            },
            "ownerReferences": [{"kind": "Deployment", "name": "reco-v3"}],
        }
    }
    telemetry = Telemetry()
    telemetry.record(Destination.of_pod("reco", "ml", pod), 200, 3.0)
    (sample,) = samples(telemetry.exposition().decode(), "istio_requests_total")
    assert sample.value == 1
    assert sample.labels["destination_workload"] == "reco-v3"
    assert sample.labels["destination_canonical_service"] == "recommender"
    assert sample.labels["destination_canonical_revision"] == "2024-06"
    assert sample.labels["destination_service"] == "reco.ml.svc.cluster.local"


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 45))


def _retry_scenario(tmp_path: Path, retries: dict[str, Any] | None) -> tuple[str, Any]:
    async def scenario() -> tuple[str, Any]:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            mesh.apply(seed("service-model-service"))
            mesh.apply(seed("destinationrule-model-destination"))
            mesh.apply(version_deployment("v1", 1))
            mesh.apply(version_deployment("v2", 2, STATUS="503"))  # an overloaded canary
            await mesh.wait_ready("model-v1", 1)
            await mesh.wait_ready("model-v2", 2)
            vs = seed("vs-03-canary-50")
            if retries is not None:
                vs["spec"]["http"][0]["retries"] = retries
            mesh.apply(vs)
            sent = await send(session, mesh.data_url, 200)
            async with session.get(mesh.metrics_url) as resp:
                return await resp.text(), sent

    return run(scenario())


def by_reporter(text: str, version: str) -> dict[str, collections.Counter[tuple[str, str]]]:
    out: dict[str, collections.Counter[tuple[str, str]]] = collections.defaultdict(
        collections.Counter
    )
    for s in samples(text, "istio_requests_total"):
        if s.labels["destination_version"] == version:
            key = (s.labels["response_code"], s.labels["response_flags"])
            out[s.labels["reporter"]][key] += int(s.value)
    return out


def test_istio_default_retries_count_every_attempt_at_the_destination(tmp_path: Path) -> None:
    """With no ``retries`` on the route Istio retries 503 twice on another host
    (retryOn connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,
    retriable code 503): the destination reports 3 attempts, the caller's sidecar one
    request with response flag URX."""
    text, sent = _retry_scenario(tmp_path, None)
    failed = sent[(503, "v2")]
    assert failed > 0
    v2 = by_reporter(text, "v2")
    assert v2["destination"] == {("503", "-"): 3 * failed}
    assert v2["source"] == {("503", "URX"): failed}


def test_route_retries_override_the_default(tmp_path: Path) -> None:
    text, sent = _retry_scenario(tmp_path, {"attempts": 0})
    v2 = by_reporter(text, "v2")
    assert v2["destination"] == {("503", "-"): sent[(503, "v2")]}
    assert v2["source"] == {("503", "-"): sent[(503, "v2")]}
    text, sent = _retry_scenario(tmp_path / "again", {"attempts": 1, "retryOn": "gateway-error"})
    assert by_reporter(text, "v2")["destination"] == {("503", "-"): 2 * sent[(503, "v2")]}
