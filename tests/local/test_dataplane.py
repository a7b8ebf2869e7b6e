"""Data plane: Host routing, matches, weighted splits, subsets, mirroring and proxying through real processes."""

from __future__ import annotations

import asyncio
import collections
import random
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from multidict import CIMultiDict
from scipy.stats import binom

from airflow_canary.local.apiserver.store import ObjectStore
from airflow_canary.local.dataplane.proxy import (
    Outcome,
    RequestView,
    RoutingTable,
    Target,
    service_fqdn,
)
from tests.local.apps.inprocess import InProcessMesh, key_of, seed, version_deployment

pytestmark = pytest.mark.timeout(90)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 60))


async def send(
    session: aiohttp.ClientSession,
    url: str,
    n: int,
    *,
    host: str = "model-service",
    headers: dict[str, str] | None = None,
    path: str = "/predict",
    concurrency: int = 16,
) -> collections.Counter[tuple[int, str]]:
    """n requests; returns counts of (status, x-canary-served-by)."""
    counts: collections.Counter[tuple[int, str]] = collections.Counter()
    queue = iter(range(n))

    async def worker() -> None:
        for _ in queue:
            async with session.get(url + path, headers={"Host": host, **(headers or {})}) as resp:
                await resp.read()
                counts[(resp.status, resp.headers.get("x-canary-served-by", ""))] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return counts


async def model_mesh(mesh: InProcessMesh, replicas: int = 2, **v2_env: str) -> None:
    mesh.apply(seed("service-model-service"))
    mesh.apply(seed("destinationrule-model-destination"))
    mesh.apply(version_deployment("v1", replicas))
    mesh.apply(version_deployment("v2", replicas, **v2_env))
    await mesh.wait_ready("model-v1", replicas)
    await mesh.wait_ready("model-v2", replicas)


