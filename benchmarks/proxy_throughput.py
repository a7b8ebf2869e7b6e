"""Throughput of the local mesh's data plane: added p99 latency over direct calls at increasing request rates."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import aiohttp

HERE = Path(__file__).resolve().parent


async def load(
    url: str, host: str | None, ports: list[int], rate: float, duration: float
) -> dict[str, float]:
    """Open-loop load: request i is sent at t0 + i/rate whatever happened to earlier ones."""
    latencies: list[float] = []
    errors = 0
    connector = aiohttp.TCPConnector(limit=200)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one(i: int) -> None:
            nonlocal errors
            target = url if ports == [] else f"http://127.0.0.1:{ports[i % len(ports)]}"
            started = time.perf_counter()
            try:
                async with session.get(
                    target + "/predict", headers={"Host": host} if host else None
                ) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
            except aiohttp.ClientError:
                errors += 1
                return
            latencies.append((time.perf_counter() - started) * 1000)

        total = int(rate * duration)
        tasks = []
        t0 = time.perf_counter()
        for i in range(total):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.ensure_future(one(i)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
    latencies.sort()

    def pct(p: float) -> float:
        return (
            latencies[min(len(latencies) - 1, int(p / 100 * len(latencies)))]
            if latencies
            else float("nan")
        )

    return {"sent": total, "ok": len(latencies) - errors, "errors": errors, "rps": len(latencies) / elapsed,
            "p50": pct(50), "p99": pct(99)}  # fmt: skip


def run_load(args: list[str]) -> dict[str, float]:
    """The load client runs in its own process so it does not share a CPU core's event loop with the proxy."""
    out = subprocess.run(
        [sys.executable, __file__, "--client", *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    return dict(json.loads(out.stdout))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--client", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--url", default="")
    parser.add_argument("--host", default="")
    parser.add_argument("--ports", default="")
    parser.add_argument("--rate", type=float, default=100)
    parser.add_argument("--duration", type=float, default=4.0)
    parser.add_argument("--rates", default="250,500,1000,1500,2000")
    args = parser.parse_args()
    if args.client:
        ports = [int(p) for p in args.ports.split(",") if p]
        print(
            json.dumps(
                asyncio.run(load(args.url, args.host or None, ports, args.rate, args.duration))
            )
        )
        return

    mesh = subprocess.Popen(
        [sys.executable, str(HERE / "_meshproc.py"), "1", "50"], stdout=subprocess.PIPE, text=True
    )
    try:
        assert mesh.stdout is not None
        info = json.loads(mesh.stdout.readline())
        data_url = f"http://127.0.0.1:{info['data_port']}"
        backends = ",".join(str(p) for p in info["backends"])
        print(
            f"machine: {os.cpu_count()} cores; proxy -> 2 backends (v1, v2 at 50/50); {args.duration:g} s per step"
        )
        header = f"{'rate':>6} | {'direct rps':>10} {'p50':>6} {'p99':>7} | {'mesh rps':>9} {'p50':>6} {'p99':>7} {'err':>4} | {'added p99 ms':>12}"
        print(header)
        print("-" * len(header))
        best = 0.0
        for rate in [float(r) for r in args.rates.split(",")]:
            common = ["--rate", str(rate), "--duration", str(args.duration)]
            direct = run_load(["--ports", backends, *common])
            via = run_load(["--url", data_url, "--host", "model-service", *common])
            added = via["p99"] - direct["p99"]
            keeps_up = via["rps"] >= 0.95 * rate and via["errors"] == 0
            if added <= 10 and keeps_up:
                best = max(best, via["rps"])
            print(
                f"{rate:>6.0f} | {direct['rps']:>10.0f} {direct['p50']:>6.2f} {direct['p99']:>7.2f} | "
                f"{via['rps']:>9.0f} {via['p50']:>6.2f} {via['p99']:>7.2f} {via['errors']:>4.0f} | {added:>12.2f}"
            )
        print(f"\nhighest rate with added p99 <= 10 ms and no errors: {best:.0f} req/s")
    finally:
        mesh.terminate()
        mesh.wait(timeout=30)


if __name__ == "__main__":
    main()
