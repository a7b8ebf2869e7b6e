"""A triggerer that dies mid-step resumes the same evidence; the analysis never blocks the loop."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.triggers.health import CanaryHealthTrigger, HealthAnalysisConfig
from tests.health.traffic import ArmTraffic, TrafficDriver


async def first_event(trigger: CanaryHealthTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger yielded nothing")


def run_interrupted_and_whole(config: HealthAnalysisConfig, kill_after: float) -> tuple[dict, dict]:
    """One trigger runs the step through; a twin on the same step is cancelled (the triggerer
    died) after ``kill_after`` seconds and rebuilt from its ``serialize()`` a moment later,
    as a new triggerer would rebuild it from the database row."""

    async def scenario() -> tuple[dict, dict]:
        started = time.time()
        whole = asyncio.create_task(first_event(config.trigger(started)))
        doomed = config.trigger(started)
        task = asyncio.create_task(first_event(doomed))
        await asyncio.sleep(kill_after)
        task.cancel()
        classpath, kwargs = doomed.serialize()
        assert classpath.endswith("CanaryHealthTrigger")
        await asyncio.sleep(2.5)  # down for more than two polls
        resumed = await first_event(CanaryHealthTrigger(**json.loads(json.dumps(kwargs))))
        return resumed, await whole

    return asyncio.run(scenario())


def decision(event: dict[str, Any]) -> tuple:
    return (
        event["verdict"],
        event["polls"],
        [
            (c["name"], c["status"], c["canary_requests"], c["stable_requests"], c["canary_value"])
            for c in event["checks"]
        ],
    )


def test_restarted_trigger_passes_like_an_uninterrupted_one(istio_prometheus) -> None:
    exporter, _ = istio_prometheus
    config = HealthAnalysisConfig.from_params(
        namespace="default",
        checks=[ErrorRateCheck(max_rate=0.05, min_requests=20)],
        bake_time=8,
        poll_interval=1,
        timeout=30,
    )
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=10), "v2": ArmTraffic(ok=10)}):
        resumed, whole = run_interrupted_and_whole(config, kill_after=3.5)
    assert whole["verdict"] == "PASS"
    # Same poll count: the bake was not restarted, the resumed trigger decided at the same poll.
    assert decision(resumed) == decision(whole)


def test_restarted_trigger_keeps_the_evidence_it_had(istio_prometheus) -> None:
    """A canary at 2.5% errors against max_rate 1%: the evidence builds over several polls, and
    the restart falls between them, so a trigger that started over would decide later."""
    exporter, _ = istio_prometheus
    config = HealthAnalysisConfig.from_params(
        namespace="default",
        checks=[ErrorRateCheck(max_rate=0.01, min_requests=20)],
        bake_time=60,
        poll_interval=1,
        timeout=90,
    )
    traffic = {"v1": ArmTraffic(ok=10), "v2": ArmTraffic(ok=39, errors=1)}
    with TrafficDriver(exporter, traffic, tick_seconds=0.5):
        resumed, whole = run_interrupted_and_whole(config, kill_after=3.5)
    assert whole["verdict"] == "FAIL" and whole["polls"] > 6
    assert decision(resumed) == decision(whole)


LAG_SCRIPT = """
import asyncio, json, sys, time
from airflow_canary.analysis import ErrorRateCheck, LatencyCheck, ModelAccuracyCheck
from airflow_canary.triggers.health import HealthAnalysisConfig
from airflow.sdk.bases.hook import BaseHook

config = HealthAnalysisConfig.from_params(
    namespace="default",
    checks=[
        ErrorRateCheck(max_rate=0.05, min_requests=20),
        LatencyCheck(quantile=0.99, max_ratio=1.5, min_requests=20),
        LatencyCheck(name="slo", slo_ms=250, min_requests=20),
    ],
    bake_time=3, poll_interval=1, timeout=20,
)

async def main():
    # A triggerer has Airflow's connection machinery loaded before any trigger runs.
    BaseHook.get_connection("prometheus_default")
    lags = []
    done = asyncio.Event()
    async def heartbeat():
        # The loop thread's CPU time between two wake-ups is what code on the loop cost it;
        # wall-clock lag on a shared machine also counts time the process was not scheduled.
        while not done.is_set():
            before, cpu = time.perf_counter(), time.thread_time()
            await asyncio.sleep(0.005)
            lags.append((time.thread_time() - cpu, time.perf_counter() - before - 0.005))
    beat = asyncio.create_task(heartbeat())
    await asyncio.sleep(0.05)
    assert "scipy" not in sys.modules  # a cold triggerer: the import happens in the run
    async for event in config.trigger(time.time()).run():
        verdict = event.payload
    done.set()
    await beat
    print(json.dumps({
        "max_loop_cpu": max(c for c, _ in lags),
        "max_wall_lag": max(w for _, w in lags),
        "verdict": verdict["verdict"],
        "beats": len(lags),
    }))

asyncio.run(main())
"""


def test_analysis_never_blocks_the_triggerer_loop(istio_prometheus) -> None:
    """A cold triggerer process (scipy not yet imported) runs a step of three count checks
    while a heartbeat coroutine measures, between its wake-ups, how much CPU time the event
    loop's thread spent: no stretch of work on the loop may reach 0.1 s."""
    exporter, _ = istio_prometheus
    traffic = {"v1": ArmTraffic(ok=10, duration_ms=20), "v2": ArmTraffic(ok=10, duration_ms=20)}
    root = Path(__file__).resolve().parents[2]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    with TrafficDriver(exporter, traffic):
        out = subprocess.run(
            [sys.executable, "-c", LAG_SCRIPT],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["verdict"] == "PASS" and result["beats"] > 100
    assert result["max_loop_cpu"] < 0.1, result
