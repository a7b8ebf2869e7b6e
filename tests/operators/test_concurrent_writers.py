"""Eight concurrent writers on one VirtualService lose no weight change and no header route."""

from __future__ import annotations

import threading

from airflow_canary.hooks.istio import IstioHook, RetryPolicy, UpdateResult
from airflow_canary.routing import (
    HeaderRoute,
    RouteTarget,
    product_header_routes,
    read_split,
    set_canary_weight,
    set_header_route,
)
from tests.fixtures.mesh import Seeded
from tests.schemas import assert_valid_istio

VS = "model-virtual-service"
TARGET = RouteTarget()
WRITERS = 8
ROUNDS = 3


def test_eight_writers_interleaving_weights_and_header_routes(seeded: Seeded) -> None:
    # Generous conflict budget: eight writers on one object collide by design.
    policy = RetryPolicy(conflict_attempts=40, conflict_backoff_seconds=0.005)
    hooks = [IstioHook(retry_policy=policy) for _ in range(WRITERS)]
    for hook in hooks:
        hook.get_virtual_service(VS, seeded.namespace)  # connect before the race starts
    start = threading.Barrier(WRITERS)
    results: list[list[UpdateResult]] = [[] for _ in range(WRITERS)]
    errors: list[BaseException] = []
    written_weights = {10 * (i + 1) + r for i in range(WRITERS) for r in range(ROUNDS)}

    def writer(index: int) -> None:
        hook = hooks[index]
        route = HeaderRoute(f"x-writer-{index}", f"w{index}")
        try:
            start.wait(timeout=30)
            for round_ in range(ROUNDS):
                weight = 10 * (index + 1) + round_
                results[index].append(
                    hook.update_virtual_service(
                        VS, seeded.namespace, lambda vs, w=weight: set_canary_weight(vs, TARGET, w)
                    )
                )
                if round_ == 0:
                    results[index].append(
                        hook.update_virtual_service(
                            VS, seeded.namespace, lambda vs: set_header_route(vs, TARGET, route)
                        )
                    )
        except BaseException as exc:  # surfaced in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a writer did not finish"
    assert errors == []

    stored = seeded.stored()
    headers = {route.header for route in product_header_routes(stored)}
    assert headers == {f"x-writer-{i}" for i in range(WRITERS)}
    assert read_split(stored, TARGET).canary_weight in written_weights
    assert_valid_istio(stored)

    flat = [r for per_writer in results for r in per_writer]
    assert len(flat) == WRITERS * (ROUNDS + 1)
    assert all(r.changed for r in flat)
    # Every write went through on its own resourceVersion: no two share one.
    versions = [r.after["metadata"]["resourceVersion"] for r in flat]
    assert len(set(versions)) == len(versions)
    assert max(r.attempts for r in flat) > 1, "the writers never actually conflicted"
