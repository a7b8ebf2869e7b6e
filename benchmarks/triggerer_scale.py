"""Triggerer scale: N concurrent health analyses in one event loop against a real Prometheus.

Airflow's triggerer runs every deferred task's trigger as a task on one asyncio loop per
process. This benchmark does the same with N real ``CanaryHealthTrigger``s (distinct
namespaces, the example DAG's three checks: ``ErrorRateCheck(max_increase=0.02)``,
``LatencyCheck(quantile=0.99, max_ratio=1.5)``, ``ModelAccuracyCheck(max_drop=0.05)``, the last
with ``namespace_label="namespace"`` since all namespaces share one Prometheus). Their start
times are spread over one poll interval, as steps deferred at random moments would be.

Prometheus (``/usr/bin/prometheus``, started by ``PrometheusServer``) scrapes a generated
exporter (``tests/fixtures/fleet.py``) serving Istio's request and duration series for both
reporters and the model's feedback counters, for every namespace, growing over time.

Each N runs in a fresh worker process and prints one row:

* loop lag p50/p99/max: how late a ticker task waking every 50 ms woke up;
* CPU ms per poll: the worker's CPU time over all polls; cores: CPU time / wall time;
* RSS per trigger: peak RSS while the triggers run minus RSS before they were created, / N;
* queries/s and their p99: HTTP requests to Prometheus counted at the client;
* Prometheus cores: CPU of the Prometheus process over the same run;
* late polls: share of polls whose verdict came more than one poll interval after the poll's
  scheduled time, and the p99 of that delay.

A second table gives the steady state: CPU, lag and queries from the moment every trigger has
taken its baseline poll (the start-up wave of trigger builds and 21-query first polls is over)
to the end. ``--max-seconds`` caps each N's run: the triggers still running then are cancelled
and counted as unfinished, so a size the loop cannot keep up with still ends and reports.

Usage (2-3 poll rounds per N; about four minutes in all)::

    PYTHONPATH=. .venv/bin/python benchmarks/triggerer_scale.py [--sizes 100,300,1000]
        [--poll-interval 15] [--bake 30] [--scrape-interval 5] [--max-seconds 200]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

TICK_SECONDS = 0.05


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def checks() -> list[Any]:
    from airflow_canary.analysis import ErrorRateCheck, LatencyCheck, ModelAccuracyCheck

    return [
        ErrorRateCheck(max_increase=0.02),
        LatencyCheck(quantile=0.99, max_ratio=1.5),
        ModelAccuracyCheck(max_drop=0.05, namespace_label="namespace"),
    ]


# -- worker: one N in one process -------------------------------------------------------------


async def _measure(n: int, args: argparse.Namespace) -> dict[str, Any]:
    from airflow.sdk.bases.hook import BaseHook

    from airflow_canary.hooks.prometheus import PrometheusHook
    from airflow_canary.triggers.health import HealthAnalysisConfig, HealthAnalysisRun, warm_up
    from tests.fixtures.fleet import namespace_name

    # A triggerer has Airflow's connection machinery and the trigger's modules loaded already.
    BaseHook.get_connection("prometheus_default")
    await warm_up()

    polls: list[tuple[float, float, float]] = []  # (scheduled at, started, answered)
    queries: list[float] = []  # seconds per HTTP request
    poll = HealthAnalysisRun.poll
    aget = PrometheusHook._aget

    async def timed_poll(self: Any, analysis: Any, at: float | None = None) -> Any:
        started = time.time()
        verdict = await poll(self, analysis, at)
        polls.append((started if at is None else at, started, time.time()))
        return verdict

    async def timed_aget(self: Any, *a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return await aget(self, *a, **kw)
        finally:
            queries.append(time.perf_counter() - started)

    HealthAnalysisRun.poll = timed_poll  # type: ignore[method-assign]
    PrometheusHook._aget = timed_aget  # type: ignore[method-assign]

    interval = args.poll_interval
    gc.collect()
    rss_before = _rss_bytes()
    cpu_before = time.process_time()
    wall_before = time.perf_counter()
    first = time.time() + 1.0
    triggers = [
        HealthAnalysisConfig.from_params(
            namespace=namespace_name(i),
            checks=checks(),
            bake_time=args.bake,
            poll_interval=interval,
            timeout=args.bake + 2 * interval,
        ).trigger(first + interval * i / n)
        for i in range(n)
    ]

    lags: list[float] = []
    peak = [_rss_bytes()]
    done = asyncio.Event()
    # Steady state: from the moment every trigger has taken its baseline poll (the start-up
    # wave of trigger builds and first polls is over) to the end of the run.
    steady: dict[str, float] = {}

    async def ticker() -> None:
        beats = 0
        while not done.is_set():
            before = time.perf_counter()
            await asyncio.sleep(TICK_SECONDS)
            lags.append(time.perf_counter() - before - TICK_SECONDS)
            beats += 1
            if beats % 20 == 0:
                peak[0] = max(peak[0], _rss_bytes())
            if not steady and len(polls) >= n:
                steady.update(
                    cpu=time.process_time(),
                    wall=time.perf_counter(),
                    polls=len(polls),
                    lags=len(lags),
                    queries=len(queries),
                )

    async def first_event(trigger: Any) -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise RuntimeError("a trigger ended without an event")

    beat = asyncio.create_task(ticker())
    # The triggerer's runner: one task per trigger iterating its run() generator. Past the
    # cap the unfinished ones are cancelled, as a triggerer cancels the triggers of timed-out
    # tasks, so a run that cannot keep up still ends and reports how far it fell behind.
    tasks = [asyncio.create_task(first_event(t)) for t in triggers]
    finished, unfinished = await asyncio.wait(tasks, timeout=args.max_seconds)
    for task in unfinished:
        task.cancel()
    await asyncio.gather(*unfinished, return_exceptions=True)
    events = [task.result() for task in tasks if task in finished]
    done.set()
    await beat
    cpu = time.process_time() - cpu_before
    wall = time.perf_counter() - wall_before
    peak[0] = max(peak[0], _rss_bytes())

    delays = [answered - at for at, _, answered in polls]
    verdicts: dict[str, int] = {}
    for event in events:
        verdicts[event["verdict"]] = verdicts.get(event["verdict"], 0) + 1
    if unfinished:
        verdicts[f"unfinished at {args.max_seconds:g} s"] = len(unfinished)
    if not steady:  # never reached: report the whole run
        steady.update(cpu=cpu_before, wall=wall_before, polls=0, lags=0, queries=0)
    steady_polls = len(polls) - int(steady["polls"])
    steady_cpu = cpu_before + cpu - steady["cpu"]
    steady_wall = wall_before + wall - steady["wall"]
    steady_lags = lags[int(steady["lags"]) :] or lags
    return {
        "n": n,
        "wall_s": wall,
        "polls": len(polls),
        "queries": len(queries),
        "lag_p50_ms": _pct(lags, 0.5) * 1000,
        "lag_p99_ms": _pct(lags, 0.99) * 1000,
        "lag_max_ms": max(lags) * 1000,
        "cpu_ms_per_poll": cpu / max(1, len(polls)) * 1000,
        "cpu_cores": cpu / wall,
        "rss_kib_per_trigger": (peak[0] - rss_before) / n / 1024,
        "queries_per_poll": len(queries) / max(1, len(polls)),
        "queries_per_s": len(queries) / wall,
        "query_p99_ms": _pct(queries, 0.99) * 1000,
        "late_share": sum(d > interval for d in delays) / max(1, len(delays)),
        "poll_delay_p99_s": _pct(delays, 0.99),
        "verdicts": verdicts,
        "steady_polls": steady_polls,
        "steady_s": steady_wall,
        "steady_cpu_ms_per_poll": steady_cpu / max(1, steady_polls) * 1000,
        "steady_cpu_cores": steady_cpu / max(steady_wall, 1e-9),
        "steady_lag_p99_ms": _pct(steady_lags, 0.99) * 1000,
        "steady_queries_per_s": (len(queries) - steady["queries"]) / max(steady_wall, 1e-9),
    }


def worker(n: int, args: argparse.Namespace) -> None:
    print(json.dumps(asyncio.run(_measure(n, args))), flush=True)


# -- driver: exporter, Prometheus, one worker per N ---------------------------------------------


def _query(url: str, promql: str) -> list[dict[str, Any]]:
    with urllib.request.urlopen(
        f"{url}/api/v1/query?{urllib.parse.urlencode({'query': promql})}", timeout=30
    ) as response:
        return list(json.load(response)["data"]["result"])


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def drive(args: argparse.Namespace) -> int:
    from airflow_canary.local.tools.prometheus import PrometheusServer, free_port

    sizes = [int(s) for s in args.sizes.split(",")]
    namespaces = max(sizes)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    port = free_port()
    exporter = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.fixtures.fleet",
            "--port",
            str(port),
            "--namespaces",
            str(namespaces),
            "--bad-every",
            str(args.bad_every),
            "--requests-per-second",
            str(args.requests_per_second),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    rows: list[dict[str, Any]] = []
    loads: list[str] = [_load()]
    try:
        assert exporter.stdout is not None
        print(exporter.stdout.readline().strip(), file=sys.stderr)
        with PrometheusServer(0, [f"127.0.0.1:{port}/metrics"], args.scrape_interval) as prom:
            prom.wait_for_scrape(timeout_seconds=60)
            # Two scrapes in storage, so every counter has a history before the first baseline.
            time.sleep(2 * args.scrape_interval)
            seen = _query(
                prom.url, "count(count by (destination_workload_namespace) (istio_requests_total))"
            )
            print(f"Prometheus {prom.url} holds {seen[0]['value'][1]} namespaces", file=sys.stderr)
            conn = {
                "conn_type": "prometheus",
                "host": "127.0.0.1",
                "port": prom.port,
                "schema": "http",
            }
            worker_env = {**env, "AIRFLOW_CONN_PROMETHEUS_DEFAULT": json.dumps(conn)}
            for n in sizes:
                loads.append(_load())
                assert prom.pid is not None
                prom_cpu = _cpu_seconds(prom.pid)
                command = [sys.executable, __file__, "--worker", str(n)]
                command += ["--poll-interval", str(args.poll_interval), "--bake", str(args.bake)]
                command += ["--max-seconds", str(args.max_seconds)]
                out = subprocess.run(
                    command, env=worker_env, cwd=REPO, capture_output=True, text=True, check=False
                )
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    return out.returncode
                row = json.loads(out.stdout.strip().splitlines()[-1])
                row["prometheus_cores"] = (_cpu_seconds(prom.pid) - prom_cpu) / row["wall_s"]
                rows.append(row)
                print(f"N={n} done: {row}", file=sys.stderr)
            loads.append(_load())
    finally:
        exporter.terminate()
        exporter.wait(timeout=10)

    print(
        f"\nMachine: {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.machine()}; load average (1/5/15 min) before and between runs: "
        f"{' -> '.join(loads)}"
    )
    print(
        f"Polls every {args.poll_interval:g}s, bake {args.bake:g}s, 3 checks per trigger; "
        f"Prometheus scrapes every {args.scrape_interval:g}s\n"
    )
    print(
        "| N | polls | loop lag p50 / p99 / max (ms) | CPU ms / poll | CPU cores | "
        "RSS / trigger (KiB) | queries / poll | queries / s | query p99 (ms) | "
        "Prometheus cores | late polls (> 1 interval) | poll delay p99 (s) | verdicts |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        verdicts = ", ".join(f"{k} {v}" for k, v in sorted(r["verdicts"].items()))
        print(
            f"| {r['n']} | {r['polls']} | {r['lag_p50_ms']:.1f} / {r['lag_p99_ms']:.1f} / "
            f"{r['lag_max_ms']:.0f} | {r['cpu_ms_per_poll']:.1f} | {r['cpu_cores']:.3f} | "
            f"{r['rss_kib_per_trigger']:.0f} | {r['queries_per_poll']:.1f} | "
            f"{r['queries_per_s']:.0f} | {r['query_p99_ms']:.0f} | {r['prometheus_cores']:.2f} | "
            f"{r['late_share'] * 100:.1f}% | {r['poll_delay_p99_s']:.2f} | {verdicts} |"
        )
    print(
        "\nSteady state (from the moment every trigger has taken its baseline poll):\n\n"
        "| N | window (s) | polls | loop lag p99 (ms) | CPU ms / poll | CPU cores | queries / s |"
    )
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['n']} | {r['steady_s']:.0f} | {r['steady_polls']} | "
            f"{r['steady_lag_p99_ms']:.1f} | {r['steady_cpu_ms_per_poll']:.1f} | "
            f"{r['steady_cpu_cores']:.3f} | {r['steady_queries_per_s']:.0f} |"
        )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", default="100,300,1000", help="comma-separated trigger counts")
    parser.add_argument("--poll-interval", type=float, default=15.0, help="seconds")
    parser.add_argument("--bake", type=float, default=30.0, help="bake time, seconds")
    parser.add_argument("--scrape-interval", type=float, default=5.0, help="seconds")
    parser.add_argument(
        "--bad-every", type=int, default=0, help="every k-th namespace's canary is bad"
    )
    parser.add_argument("--requests-per-second", type=float, default=20.0, help="per version")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=200.0,
        help="cap on one N's run; unfinished triggers are cancelled and counted",
    )
    parser.add_argument("--worker", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args)
        return 0
    return drive(args)


if __name__ == "__main__":
    raise SystemExit(main())
