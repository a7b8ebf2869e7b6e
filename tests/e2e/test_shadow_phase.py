"""The example DAG's shadow phase end to end: real Airflow, the local mesh mirroring live load, real model servers.

A worse model is stopped in the shadow phase before any live request reaches it (Istio
telemetry: v2's only requests are the mirrored copies its own sidecar reports); an identical
model (the session's promoted run: ``train`` fits v1's very model again) passes the phase; a v2
that fails every mirrored request fails the phase early on its mirrored error rate, read from
Istio telemetry, with no live request served by v2.
"""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request

import pytest

from tests.e2e.conftest import E2E
from tests.fixtures.example_runs import PromotedRun
from tests.fixtures.stack import FAST

ALL_V1 = [{"route": [{"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}]}]


@pytest.fixture
def e2e_clean(e2e: E2E) -> E2E:
    e2e.reset_traffic()
    return e2e


def v2_requests(e2e: E2E, reporter: str) -> float:
    query = f'sum(istio_requests_total{{reporter="{reporter}",destination_version="v2"}})'
    url = f"{e2e.stack.prometheus_url}/api/v1/query?" + urllib.parse.urlencode({"query": query})
    with urllib.request.urlopen(url, timeout=10) as response:
        result = json.load(response)["data"]["result"]
    return float(result[0]["value"][1]) if result else 0.0


def settled_v2_requests(e2e: E2E, reporter: str) -> float:
    """v2's request count once Prometheus has scraped twice more (its scrape interval is 1 s)."""
    time.sleep(3)
    return v2_requests(e2e, reporter)


def test_a_worse_model_is_stopped_in_the_shadow_phase(e2e_clean: E2E) -> None:
    live_before = settled_v2_requests(e2e_clean, "source")
    seen_before = v2_requests(e2e_clean, "destination")
    run = e2e_clean.run_dag("canary_rollout", {**FAST, "model_quality": "bad"})
    assert run.state == "failed"
    states = run.task_states()
    assert states["canary.shadow.analyze"] == "failed", states
    assert states["canary.header_route"] == "upstream_failed"
    assert states["canary.step_1.set_weight"] == "upstream_failed"
    assert states["canary.rollback"] == "success"
    verdict = run.xcom("canary.shadow.analyze", "verdict")
    assert verdict["verdict"] == "FAIL", verdict
    assert verdict["reason"].startswith("v2 disagrees with v1 on ")
    assert verdict["examples"] and all(
        e["stable"]["prediction"]["class"] != e["canary"]["prediction"]["class"]
        for e in verdict["examples"]
    )
    assert run.xcom("canary.rollback")["reason"].startswith(
        "canary.shadow.analyze: shadow analysis FAIL: v2 disagrees with v1"
    )
    assert run.xcom("canary.rollback")["live_traffic"] is False
    assert "Canary stopped before it served any live request (mirror removed)" in run.log
    assert e2e_clean.stack.virtual_service()["spec"]["http"] == ALL_V1  # mirror removed
    # Istio telemetry: v2's sidecar saw the mirrored copies; no caller's sidecar ever sent a
    # live request to v2 (mirrored copies have no source report, istio/istio#23496).
    assert settled_v2_requests(e2e_clean, "source") <= live_before  # no live request to v2
    assert v2_requests(e2e_clean, "destination") > seen_before


def test_an_identical_model_passes_the_shadow_phase(promoted_run: PromotedRun) -> None:
    run = promoted_run.run
    states = run.task_states()
    assert [states[f"canary.shadow.{t}"] for t in ("mirror_on", "analyze", "mirror_off")] == [
        "success"
    ] * 3
    verdict = run.xcom("canary.shadow.analyze", "verdict")
    assert verdict["verdict"] == "PASS", verdict
    check = verdict["checks"][0]
    assert check["name"] == "prediction-agreement" and check["canary_value"] == 0.0
    assert verdict["pairing"]["pairs"] >= check["canary_requests"] > 0
    assert verdict["pairing"]["unpaired_canary"] == 0
    # every live request mirrored, and the mirror off before the header route and step 1
    mirror_on = run.xcom("canary.shadow.mirror_on")
    assert mirror_on["mirror_percent"] == 100.0
    # v1's records from before the mirror's write are from before the phase, not v1 records
    # without a canary answer: only those of the moment the mesh took the new config are.
    assert run.xcom("canary.shadow.analyze", "analysis")["since"] == mirror_on["mirrored_since"]
    assert verdict["pairing"]["before_phase"] > 0
    assert verdict["pairing"]["unpaired_stable"] < 0.2 * verdict["pairing"]["pairs"], verdict
    assert run.xcom("canary.shadow.mirror_off")["mirror_percent"] == 0.0


def test_a_v2_failing_on_mirrored_requests_fails_the_phase(e2e_clean: E2E) -> None:
    # v2 answers every mirrored request with HTTP 500: it writes no prediction and no pair forms,
    # but its own sidecar reports each 500 (reporter="destination"), and the mirrored error rate
    # FAILs the phase as soon as the evidence allows, before the duration is over.
    live_before = settled_v2_requests(e2e_clean, "source")
    seen_before = v2_requests(e2e_clean, "destination")
    run = e2e_clean.run_dag("canary_rollout", {**FAST, "v2_error_rate": 1.0})
    assert run.state == "failed"
    verdict = run.xcom("canary.shadow.analyze", "verdict")
    assert verdict["verdict"] == "FAIL", verdict
    assert verdict["reason"].startswith("v2 answered 100% of "), verdict["reason"]
    assert "mirrored requests with HTTP 5xx or gRPC status" in verdict["reason"]
    assert verdict["elapsed_seconds"] < 15  # early: FAST's shadow duration is 15 s
    checks = {c["name"]: c for c in verdict["checks"]}
    assert checks["mirrored-error-rate"]["status"] == "FAIL"
    assert checks["mirrored-error-rate"]["canary_value"] == 1.0
    assert checks["mirrored-error-rate"]["canary_requests"] > 0
    assert verdict["pairing"]["pairs"] == 0
    assert run.xcom("canary.rollback")["reason"].startswith(
        "canary.shadow.analyze: shadow analysis FAIL: v2 answered 100% of "
    )
    assert e2e_clean.stack.virtual_service()["spec"]["http"] == ALL_V1
    # Istio telemetry: every one of v2's requests was a mirrored copy its own sidecar reported;
    # no caller's sidecar sent v2 a live request (istio/istio#23496).
    assert settled_v2_requests(e2e_clean, "source") <= live_before
    assert v2_requests(e2e_clean, "destination") > seen_before
