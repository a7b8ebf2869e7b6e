"""The data plane mirrors like Istio: one x-request-id, a ``-shadow`` authority, answers dropped.

Pinned behaviours of Istio/Envoy, each from its source:

- Envoy's connection manager generates ``x-request-id`` when the request has none, before
  routing; the router's shadow copy carries the same headers, so v1's request and v2's mirrored
  copy share the id (Envoy ``request_id_extension``; Istio's mirroring task joins them by it).
- The shadow copy's authority is the host with ``-shadow`` appended (Envoy
  ``RequestMirrorPolicy``: "the Host/Authority header is suffixed with -shadow").
- Mirroring is fire-and-forget: the caller's response never waits for, nor carries, the mirror's
  answer (Istio VirtualService ``mirror``: "responses are discarded").
- ``mirrorPercentage.value`` is the share of requests copied.
- Telemetry: the mirror target's sidecar reports the copy (``reporter="destination"``), the
  caller's sidecar does not (no ``reporter="source"`` series for it): istio/istio#23496.
"""

from __future__ import annotations

import asyncio
import collections
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from scipy.stats import binom

from airflow_canary.routing import RouteTarget
from airflow_canary.routing.istio_mirror import set_mirror
from tests.local.apps.inprocess import InProcessMesh, seed, version_deployment
from tests.local.test_dataplane import run, send
from tests.local.test_telemetry import samples

pytestmark = pytest.mark.timeout(120)


async def _stats(session: aiohttp.ClientSession, mesh: InProcessMesh, version: str) -> Any:
    port = mesh.pods(f"model-{version}")[0]["metadata"]["annotations"][
        "mesh.airflow-canary.io/port"
    ]
    async with session.get(f"http://127.0.0.1:{port}/_stats") as resp:
        return await resp.json()


async def _poll(
    session: aiohttp.ClientSession, mesh: InProcessMesh, done: Any, version: str = "v2"
) -> Any:
    for _ in range(400):
        stats = await _stats(session, mesh, version)
        if done(stats):
            return stats
        await asyncio.sleep(0.05)
    raise AssertionError(f"model-{version} never reached the expected state: {stats}")


def _counts(metrics: str) -> collections.Counter[tuple[str, str, str]]:
    """istio_requests_total by (reporter, destination_version, response_code)."""
    by: collections.Counter[tuple[str, str, str]] = collections.Counter()
    for sample in samples(metrics, "istio_requests_total"):
        labels = sample.labels
        key = (labels["reporter"], labels["destination_version"], labels["response_code"])
        by[key] += int(sample.value)
    return by


async def _mesh(mesh: InProcessMesh, percent: float, **v2_env: str) -> None:
    mesh.apply(seed("service-model-service"))
    mesh.apply(seed("destinationrule-model-destination"))
    mesh.apply(version_deployment("v1", 1))
    mesh.apply(version_deployment("v2", 1, **v2_env))
    await mesh.wait_ready("model-v1", 1)
    await mesh.wait_ready("model-v2", 1)
    # The product's own mirror, as SetMirrorOperator writes it.
    mesh.apply(set_mirror(seed("vs-00-all-v1"), RouteTarget(), percent))


def test_the_copy_shares_the_request_id_and_the_caller_never_waits_for_it(
    tmp_path: Path,
) -> None:
    hold = tmp_path / "release-v2"
    n = 20
    given_ids = [f"caller-{i}" for i in range(n)]

    async def scenario() -> tuple[list[dict[str, Any]], Any, Any, str]:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            # v2 holds every mirrored request open, then answers 500.
            await _mesh(mesh, 100, HOLD_FILE=str(hold), STATUS="500")
            answers = []
            for i in range(2 * n):
                headers = {"Host": "model-service"}
                if i < n:
                    headers["x-request-id"] = given_ids[i]  # half come with an id, half without
                async with session.post(
                    mesh.data_url + "/predict", json={"i": i}, headers=headers
                ) as resp:
                    answers.append(
                        {"status": resp.status, **(await resp.json()), "served": resp.headers}
                    )
            # Every caller has its answer while v2 still holds every copy unanswered.
            held = await _poll(session, mesh, lambda s: s["requests"] >= 2 * n)
            hold.write_text("go")
            await _poll(session, mesh, lambda s: s["answered"] >= 2 * n)
            v2 = await _stats(session, mesh, "v2")
            for _ in range(200):  # the mesh records a copy once its answer has been read
                async with session.get(mesh.metrics_url) as resp:
                    metrics = await resp.text()
                if _counts(metrics)[("destination", "v2", "500")] >= 2 * n:
                    break
                await asyncio.sleep(0.05)
            return answers, held, v2, metrics

    answers, held, v2, metrics = run(scenario())
    assert [a["status"] for a in answers] == [200] * (2 * n)
    assert {a["version"] for a in answers} == {"v1"}
    assert all(a["served"]["x-canary-served-by"] == "v1" for a in answers)
    assert held["requests"] == 2 * n and held["answered"] == 0  # the copies were still open
    assert set(held["hosts"]) == {"model-service-shadow"}

    live_ids = [a["headers"]["x-request-id"] for a in answers]
    assert live_ids[:n] == given_ids  # an id the caller sent is kept
    generated = live_ids[n:]
    assert all(str(uuid.UUID(i)) == i for i in generated)  # one is set when there was none
    assert len(set(generated)) == n
    assert sorted(v2["request_ids"]) == sorted(live_ids)  # each copy has its request's id

    assert _counts(metrics) == {
        ("source", "v1", "200"): 2 * n,
        ("destination", "v1", "200"): 2 * n,
        ("destination", "v2", "500"): 2 * n,  # the copies, seen by v2's sidecar only
    }


def test_mirror_percentage_is_the_share_of_requests_copied(tmp_path: Path) -> None:
    n = 400

    async def scenario() -> tuple[Any, collections.Counter[tuple[int, str]]]:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            await _mesh(mesh, 25)
            sent = await send(session, mesh.data_url, n)
            before = -1
            stats: Any = {}
            while True:  # until the copies in flight have landed
                await asyncio.sleep(0.2)
                stats = await _stats(session, mesh, "v2")
                if stats["requests"] == before:
                    return stats, sent
                before = stats["requests"]

    stats, sent = run(scenario())
    assert sent == {(200, "v1"): n}
    # Copying 1/4 of n requests: within the binomial's 1e-6 tails.
    low, high = binom.ppf(1e-6, n, 0.25), binom.isf(1e-6, n, 0.25)
    assert low <= stats["requests"] <= high, stats
