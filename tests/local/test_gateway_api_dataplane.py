"""Gateway API through the running data plane: an HTTPRoute splits real requests between two
Services' pods, mirrors a fraction to the canary, and Istio-standard telemetry labels each
request with the backend Service and the pod's workload and version, so the product's PromQL
reads a Gateway API rollout the same way as an Istio one."""

from __future__ import annotations

import asyncio
import collections
import copy
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from scipy.stats import binom

from airflow_canary.local.apiserver.schema import load_crd_dir
from tests.conftest import EXAMPLE_MANIFESTS
from tests.local.apps.inprocess import InProcessMesh, seed, version_deployment
from tests.local.test_dataplane import run, send
from tests.local.test_telemetry import samples

pytestmark = pytest.mark.timeout(120)


GATEWAY_API_MANIFESTS = EXAMPLE_MANIFESTS / "gateway-api"


def gateway_api_manifest(name: str) -> dict[str, Any]:
    """An example manifest of the Gateway API flow (``examples/manifests/gateway-api/``)."""
    return dict(yaml.safe_load((GATEWAY_API_MANIFESTS / f"{name}.yaml").read_text()))


async def gateway_model_mesh(mesh: InProcessMesh) -> None:
    mesh.apply(seed("service-model-service"))
    for name in ("service-model-v1", "service-model-v2"):
        mesh.apply(gateway_api_manifest(name))
    mesh.apply(version_deployment("v1", 1))
    mesh.apply(version_deployment("v2", 1))
    await mesh.wait_ready("model-v1", 1)
    await mesh.wait_ready("model-v2", 1)


async def requests_seen(session: aiohttp.ClientSession, mesh: InProcessMesh) -> Any:
    """v2's own request count once mirrored copies still in flight have landed (it stops moving)."""
    port = mesh.pods("model-v2")[0]["metadata"]["annotations"]["mesh.airflow-canary.io/port"]
    last: dict[str, Any] | None = None
    for _ in range(100):
        async with session.get(f"http://127.0.0.1:{port}/_stats") as resp:
            stats = await resp.json()
        if last is not None and stats["requests"] == last["requests"]:
            return stats
        last = stats
        await asyncio.sleep(0.1)
    raise AssertionError(f"mirrored requests still arriving: {last}")


def test_httproute_split_mirror_and_istio_telemetry(
    tmp_path: Path, gateway_api_crds_dir: Path
) -> None:
    schemas = load_crd_dir(gateway_api_crds_dir)
    all_v1 = gateway_api_manifest("httproute-00-all-v1")
    mirrored = copy.deepcopy(all_v1)
    mirrored["spec"]["rules"][0]["filters"] = [
        {
            "type": "RequestMirror",
            "requestMirror": {
                "backendRef": {"name": "model-v2", "port": 80},
                "fraction": {"numerator": 1, "denominator": 2},
            },
        }
    ]
    half = copy.deepcopy(all_v1)
    for ref in half["spec"]["rules"][0]["backendRefs"]:
        ref["weight"] = 50
    for doc in (all_v1, mirrored, half):
        assert schemas.validate(doc) == []
    n = 300

    async def scenario() -> tuple[Any, collections.Counter[tuple[int, str]], str]:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            await gateway_model_mesh(mesh)
            mesh.apply(mirrored)
            assert await send(session, mesh.data_url, n) == {(200, "v1"): n}
            stats = await requests_seen(session, mesh)
            mesh.apply(half)
            sent = await send(session, mesh.data_url, n)
            async with session.get(mesh.metrics_url) as resp:
                return stats, sent, await resp.text()

    stats, sent, text = run(scenario())
    # Mirroring 1/2 of n requests: within the binomial's 1e-6 tails.
    low, high = binom.ppf(1e-6, n, 0.5), binom.isf(1e-6, n, 0.5)
    assert low <= stats["requests"] <= high, stats
    assert set(stats["hosts"]) == {"model-service-shadow"}
    assert set(sent) == {(200, "v1"), (200, "v2")}
    low, high = binom.ppf(1e-6, n, 0.5), binom.isf(1e-6, n, 0.5)
    assert low <= sent[(200, "v2")] <= high, sent

    by_version: collections.Counter[str] = collections.Counter()
    by_source: collections.Counter[str] = collections.Counter()
    for sample in samples(text, "istio_requests_total"):
        labels = sample.labels
        version = labels["destination_version"]
        assert labels["reporter"] in ("destination", "source"), labels
        if labels["reporter"] == "source":
            # The gateway's own report: Istio's stats filter sees the routed request only,
            # never the shadow copy Envoy's router sends beside it.
            by_source[version] += int(sample.value)
            continue
        assert labels["destination_service"] == f"model-{version}.default.svc.cluster.local"
        assert labels["destination_service_name"] == f"model-{version}"
        assert labels["destination_workload"] == f"model-{version}"
        assert labels["destination_workload_namespace"] == "default"
        assert labels["destination_canonical_revision"] == version
        by_version[version] += int(sample.value)
    # Shadow copies are served by v2's pod and reported by its sidecar, as in Istio.
    assert by_version == {
        "v1": n + sent[(200, "v1")],
        "v2": stats["requests"] + sent[(200, "v2")],
    }
    assert by_source == {"v1": n + sent[(200, "v1")], "v2": sent[(200, "v2")]}
