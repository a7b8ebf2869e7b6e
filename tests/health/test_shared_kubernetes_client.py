"""Triggers in one event loop share one Kubernetes API client per connection, closed by the last.

A triggerer runs every trigger of its process on one asyncio loop; the health trigger re-reads the
VirtualService every poll (the weight hold) and rolls it back on FAIL. Building a client per call
costs an SSL context and an aiohttp session each time, on the loop every trigger waits on. These
tests count the clients kubernetes_asyncio builds (its ``RESTClientObject``: the SSL context and
connection pool behind an ``ApiClient``) while real triggers talk to the local mesh's API server.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes_asyncio.client import rest

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.hooks import kubernetes_client
from airflow_canary.hooks.istio import AsyncIstioHook
from airflow_canary.routing import RouteTarget, read_split
from airflow_canary.triggers.health import CanaryHealthTrigger, HealthAnalysisConfig
from tests.conftest import seed_manifest
from tests.fixtures.mesh import VIRTUAL_SERVICE, Seeded
from tests.fixtures.prometheus import IstioExporter
from tests.health.traffic import ArmTraffic, TrafficDriver

TRIGGERS = 8


@pytest.fixture
def built_clients(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every kubernetes_asyncio REST client built from now on (each one really is built)."""
    built: list[Any] = []
    init = rest.RESTClientObject.__init__

    def counting_init(self: Any, *args: Any, **kwargs: Any) -> None:
        init(self, *args, **kwargs)
        built.append(self)

    monkeypatch.setattr(rest.RESTClientObject, "__init__", counting_init)
    return built


@pytest.fixture
def judged(
    seeded: Seeded, prometheus_factory: Any, prometheus_conn_env: Any
) -> Iterator[IstioExporter]:
    """The seed's canary at 10%, its Istio metrics scraped by a real Prometheus."""
    seeded.kubectl("apply", "-f", str(seed_manifest("vs-02-canary-10.yaml")))
    exporter = IstioExporter(namespace=seeded.namespace).start()
    try:
        prometheus_conn_env(prometheus_factory([exporter.target]).url)
        yield exporter
    finally:
        exporter.stop()


def _triggers(namespace: str, **extra: Any) -> list[CanaryHealthTrigger]:
    config = HealthAnalysisConfig.from_params(
        namespace=namespace,
        checks=[ErrorRateCheck(max_rate=0.05, min_requests=20)],
        bake_time=4,
        poll_interval=1,
        timeout=30,
        virtual_service=VIRTUAL_SERVICE,
        rollback_on_failure=True,
        **extra,
    )
    return [config.trigger() for _ in range(TRIGGERS)]


def _run_together(triggers: list[CanaryHealthTrigger]) -> list[dict[str, Any]]:
    async def first_event(trigger: CanaryHealthTrigger) -> dict[str, Any]:
        async for event in trigger.run():
            return dict(event.payload)
        raise AssertionError("the trigger yielded nothing")

    async def together() -> list[dict[str, Any]]:
        events = list(await asyncio.gather(*(first_event(t) for t in triggers)))
        # Every trigger gave its share back before its event: nothing is left open in the loop.
        assert kubernetes_client.open_clients() == []
        return events

    return asyncio.run(together())


def test_triggers_holding_their_weight_share_one_client_closed_after_the_last(
    seeded: Seeded, judged: IstioExporter, built_clients: list[Any]
) -> None:
    # Each trigger reads the VirtualService up front (its rollback target) and at every poll.
    triggers = _triggers(seeded.namespace, canary_weight=10)
    with TrafficDriver(judged, {"v1": ArmTraffic(ok=18), "v2": ArmTraffic(ok=2)}):
        events = _run_together(triggers)

    assert [e["verdict"] for e in events] == ["PASS"] * TRIGGERS, [e["reason"] for e in events]
    assert all(e["polls"] >= 3 for e in events)
    assert len(built_clients) == 1
    assert built_clients[0].pool_manager.closed


def test_triggers_rolling_back_share_one_client_closed_after_the_last(
    seeded: Seeded, judged: IstioExporter, built_clients: list[Any]
) -> None:
    triggers = _triggers(seeded.namespace)
    with TrafficDriver(judged, {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=10, errors=10)}):
        events = _run_together(triggers)

    assert [e["verdict"] for e in events] == ["FAIL"] * TRIGGERS
    assert all("rollback_error" not in e for e in events), [e.get("rollback_error") for e in events]
    assert sum(e["rollback"]["changed"] for e in events) >= 1
    assert read_split(seeded.stored(), RouteTarget()).canary_weight == 0
    assert len(built_clients) == 1
    assert built_clients[0].pool_manager.closed


def test_hooks_share_a_client_per_loop_and_connection_until_the_last_lets_go(
    seeded: Seeded, built_clients: list[Any]
) -> None:
    async def two_hooks() -> None:
        first, second = AsyncIstioHook(), AsyncIstioHook()
        await first.aget_virtual_service(VIRTUAL_SERVICE, seeded.namespace)
        await second.aget_virtual_service(VIRTUAL_SERVICE, seeded.namespace)
        assert len(built_clients) == 1
        await first.aclose()
        assert not built_clients[0].pool_manager.closed  # the second still holds it
        await second.aget_virtual_service(VIRTUAL_SERVICE, seeded.namespace)
        await second.aclose()
        assert built_clients[0].pool_manager.closed
        async with AsyncIstioHook() as third:  # the next hook builds a new one
            await third.aget_virtual_service(VIRTUAL_SERVICE, seeded.namespace)
        assert len(built_clients) == 2 and built_clients[1].pool_manager.closed

    asyncio.run(two_hooks())

    async def never_closed() -> None:
        await AsyncIstioHook().aget_virtual_service(VIRTUAL_SERVICE, seeded.namespace)

    # Another loop gets its own client; a hook nobody closed is closed when its loop ends.
    asyncio.run(never_closed())
    assert len(built_clients) == 3 and built_clients[2].pool_manager.closed
    assert kubernetes_client.open_clients() == []
