"""A rollout whose model-v2 crashes at start: the deploy must fail and no traffic may move."""

from __future__ import annotations

import sys

import pendulum
from airflow.sdk import DAG

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.rollout import canary_rollout

CRASHING_V2 = {
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
                        "command": [
                            sys.executable,
                            "-c",
                            "import sys; print('model file is corrupt'); sys.exit(3)",
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

with DAG(
    dag_id="canary_e2e_crash",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
) as dag:
    deploy_v2 = DeployModelVersionOperator(
        task_id="deploy_v2", manifest=CRASHING_V2, timeout=8, poll_interval=1
    )
    deploy_v2 >> canary_rollout(
        virtual_service="model-virtual-service",
        steps=(50, 100),
        checks=[ErrorRateCheck(max_increase=0.02)],
        bake_time=5,
        poll_interval=1,
    )
