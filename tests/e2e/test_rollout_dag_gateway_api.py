"""The example rollout DAG end to end on a Gateway API HTTPRoute: real Airflow runs, the local mesh
serving the Gateway API CRDs, real Prometheus reading the same Istio-standard telemetry, real
model servers behind the Services model-v1 and model-v2."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from airflow_canary.local.tools.stack import REPO, LocalStack, StackConfig, prometheus_available
from tests.fixtures.stack import FAST, FAST_FAIL, RolloutStack

STABLE_ONLY = [("model-v1", 100), ("model-v2", 0)]
CANARY_ONLY = [("model-v1", 0), ("model-v2", 100)]


@pytest.fixture(scope="module")
def gateway_stack(
    airflow_db: Path, tmp_path_factory: pytest.TempPathFactory, gateway_api_crds_dir: Path
) -> Iterator[RolloutStack]:
    if not prometheus_available():
        pytest.fail("the Debian prometheus package is required: apt-get install prometheus")
    Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"]).mkdir(parents=True, exist_ok=True)
    config = StackConfig(
        state_dir=tmp_path_factory.mktemp("gateway-stack"),
        rps=150,
        router="gateway-api",
        gateway_api_crds_dir=gateway_api_crds_dir,
    )
    with LocalStack(config) as stack:
        env = {
            **os.environ,
            **stack.connection_env(),
            "CANARY_POLL_INTERVAL_SECONDS": "1",
            "CANARY_ROUTER": "gateway-api",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        running = RolloutStack(stack, env)
        running.add_example_dags()
        yield running


def _reset(stack: RolloutStack) -> None:
    import yaml
    from kubernetes.client import AppsV1Api
    from kubernetes.client.exceptions import ApiException

    api = stack.stack.api_client()
    route = REPO / "examples" / "manifests" / "gateway-api" / "httproute-00-all-v1.yaml"
    stack.stack.apply(api, [yaml.safe_load(route.read_text())])
    try:
        AppsV1Api(api).delete_namespaced_deployment("model-v2", "default")
    except ApiException as err:
        if err.status != 404:
            raise


def _rules(route: dict[str, Any]) -> list[list[tuple[str, int]]]:
    return [
        [(r["name"], r["weight"]) for r in rule["backendRefs"]] for rule in route["spec"]["rules"]
    ]


def test_good_canary_is_promoted_on_an_httproute(gateway_stack: RolloutStack) -> None:
    _reset(gateway_stack)
    run = gateway_stack.run_dag("canary_rollout", FAST)
    assert run.state == "success", run.log[-4000:]
    route = gateway_stack.stack.route()
    assert _rules(route) == [CANARY_ONLY]  # header rule removed, everything on model-v2
    assert run.xcom("canary.plan")["router"] == "gateway-api"
    weights = [run.xcom(f"canary.step_{i}.set_weight")["split"]["model-v2"] for i in range(1, 5)]
    assert weights == [20, 40, 60, 100]
    for step in (1, 2, 3):
        verdict = run.xcom(f"canary.step_{step}.analyze", "verdict")
        assert verdict["verdict"] == "PASS", verdict
        assert verdict["checks"] and all(c["canary_requests"] >= 100 for c in verdict["checks"])


def test_canary_with_errors_is_rolled_back_on_an_httproute(gateway_stack: RolloutStack) -> None:
    _reset(gateway_stack)
    run = gateway_stack.run_dag("canary_rollout", {**FAST_FAIL, "v2_error_rate": 0.1})
    assert run.state == "failed", run.log[-4000:]
    assert _rules(gateway_stack.stack.route()) == [STABLE_ONLY]
    verdict = run.xcom("canary.step_1.analyze", "verdict")
    assert verdict["verdict"] == "FAIL", verdict
    # error-rate FAILs; another check may share the FAIL on evidence of its own
    assert "error-rate" in [c["name"] for c in verdict["checks"] if c["status"] == "FAIL"]
    assert "error rate" in run.xcom("canary.rollback")["reason"]
    assert "Canary rolled back to stable" in run.log
