"""Fifty health analyses in one event loop reach the verdicts each reaches alone.

Airflow's triggerer runs every deferred task's trigger on one asyncio loop per process. Here 50
``CanaryHealthTrigger``s (the real trigger code, three checks each, distinct namespaces, start
times spread over one poll interval) run at once against a real Prometheus scraping a fleet of
Istio series (``tests.fixtures.fleet``): half the canaries healthy, the other half bad in one of
three ways (5xx errors, slow answers, lower model accuracy). Then each trigger is rebuilt from its
``serialize()`` and run alone, one at a time, on the same step (the same ``started_at``): its polls
are evaluated at the same instants against the same Prometheus data (it replays them from
Prometheus's history), so a decision that depended on the load would show as a difference.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_canary.analysis import ErrorRateCheck, LatencyCheck, ModelAccuracyCheck
from airflow_canary.local.tools.prometheus import PrometheusServer
from airflow_canary.triggers.health import CanaryHealthTrigger, HealthAnalysisConfig
from tests.fixtures.fleet import Fleet, FleetExporter, namespace_name, profile_of

TRIGGERS = 50
#: Every second namespace's canary is bad, cycling through errors, slow and inaccurate.
BAD_EVERY = 2
POLL_SECONDS = 2.0
SCRAPE_SECONDS = 1.0
#: Requests per second of each version in each namespace: enough that the sequential judge
#: decides every bad canary within a few polls (at 20/s a 10% error rate over a 6 s bake is
#: 12 errors, too little evidence at alpha 0.01, and the step passes at its bake time).
REQUESTS_PER_SECOND = 200.0


@pytest.fixture(scope="module")
def fleet_prometheus() -> Iterator[PrometheusServer]:
    """A real Prometheus scraping every second the Istio and feedback series of 50 namespaces."""
    exporter = FleetExporter(
        Fleet(TRIGGERS, bad_every=BAD_EVERY, requests_per_second=REQUESTS_PER_SECOND)
    ).start()
    server = PrometheusServer(0, [exporter.target], SCRAPE_SECONDS)
    try:
        server.start()
        server.wait_for_scrape(timeout_seconds=30)
        time.sleep(2 * SCRAPE_SECONDS)  # every counter has a history before the first baseline
        yield server
    finally:
        server.stop()
        exporter.stop()


def config(index: int) -> HealthAnalysisConfig:
    return HealthAnalysisConfig.from_params(
        namespace=namespace_name(index),
        checks=[
            ErrorRateCheck(max_increase=0.02),
            LatencyCheck(quantile=0.99, max_ratio=1.5),
            # The fleet's feedback counters carry the pod's namespace as ``namespace``.
            ModelAccuracyCheck(max_drop=0.05, namespace_label="namespace"),
        ],
        bake_time=3 * POLL_SECONDS,
        poll_interval=POLL_SECONDS,
        timeout=12 * POLL_SECONDS,
    )


async def first_event(trigger: CanaryHealthTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger yielded nothing")


def decision(event: dict[str, Any]) -> tuple[Any, ...]:
    return (event["verdict"], event["polls"], [(c["name"], c["status"]) for c in event["checks"]])


#: The check a bad profile must fail.
FAILING_CHECK = {"errors": "error-rate", "slow": "latency", "inaccurate": "accuracy"}


def test_fifty_triggers_in_one_loop_reach_the_verdicts_each_reaches_alone(
    fleet_prometheus: PrometheusServer, prometheus_conn_env: Any
) -> None:
    prometheus_conn_env(fleet_prometheus.url)
    first = time.time() + 0.5
    triggers = [config(i).trigger(first + POLL_SECONDS * i / TRIGGERS) for i in range(TRIGGERS)]
    # Rebuilt as a triggerer rebuilds a trigger from its database row.
    twins = [CanaryHealthTrigger(**json.loads(json.dumps(t.serialize()[1]))) for t in triggers]

    async def together() -> list[dict[str, Any]]:
        return list(await asyncio.gather(*(first_event(t) for t in triggers)))

    async def one_at_a_time() -> list[dict[str, Any]]:
        return [await first_event(t) for t in twins]

    concurrent = asyncio.run(together())
    alone = asyncio.run(one_at_a_time())

    for index, (with_others, by_itself) in enumerate(zip(concurrent, alone, strict=True)):
        assert decision(with_others) == decision(by_itself), (
            f"{namespace_name(index)}: {with_others['reason']} / alone: {by_itself['reason']}"
        )
        profile = profile_of(index, BAD_EVERY)
        statuses = {c["name"]: c["status"] for c in with_others["checks"]}
        if profile == "healthy":
            assert with_others["verdict"] == "PASS", (namespace_name(index), with_others)
        else:
            assert with_others["verdict"] == "FAIL", (namespace_name(index), with_others)
            assert statuses[FAILING_CHECK[profile]] == "FAIL", (namespace_name(index), statuses)
    verdicts = [event["verdict"] for event in concurrent]
    assert verdicts.count("PASS") == TRIGGERS // 2 and verdicts.count("FAIL") == TRIGGERS // 2
