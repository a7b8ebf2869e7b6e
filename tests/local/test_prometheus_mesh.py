"""Prometheus scraping the mesh sees exactly the traffic the load generator sent, per version."""

from __future__ import annotations

import asyncio
import copy
import time
from pathlib import Path

import pytest
import yaml

from airflow_canary.local.tools.loadgen import LoadConfig, run_load
from airflow_canary.local.tools.stack import (
    EXAMPLE_MANIFESTS,
    LocalStack,
    StackConfig,
    prometheus_available,
)
from tests.conftest import seed_manifest


def test_prometheus_request_counts_match_the_load_generator(tmp_path: Path) -> None:
    if not prometheus_available():
        pytest.fail("the Debian prometheus package is required: apt-get install prometheus")
    with LocalStack(StackConfig(state_dir=tmp_path, load=False)) as stack:
        api = stack.api_client()
        v1 = yaml.safe_load((EXAMPLE_MANIFESTS / "deployment-model-v1.yaml").read_text())
        stack._configure_model_deployment(
            v1, version="v1", model=stack.models_dir / "model-v1.joblib", replicas=1
        )
        v2 = copy.deepcopy(v1)
        v2["metadata"]["name"] = "model-v2"
        for labels in (
            v2["spec"]["selector"]["matchLabels"],
            v2["spec"]["template"]["metadata"]["labels"],
        ):
            labels["version"] = "v2"
        v2["spec"]["template"]["spec"]["containers"][0]["env"] = [
            {"name": "MODEL_PATH", "value": str(stack.models_dir / "model-v1.joblib")},
            {"name": "MODEL_VERSION", "value": "v2"},
            {"name": "MODEL_ERROR_RATE", "value": "0.2"},
        ]
        stack.apply(api, [v2, yaml.safe_load(seed_manifest("vs-02-canary-10.yaml").read_text())])
        stack.wait_for_deployment(api, "model-v2")

        report = asyncio.run(
            run_load(
                LoadConfig(
                    target=stack.data_url, host="model-service", rps=100, duration=6, feedback=True
                )
            )
        )
        sent = {
            (version, code): count
            for version, stats in report.per_version.items()
            for code, count in stats.by_status.items()
        }
        assert sum(sent.values()) == 600
        assert {v for v, _ in sent} == {"v1", "v2"}
        assert sent.get(("v2", "500"), 0) > 0  # the canary's injected errors

        promql = 'sum by (destination_version, response_code) (istio_requests_total{reporter="destination"})'
        deadline = time.monotonic() + 30
        while True:
            seen = {
                (r["metric"]["destination_version"], r["metric"]["response_code"]): int(
                    float(r["value"][1])
                )
                for r in stack.query(promql)
            }
            if seen == sent or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert seen == sent

        # accuracy per version is a PromQL ratio of the model servers' feedback counters
        ratio = stack.query(
            "sum by (version) (model_feedback_correct_total) / sum by (version) (model_feedback_total)"
        )
        accuracy = {r["metric"]["version"]: float(r["value"][1]) for r in ratio}
        assert accuracy.keys() == {"v1", "v2"} and all(a > 0.9 for a in accuracy.values())