def test_weight_steps_split_traffic_within_binomial_bounds(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            await model_mesh(mesh)
            for manifest, canary, n in [
                ("vs-00-all-v1", 0, 200),
                ("vs-01-canary-1", 1, 2000),
                ("vs-02-canary-10", 10, 2000),
                ("vs-03-canary-50", 50, 2000),
                ("vs-04-all-v2", 100, 200),
            ]:
                mesh.apply(seed(manifest))  # takes effect on the next request
                counts = await send(session, mesh.data_url, n)
                assert sum(counts.values()) == n
                assert set(counts) <= {(200, "v1"), (200, "v2")}, counts
                v2 = counts[(200, "v2")]
                low, high = binom.interval(0.999, n, canary / 100)
                assert low <= v2 <= high, f"{manifest}: {v2}/{n} to v2, expected {low}..{high}"

    run(scenario())


def test_header_route_reaches_only_v2_and_others_stay_on_v1(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            await model_mesh(mesh)
            mesh.apply(seed("vs-05-header-v2"))
            assert await send(session, mesh.data_url, 100, headers={"x-canary-version": "v2"}) == {
                (200, "v2"): 100
            }
            assert await send(session, mesh.data_url, 100) == {(200, "v1"): 100}
            assert await send(session, mesh.data_url, 50, headers={"x-canary-version": "v3"}) == {
                (200, "v1"): 50
            }
            # round-robin over both v2 pods
            pods = collections.Counter()
            for _ in range(10):
                async with session.get(
                    mesh.data_url + "/", headers={"Host": "model-service", "x-canary-version": "v2"}
                ) as resp:
                    pods[resp.headers["x-canary-pod"]] += 1
            assert sorted(pods.values()) == [5, 5]
            assert all(p.startswith("model-v2-") for p in pods)

    run(scenario())


def test_host_forms_service_fallback_unknown_host_and_forwarding(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            await model_mesh(mesh, replicas=1)
            # No VirtualService: straight to the Service, round-robin over every ready pod.
            assert await send(session, mesh.data_url, 10, concurrency=1) == {
                (200, "v1"): 5,
                (200, "v2"): 5,
            }
            mesh.apply(seed("vs-04-all-v2"))
            for host in [
                "model-service",
                "model-service:80",
                "model-service.default",
                "model-service.default.svc",
                "model-service.default.svc.cluster.local:80",
            ]:
                assert await send(session, mesh.data_url, 3, host=host) == {(200, "v2"): 3}, host
            async with session.get(mesh.data_url + "/", headers={"Host": "nothing-here"}) as resp:
                assert resp.status == 404
                assert "nothing-here" in await resp.text()
            async with session.get(
                mesh.data_url + "/", headers={"Host": "model-service.other"}
            ) as resp:
                assert resp.status == 404
            async with session.post(
                mesh.data_url + "/v1/predict?a=1&b=two",
                headers={"Host": "model-service", "x-custom": "yes", "Connection": "keep-alive"},
                data=b'{"x": [1, 2]}',
            ) as resp:
                echo = await resp.json()
                assert resp.status == 200
                assert resp.headers["x-canary-served-by"] == "v2"
                assert resp.headers["x-canary-pod"] == echo["pod"]
            assert echo["method"] == "POST"
            assert echo["path"] == "/v1/predict?a=1&b=two"
            assert echo["body"] == '{"x": [1, 2]}'
            assert echo["host"] == "model-service"
            assert echo["headers"]["x-custom"] == "yes"

    run(scenario())


def test_subset_without_ready_pods_is_503_naming_it(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            mesh.apply(seed("service-model-service"))
            mesh.apply(seed("destinationrule-model-destination"))
            mesh.apply(version_deployment("v1", 1))
            await mesh.wait_ready("model-v1", 1)
            mesh.apply(seed("vs-04-all-v2"))
            async with session.get(mesh.data_url + "/", headers={"Host": "model-service"}) as resp:
                assert resp.status == 503
                assert "subset 'v2'" in await resp.text()
            vs = seed("vs-04-all-v2")
            vs["spec"]["http"][0]["route"][0]["destination"]["subset"] = "v7"
            mesh.apply(vs)
            async with session.get(mesh.data_url + "/", headers={"Host": "model-service"}) as resp:
                assert resp.status == 503
                assert "'v7'" in await resp.text()

    run(scenario())


def test_mirroring_sends_shadow_copies_and_discards_them(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh, aiohttp.ClientSession() as session:
            await model_mesh(mesh, replicas=1)
            vs = seed("vs-00-all-v1")
            vs["spec"]["http"][0]["mirror"] = {"host": "model-service", "subset": "v2"}
            vs["spec"]["http"][0]["mirrorPercentage"] = {"value": 100.0}
            mesh.apply(vs)
            assert await send(session, mesh.data_url, 40) == {(200, "v1"): 40}
            v2_port = mesh.pods("model-v2")[0]["metadata"]["annotations"][
                "mesh.airflow-canary.io/port"
            ]
            stats: dict[str, Any] = {}
            for _ in range(100):
                async with session.get(f"http://127.0.0.1:{v2_port}/_stats") as resp:
                    stats = await resp.json()
                if stats["requests"] >= 40:
                    break
                await asyncio.sleep(0.05)
            assert stats["requests"] == 40
            assert set(stats["hosts"]) == {"model-service-shadow"}

    run(scenario())


# -- routing decisions on a real store (no processes) ----------------------------------------------


def _table(*objs: dict[str, Any]) -> RoutingTable:
    store = ObjectStore()
    for obj in objs:
        store.create(key_of(obj), obj)
    return RoutingTable(store)


def _vs(http: list[dict[str, Any]], hosts: list[str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {"name": "vs", "namespace": "default"},
        "spec": {"hosts": hosts or ["model-service"], "http": http},
    }


def _to(subset: str, **extra: Any) -> dict[str, Any]:
    return {"route": [{"destination": {"host": "model-service", "subset": subset}}], **extra}


def _req(path: str = "/", method: str = "GET", **headers: str) -> RequestView:
    return RequestView(
        "model-service",
        method,
        path,
        CIMultiDict({k.replace("_", "-"): v for k, v in headers.items()}),
    )


def _subset(table: RoutingTable, request: RequestView) -> str | None:
    decision = table.decide(request)
    if decision.outcome is not Outcome.ROUTED:
        return decision.outcome.value
    assert decision.target is not None
    return decision.target.subset


def test_first_matching_route_wins_and_match_kinds() -> None:
    table = _table(
        _vs(
            [
                _to("exact", match=[{"headers": {"x-user": {"exact": "alice"}}}], name="exact"),
                _to("prefix", match=[{"headers": {"x-user": {"prefix": "al"}}}]),
                _to("regex", match=[{"headers": {"x-team": {"regex": "ml-[0-9]+"}}}]),
                _to("present", match=[{"headers": {"x-debug": {}}}]),
                _to(
                    "without",
                    match=[{"uri": {"prefix": "/beta"}, "withoutHeaders": {"x-stable": {}}}],
                ),
                _to("any-block", match=[{"uri": {"exact": "/a"}}, {"method": {"exact": "DELETE"}}]),
                _to("uri-regex", match=[{"uri": {"regex": "/v[0-9]/.*"}}]),
                _to("default"),
            ]
        )
    )
    assert _subset(table, _req(x_user="alice")) == "exact"
    assert _subset(table, _req(x_user="alfred")) == "prefix"
    assert _subset(table, _req(x_user="bob")) == "default"
    assert _subset(table, _req(x_team="ml-42")) == "regex"
    assert _subset(table, _req(x_team="ml-42x")) == "default"  # regex is a full match
    assert _subset(table, _req(x_debug="")) == "present"
    assert _subset(table, _req("/beta/x")) == "without"
    assert _subset(table, _req("/beta/x", x_stable="1")) == "default"
    assert _subset(table, _req("/a")) == "any-block"
    assert _subset(table, _req("/b", method="DELETE")) == "any-block"
    assert _subset(table, _req("/v2/predict")) == "uri-regex"
    assert _subset(table, _req("/v2")) == "default"
    # all conditions of one block must hold
    both = _table(
        _vs([_to("both", match=[{"uri": {"prefix": "/p"}, "headers": {"x-a": {"exact": "1"}}}])])
    )
    assert _subset(both, _req("/p", x_a="1")) == "both"
    assert _subset(both, _req("/p")) == "no-route"
    assert _subset(both, _req("/q", x_a="1")) == "no-route"


def test_weighted_choice_is_drawn_per_request() -> None:
    table = _table(
        _vs([{"route": [
            {"destination": {"host": "model-service", "subset": "v1"}, "weight": 70},
            {"destination": {"host": "model-service.default.svc.cluster.local", "subset": "v2"}, "weight": 30},
        ]}])
    )  # fmt: skip
    random.seed(7)
    counts = collections.Counter(_subset(table, _req()) for _ in range(20_000))
    low, high = binom.interval(0.999, 20_000, 0.3)
    assert low <= counts["v2"] <= high
    decision = table.decide(_req())
    assert decision.target is not None and decision.target.service == "model-service"


def test_hosts_resolve_relative_to_namespaces() -> None:
    assert service_fqdn("model-service", "default") == "model-service.default.svc.cluster.local"
    assert service_fqdn("model-service.prod", "default") == "model-service.prod.svc.cluster.local"
    assert service_fqdn("model-service.prod.svc", "x") == "model-service.prod.svc.cluster.local"
    vs = _vs([_to("v1")])
    vs["metadata"]["namespace"] = "prod"
    table = _table(vs)
    assert _subset(table, RequestView("model-service.prod", "GET", "/", {})) == "v1"
    assert _subset(table, RequestView("model-service", "GET", "/", {})) == "no-host"
    decision = table.decide(RequestView("model-service.prod.svc.cluster.local:80", "GET", "/", {}))
    assert decision.target == Target("prod", "model-service", "v1")
