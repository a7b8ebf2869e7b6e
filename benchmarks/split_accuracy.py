"""Accuracy of the data plane's weighted split: observed canary share and chi-square p-value per weight."""

from __future__ import annotations

import asyncio
import collections
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
from multidict import CIMultiDict
from scipy.stats import chisquare

from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey
from airflow_canary.local.dataplane.proxy import RequestView, RoutingTable

HERE = Path(__file__).resolve().parent
WEIGHTS = (1, 10, 50)


def table_for(canary: int) -> RoutingTable:
    store = ObjectStore()
    store.create(
        ResourceKey("networking.istio.io", "virtualservices", "default", "model-virtual-service"),
        {"spec": {"hosts": ["model-service"], "http": [{"route": [
            {"destination": {"host": "model-service", "subset": "v1"}, "weight": 100 - canary},
            {"destination": {"host": "model-service", "subset": "v2"}, "weight": canary},
        ]}]}},
    )  # fmt: skip
    return RoutingTable(store)


def row(label: str, canary: int, counts: collections.Counter[str]) -> str:
    n = counts["v1"] + counts["v2"]
    expected = [n * (100 - canary) / 100, n * canary / 100]
    p_value = chisquare([counts["v1"], counts["v2"]], expected).pvalue
    return f"{label:<22} {canary:>5}% {n:>9} {counts['v2']:>8} {100 * counts['v2'] / n:>9.3f}% {p_value:>9.3f}"


async def http_counts(data_port: int, n: int) -> collections.Counter[str]:
    counts: collections.Counter[str] = collections.Counter()
    requests = iter(range(n))
    async with aiohttp.ClientSession() as session:

        async def worker() -> None:
            for _ in requests:
                async with session.get(
                    f"http://127.0.0.1:{data_port}/", headers={"Host": "model-service"}
                ) as resp:
                    await resp.read()
                    counts[resp.headers.get("x-canary-served-by", "none")] += 1

        await asyncio.gather(*(worker() for _ in range(32)))
    return counts


def main(n_decisions: int = 100_000, n_http: int = 5_000) -> None:
    print(
        f"{'method':<22} {'canary':>6} {'requests':>9} {'to v2':>8} {'observed':>10} {'chi2 p':>9}"
    )
    request = RequestView("model-service", "GET", "/predict", CIMultiDict())
    for canary in WEIGHTS:
        table = table_for(canary)
        counts: collections.Counter[str] = collections.Counter()
        for _ in range(n_decisions):
            decision = table.decide(request)
            assert decision.target is not None
            counts[decision.target.subset or ""] += 1
        print(row("routing decision", canary, counts))
    for canary in WEIGHTS:
        mesh = subprocess.Popen(
            [sys.executable, str(HERE / "_meshproc.py"), "1", str(canary)], stdout=subprocess.PIPE
        )
        try:
            assert mesh.stdout is not None
            info = json.loads(mesh.stdout.readline())
            print(
                row(
                    "HTTP through the proxy",
                    canary,
                    asyncio.run(http_counts(info["data_port"], n_http)),
                )
            )
        finally:
            mesh.terminate()
            mesh.wait(timeout=30)


if __name__ == "__main__":
    main()
