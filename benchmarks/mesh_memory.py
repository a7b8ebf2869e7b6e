"""Memory of the local mesh process (runner, data plane, telemetry) with 10 replicas running, and of its replicas."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import aiohttp
import psutil

HERE = Path(__file__).resolve().parent


async def traffic(data_port: int, n: int) -> None:
    async with aiohttp.ClientSession() as session:
        for _ in range(n):
            async with session.get(
                f"http://127.0.0.1:{data_port}/", headers={"Host": "model-service"}
            ) as resp:
                await resp.read()


def mib(n: int) -> str:
    return f"{n / 2**20:.1f} MiB"


def main() -> None:
    mesh = subprocess.Popen(
        [sys.executable, str(HERE / "_meshproc.py"), "5", "50"], stdout=subprocess.PIPE
    )
    try:
        assert mesh.stdout is not None
        info = json.loads(mesh.stdout.readline())
        process = psutil.Process(mesh.pid)
        idle = process.memory_info().rss
        asyncio.run(traffic(info["data_port"], 5_000))
        after = process.memory_info().rss
        replicas = [psutil.Process(pid) for pid in info["pids"]]
        per_replica = [p.memory_info().rss for p in replicas]
        print(f"{'what':<44} {'RSS':>10}")
        print(f"{'mesh process, 10 replicas ready, idle':<44} {mib(idle):>10}")
        print(f"{'mesh process after 5,000 proxied requests':<44} {mib(after):>10}")
        print(
            f"{'replica processes (test version server), each':<44} {mib(sum(per_replica) // len(per_replica)):>10}"
        )
        print(f"{'replica processes, all ' + str(len(replicas)):<44} {mib(sum(per_replica)):>10}")
    finally:
        mesh.terminate()
        mesh.wait(timeout=30)


if __name__ == "__main__":
    main()
