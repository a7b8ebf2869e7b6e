"""Benchmark DAGs: a failing canary rolled back from the trigger, or by the rollback task."""

from __future__ import annotations

import os

import pendulum
from airflow.sdk import DAG

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.rollout import canary_rollout

#: model-v2 serves the same model as v1 but answers 30% of requests with HTTP 500
MODEL_PATH = os.path.join(os.environ.get("CANARY_MODEL_DIR", "."), "model-v1.joblib")
FAILING_V2 = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "model-v2"},
    "spec": {
        "replicas": 1,
        "selector": {"matchLabels": {"app": "model", "version": "v2"}},
        "template": {
            "metadata": {"labels": {"app": "model", "version": "v2"}},
            "spec": {
                "containers": [
                    {
                        "name": "model-server",
                        "image": "your-docker-repo/model-runner:v2",
                        "env": [
                            {"name": "MODEL_VERSION", "value": "v2"},
                            {"name": "MODEL_PATH", "value": MODEL_PATH},
                            {"name": "MODEL_ERROR_RATE", "value": "0.3"},
                        ],
                        "ports": [{"containerPort": 8080}],
                        "readinessProbe": {
                            "httpGet": {"path": "/healthz", "port": 8080},
                            "periodSeconds": 1,
                        },
                    }
                ]
            },
        },
    },
}

for in_trigger in (True, False):
    dag_id = "canary_bench_" + ("trigger_rollback" if in_trigger else "task_rollback")
    with DAG(
        dag_id=dag_id,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        schedule=None,
        catchup=False,
    ):
        DeployModelVersionOperator(
            task_id="deploy_v2", manifest=FAILING_V2, timeout=60, poll_interval=0.5
        ) >> canary_rollout(
            virtual_service="model-virtual-service",
            steps=(50, 100),
            header_route=None,
            checks=[ErrorRateCheck(max_increase=0.02)],
            bake_time=5,
            poll_interval=1,
            rollback_in_trigger=in_trigger,
            deferrable=True,  # the benchmark measures the triggerer's rollback
        )
