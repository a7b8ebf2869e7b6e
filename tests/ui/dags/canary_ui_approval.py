"""A rollout that waits for approval before its 100% step; the tests answer it through the REST API.

Only ``alice`` may answer. The model is trained once and reused by later runs.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.rollout import canary_rollout

MODEL_V2 = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "model-v2", "labels": {"app": "model", "version": "v2"}},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "model", "version": "v2"}},
        "template": {
            "metadata": {
                "labels": {"app": "model", "version": "v2"},
                "annotations": {"prometheus.io/scrape": "true"},
            },
            "spec": {
                "containers": [
                    {
                        "name": "model-server",
                        "image": "your-docker-repo/model-runner:v2",
                        "ports": [{"containerPort": 8080}],
                        "env": [
                            {"name": "MODEL_VERSION", "value": "v2"},
                            {
                                "name": "MODEL_PATH",
                                "value": "{{ ti.xcom_pull(task_ids='train')['path'] }}",
                            },
                        ],
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


@task
def train() -> dict:
    """A good model, trained on the first run and reused afterwards."""
    path = Path(os.environ["CANARY_MODEL_DIR"]) / "approval-good.joblib"
    if not path.is_file():
        from airflow_canary.local.model.training import train_model

        train_model(path, quality="good")
    return {"path": str(path)}


with DAG(
    dag_id="canary_ui_approval",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    params={"bake_time_seconds": 5},
) as dag:
    deploy_v2 = DeployModelVersionOperator(
        task_id="deploy_v2", manifest=MODEL_V2, timeout=120, poll_interval=1
    )
    (
        train()
        >> deploy_v2
        >> canary_rollout(
            virtual_service="model-virtual-service",
            steps=(20, 40, 60, 100),
            checks=[ErrorRateCheck(max_increase=0.02)],
            bake_time="{{ params.bake_time_seconds }}",
            poll_interval=1,
            approve_before=[100],
            approvers=["alice"],
            approval_timeout=timedelta(minutes=15),
        )
    )
