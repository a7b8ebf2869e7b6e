"""Kubernetes API faults injected by the mesh's API server, and what weight changes and rollbacks do.

The mesh answers as kube-apiserver does: 500 InternalError Status objects, 429 TooManyRequests with
``Retry-After`` (API Priority and Fairness), dropped connections, and while etcd cannot commit,
every write 500 with etcd's "request timed out" (a storage error that is not a metav1.Status,
turned into 500 with an empty reason by ``responsewriters.ErrorToAPIStatus``) while reads go on.

Property for the product: every traffic step either completes (the VirtualService is exactly the
step's state) or fails loudly, and the VirtualService is then either as before or as intended,
never anything else; running the failed step again (Airflow's task retry) completes it.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import yaml

from airflow_canary.hooks.istio import IstioHookError
from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    RollbackFailedError,
    SetCanaryWeightOperator,
)
from tests.conftest import seed_manifest
from tests.fixtures.mesh import VIRTUAL_SERVICE, Seeded

VS_PATH = "/apis/networking.istio.io/v1/namespaces/{ns}/virtualservices/" + VIRTUAL_SERVICE
CLEAR = {"errorFraction": 0, "rejectWritesSeconds": 0, "seed": 0}


def _faults(seeded: Seeded, **faults: Any) -> dict[str, Any]:
    with seeded.mesh.http() as http:
        answer = http.post("/_mesh/faults", json=faults) if faults else http.get("/_mesh/faults")
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


@pytest.fixture
def faulty(seeded: Seeded) -> Iterator[Seeded]:
    """The seeded mesh, with every injected fault cleared afterwards (the mesh is shared)."""
    try:
        yield seeded
    finally:
        _faults(seeded, **CLEAR, errorKinds=["500", "429", "reset", "reset-after-write"])


def _spec(seeded: Seeded) -> dict[str, Any]:
    with seeded.mesh.http() as http:
        answer = http.get(VS_PATH.format(ns=seeded.namespace))
    answer.raise_for_status()
    spec: dict[str, Any] = answer.json()["spec"]
    return spec


def _seed_spec(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = yaml.safe_load(seed_manifest(name).read_text())["spec"]
    return spec


def test_the_mesh_answers_each_fault_as_kube_apiserver_does(faulty: Seeded) -> None:
    path = VS_PATH.format(ns=faulty.namespace)
    label = {"metadata": {"labels": {"touched": "yes"}}}
    merge = {"Content-Type": "application/merge-patch+json"}
    with faulty.mesh.http() as http:
        _faults(faulty, errorFraction=1, errorKinds=["500"])
        failed = http.get(path)
        assert failed.status_code == 500
        assert failed.json()["reason"] == "InternalError"
        assert failed.json()["details"]["causes"]

        _faults(faulty, errorKinds=["429"])
        throttled = http.get(path)
        assert throttled.status_code == 429 and throttled.headers["Retry-After"] == "1"
        assert throttled.json()["details"]["retryAfterSeconds"] == 1

        _faults(faulty, errorKinds=["reset"])
        with pytest.raises(httpx.TransportError):
            http.get(path)

        _faults(faulty, errorKinds=["reset-after-write"])
        with pytest.raises(httpx.TransportError):
            http.patch(path, json=label, headers=merge)
        _faults(faulty, errorFraction=0)
        stored = http.get(path).json()
        assert stored["metadata"]["labels"]["touched"] == "yes", "the write was stored"

        _faults(faulty, rejectWritesSeconds=600)
        before = http.get(path).json()["metadata"]["resourceVersion"]
        rejected = http.patch(path, json={"metadata": {"labels": {"t": "2"}}}, headers=merge)
        assert rejected.status_code == 500
        assert rejected.json()["message"] == "etcdserver: request timed out"
        assert "reason" not in rejected.json()  # StatusReasonUnknown, omitted
        assert http.get(path).json()["metadata"]["resourceVersion"] == before
    state = _faults(faulty)
    assert state["rejectWritesRemainingSeconds"] > 0
    assert state["injected"]["reject-write"] == 1


def test_an_outage_armed_for_the_next_write_begins_with_it(faulty: Seeded) -> None:
    path = VS_PATH.format(ns=faulty.namespace)
    merge = {"Content-Type": "application/merge-patch+json"}
    armed = _faults(faulty, rejectNextWritesSeconds=600)
    assert armed["rejectWritesStartedAt"] is None and armed["rejectWritesRemainingSeconds"] == 0
    with faulty.mesh.http() as http:
        assert http.get(path).status_code == 200  # reads do not start it
        before = time.time()
        rejected = http.patch(path, json={"metadata": {"labels": {"t": "3"}}}, headers=merge)
        assert rejected.status_code == 500
        assert rejected.json()["message"] == "etcdserver: request timed out"
        again = http.patch(path, json={"metadata": {"labels": {"t": "4"}}}, headers=merge)
        assert again.status_code == 500  # and every write after it, until the time is up
    state = _faults(faulty)
    assert state["rejectNextWritesSeconds"] == 0 and state["rejectWritesRemainingSeconds"] > 0
    assert before <= state["rejectWritesStartedAt"] <= time.time()
    assert state["rejectWritesStartedBy"] == f"PATCH {path}"
    assert state["injected"]["reject-write"] == 2
    with pytest.raises(AssertionError, match="rejectNextWritesSeconds must be a number"):
        _faults(faulty, rejectNextWritesSeconds=-1)


STEPS = [
    (
        lambda ns: SetCanaryWeightOperator(task_id="w1", weight=1, **_target(ns)),
        "vs-01-canary-1.yaml",
    ),
    (
        lambda ns: SetCanaryWeightOperator(task_id="w10", weight=10, **_target(ns)),
        "vs-02-canary-10.yaml",
    ),
    (
        lambda ns: SetCanaryWeightOperator(task_id="w50", weight=50, **_target(ns)),
        "vs-03-canary-50.yaml",
    ),
    (lambda ns: RollbackCanaryOperator(task_id="back", **_target(ns)), "vs-00-all-v1.yaml"),
    (
        lambda ns: SetCanaryWeightOperator(task_id="w50b", weight=50, **_target(ns)),
        "vs-03-canary-50.yaml",
    ),
    (lambda ns: PromoteCanaryOperator(task_id="promote", **_target(ns)), "vs-04-all-v2.yaml"),
]


def _target(namespace: str) -> dict[str, Any]:
    return {"virtual_service": VIRTUAL_SERVICE, "namespace": namespace}


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_steps_complete_through_30_percent_faults_or_fail_loudly_between_two_states(
    faulty: Seeded, seed: int
) -> None:
    outcomes = []
    for build, expected_file in STEPS:
        expected = _seed_spec(expected_file)
        _faults(faulty, errorFraction=0)
        before = _spec(faulty)
        _faults(
            faulty,
            errorFraction=0.3,
            errorKinds=["500", "429", "reset", "reset-after-write"],
            retryAfterSeconds=0,
            seed=seed * 100 + len(outcomes),
        )
        tries = 0
        while True:
            tries += 1
            try:
                build(faulty.namespace).execute(context={})
            except (IstioHookError, RollbackFailedError) as err:
                assert str(err), "a failure says what went wrong"
                _faults(faulty, errorFraction=0)
                now = _spec(faulty)
                assert now in (before, expected), f"half-changed after {err}: {now}"
                assert tries < 5, f"{expected_file}: still failing after {tries} runs: {err}"
                _faults(faulty, errorFraction=0.3)
                continue
            break
        injected = _faults(faulty, errorFraction=0)["injected"]
        assert _spec(faulty) == expected, expected_file
        outcomes.append((expected_file, tries, injected))
    # The faults really happened, of several kinds, across the rollout.
    kinds = {kind for _, _, injected in outcomes for kind in injected}
    total = sum(n for _, _, injected in outcomes for n in injected.values())
    assert len(kinds) >= 2 and total >= 3, outcomes


def test_a_write_outage_fails_steps_and_rollbacks_loudly_with_traffic_unchanged(
    faulty: Seeded,
) -> None:
    faulty.kubectl("apply", "-f", str(seed_manifest("vs-03-canary-50.yaml")))
    at_50 = _spec(faulty)
    _faults(faulty, rejectWritesSeconds=600, retryAfterSeconds=0)
    with pytest.raises(IstioHookError, match="etcdserver: request timed out"):
        SetCanaryWeightOperator(task_id="w", weight=100, **_target(faulty.namespace)).execute(
            context={}
        )
    assert _spec(faulty) == at_50
    with pytest.raises(RollbackFailedError) as raised:
        RollbackCanaryOperator(
            task_id="rb", reason="canary failed", **_target(faulty.namespace)
        ).execute(context={})
    message = str(raised.value)
    assert "etcdserver: request timed out" in message
    assert "Current split: " in message and "v1 50% v2 50%" in message
    assert "canary failed" in message
    assert _spec(faulty) == at_50
    # etcd is back: the same rollback, retried, completes.
    _faults(faulty, rejectWritesSeconds=0)
    RollbackCanaryOperator(
        task_id="rb", reason="canary failed", **_target(faulty.namespace)
    ).execute(context={})
    assert _spec(faulty) == _seed_spec("vs-00-all-v1.yaml")


@pytest.mark.parametrize("seed", [7, 8, 9])
def test_the_triggers_rollback_through_30_percent_faults_ends_on_stable_or_fails_at_50(
    faulty: Seeded, seed: int
) -> None:
    """The in-trigger rollback (the async hook) under the same faults: the VirtualService ends
    all on stable, or the rollback raises and it is still at 50/50, never in between."""
    import asyncio

    from airflow_canary.hooks.istio import AsyncIstioHook
    from airflow_canary.routing import RouteTarget

    faulty.kubectl("apply", "-f", str(seed_manifest("vs-03-canary-50.yaml")))
    at_50, all_v1 = _spec(faulty), _seed_spec("vs-00-all-v1.yaml")
    _faults(
        faulty,
        errorFraction=0.3,
        errorKinds=["500", "429", "reset", "reset-after-write"],
        retryAfterSeconds=0,
        seed=seed,
    )
    for _attempt in range(5):
        try:
            result = asyncio.run(
                AsyncIstioHook().rollback(
                    VIRTUAL_SERVICE, faulty.namespace, RouteTarget(), reason="error rate"
                )
            )
        except IstioHookError as err:
            _faults(faulty, errorFraction=0)
            assert _spec(faulty) in (at_50, all_v1), f"half-changed after {err}"
            _faults(faulty, errorFraction=0.3)
            continue
        break
    else:
        pytest.fail("the rollback failed five times in a row through 30% faults")
    _faults(faulty, errorFraction=0)
    assert result["split"] == {"v1": 100, "v2": 0}
    assert _spec(faulty) == all_v1


def test_giving_up_on_a_write_whose_connection_dropped_does_not_claim_nothing_was_written(
    faulty: Seeded,
) -> None:
    """A dropped connection after a stored write (kube-apiserver committed it, the reply was
    lost) leaves the client unable to know: the error must say the write may have landed."""
    from airflow_canary.hooks.istio import IstioHook, IstioUnavailableError, RetryPolicy

    hook = IstioHook(
        retry_policy=RetryPolicy(
            connect_attempts=3, connect_backoff_seconds=0.01, connect_deadline_seconds=10
        )
    )
    current = hook.get_virtual_service(VIRTUAL_SERVICE, faulty.namespace)
    body = {**current, "metadata": {**current["metadata"], "labels": {"written": "yes"}}}
    _faults(faulty, errorFraction=1, errorKinds=["reset-after-write"])
    with pytest.raises(IstioUnavailableError) as read_error:
        hook._call(
            lambda: hook.custom_objects.get_namespaced_custom_object(
                "networking.istio.io", "v1", faulty.namespace, "virtualservices", VIRTUAL_SERVICE
            )
        )
    assert "nothing was written" in str(read_error.value)
    attempts = []

    def replace() -> Any:
        # The first attempt is stored and its reply lost; later ones are dropped before the
        # API server handles them (an API server going away), so the client never learns.
        if attempts:
            _faults(faulty, errorKinds=["reset"])
        attempts.append(1)
        return hook.custom_objects.replace_namespaced_custom_object(
            "networking.istio.io", "v1", faulty.namespace, "virtualservices", VIRTUAL_SERVICE, body
        )

    with pytest.raises(IstioUnavailableError) as write_error:
        hook._call(replace, write=True)
    assert len(attempts) == 3
    message = str(write_error.value)
    assert "nothing was written" not in message
    assert "may or may not have been stored" in message
    _faults(faulty, errorFraction=0)
    # And indeed it was: the first attempt's write landed before its connection dropped.
    stored = hook.get_virtual_service(VIRTUAL_SERVICE, faulty.namespace)
    assert stored["metadata"]["labels"] == {"written": "yes"}
