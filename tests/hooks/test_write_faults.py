"""Writes under the failures a real cluster produces: an unreachable validating webhook (500),
throttling (429 + Retry-After), RBAC and admission denials, each through the real client."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import httpx
import pytest
import tenacity

from airflow_canary.hooks.istio import (
    AsyncIstioHook,
    IstioAdmissionError,
    IstioForbiddenError,
    IstioHook,
    IstioUnavailableError,
    RetryPolicy,
    WaitRetryAfter,
)
from airflow_canary.operators.traffic import RollbackCanaryOperator, SetCanaryWeightOperator
from airflow_canary.routing import RouteTarget, set_canary_weight
from tests.conftest import seed_manifest
from tests.fixtures.mesh import Seeded

VS = "model-virtual-service"


def _faults(seeded: Seeded, **faults: Any) -> dict[str, Any]:
    with seeded.mesh.http() as http:
        answer = http.post("/_mesh/faults", json=faults) if faults else http.get("/_mesh/faults")
    assert answer.status_code == 200, answer.text
    state: dict[str, Any] = answer.json()
    return state


def _weights(seeded: Seeded) -> dict[str, int]:
    weighted = [r for r in seeded.stored()["spec"]["http"] if "match" not in r][0]
    return {d["destination"]["subset"]: d.get("weight", 100) for d in weighted["route"]}


@pytest.fixture
def at_50(seeded: Seeded) -> Seeded:
    seeded.kubectl("apply", "-f", str(seed_manifest("vs-03-canary-50")))
    assert _weights(seeded) == {"v1": 50, "v2": 50}
    return seeded


def test_a_rollback_completes_through_three_webhook_failures(at_50: Seeded) -> None:
    _faults(at_50, webhookFailures=3)
    result = RollbackCanaryOperator(
        task_id="rollback", virtual_service=VS, namespace=at_50.namespace, reason="error rate"
    ).execute({})
    assert result["split"] == {"v1": 100, "v2": 0} and result["changed"] is True
    assert _weights(at_50) == {"v1": 100}
    assert _faults(at_50)["webhookFailures"] == 0  # every failure was met and retried


def test_the_triggers_rollback_completes_through_three_webhook_failures(at_50: Seeded) -> None:
    _faults(at_50, webhookFailures=3)
    result = asyncio.run(
        AsyncIstioHook().rollback(VS, at_50.namespace, RouteTarget(), reason="error rate")
    )
    assert result["split"] == {"v1": 100, "v2": 0}
    assert _weights(at_50) == {"v1": 100}
    assert _faults(at_50)["webhookFailures"] == 0


def test_throttled_requests_are_retried_after_what_retry_after_asks(at_50: Seeded) -> None:
    # The wait comes from the real server's answer: one try only, to keep its 429.
    _faults(at_50, throttledRequests=1, retryAfterSeconds=2)
    once = IstioHook(retry_policy=RetryPolicy(connect_attempts=1))
    with pytest.raises(
        IstioUnavailableError, match="last error HTTP 429: Too many requests"
    ) as err:
        once.get_virtual_service(VS, at_50.namespace)
    answer = err.value.__cause__
    assert isinstance(answer, BaseException)
    state = tenacity.RetryCallState(None, None, (), {})
    state.set_exception((type(answer), answer, None))
    assert WaitRetryAfter(RetryPolicy())(state) == 2.0

    _faults(at_50, throttledRequests=2, retryAfterSeconds=1)
    update = IstioHook().update_virtual_service(
        VS, at_50.namespace, lambda vs: set_canary_weight(vs, RouteTarget(), 10)
    )
    assert update.changed and _weights(at_50) == {"v1": 90, "v2": 10}
    assert _faults(at_50)["throttledRequests"] == 0


def test_past_the_budget_the_error_names_the_last_failure_and_nothing_changed(
    at_50: Seeded,
) -> None:
    _faults(at_50, webhookFailures=10)
    before = at_50.stored()
    hook = IstioHook(
        retry_policy=RetryPolicy(
            connect_attempts=3, connect_backoff_seconds=0.05, connect_deadline_seconds=5
        )
    )
    with pytest.raises(IstioUnavailableError) as err:
        hook.update_virtual_service(
            VS, at_50.namespace, lambda vs: set_canary_weight(vs, RouteTarget(), 100)
        )
    message = str(err.value)
    assert "kept failing: 3 attempts over" in message
    assert (
        'last error HTTP 500: Internal error occurred: failed calling webhook "validation.istio.io"'
        in message
    )
    assert at_50.stored() == before
    _faults(at_50, webhookFailures=0)


def test_a_read_only_user_fails_at_the_first_write_with_the_forbidden_message(
    at_50: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VIEWER",
        json.dumps(
            {
                "conn_type": "kubernetes",
                "extra": {
                    "kube_config_path": str(at_50.mesh.kubeconfig),
                    "cluster_context": "canary-mesh-viewer",
                },
            }
        ),
    )
    before = at_50.stored()
    op = SetCanaryWeightOperator(
        task_id="w",
        virtual_service=VS,
        namespace=at_50.namespace,
        weight=10,
        kubernetes_conn_id="viewer",
    )
    with pytest.raises(IstioForbiddenError) as err:
        op.execute({})
    assert str(err.value).startswith(
        f"forbidden: user canary-viewer cannot update virtualservices in namespace {at_50.namespace}"
    )
    assert at_50.stored() == before


def test_an_admission_denial_is_reported_as_such_and_not_retried(at_50: Seeded) -> None:
    _faults(at_50, webhookDenials=1, denialMessage="configuration is invalid: weight too high")
    before = at_50.stored()
    with pytest.raises(IstioAdmissionError) as err:
        IstioHook().update_virtual_service(
            VS, at_50.namespace, lambda vs: set_canary_weight(vs, RouteTarget(), 10)
        )
    assert str(err.value) == (
        f"admission denied: cannot replace VirtualService {VS!r} in {at_50.namespace!r}: "
        'admission webhook "validation.istio.io" denied the request: '
        "configuration is invalid: weight too high"
    )
    assert at_50.stored() == before


def test_a_write_held_by_slow_storage_is_stored_although_its_client_gave_up(at_50: Seeded) -> None:
    """``writeLatencySeconds`` holds every write (a slowly committing etcd) and counts the held
    ones in ``delayedWrites``; the fault suite kills a worker while its write is held. Pins the
    mesh's side of a client that went away: the write is still stored (kube-apiserver may or
    may not store it, depending on whether etcd had it), so a retry must take it as it finds it."""
    vs = at_50.stored()
    vs["spec"]["http"][0]["route"][0]["weight"] = 60
    vs["spec"]["http"][0]["route"][1]["weight"] = 40
    path = (
        f"/apis/networking.istio.io/{vs['apiVersion'].split('/')[1]}/namespaces/"
        f"{at_50.namespace}/virtualservices/{VS}"
    )
    assert _faults(at_50, writeLatencySeconds=3)["writeLatencySeconds"] == 3
    try:
        with at_50.mesh.http() as http:
            with pytest.raises(httpx.ReadTimeout):
                http.put(path, json=vs, timeout=httpx.Timeout(10, read=0.5))
            assert _faults(at_50)["delayedWrites"] == 1  # held, its client gone
            assert _weights(at_50) == {"v1": 50, "v2": 50}  # reads are not held
            for _ in range(100):
                if _faults(at_50)["delayedWrites"] == 0:
                    break
                time.sleep(0.1)
        assert _faults(at_50)["delayedWrites"] == 0
        assert _weights(at_50) == {"v1": 60, "v2": 40}
    finally:
        _faults(at_50, writeLatencySeconds=0)


@pytest.mark.parametrize("latency", [-1, 61, "3", True])
def test_a_write_latency_outside_0_to_60_seconds_is_refused(at_50: Seeded, latency: Any) -> None:
    with at_50.mesh.http() as http:
        answer = http.post("/_mesh/faults", json={"writeLatencySeconds": latency})
    assert answer.status_code == 400
    assert answer.json()["message"] == (
        f"writeLatencySeconds must be a number of seconds within 0..60, got {latency!r}"
    )
