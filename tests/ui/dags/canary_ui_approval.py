"""A rollout that waits for approval before its 100% step; the tests answer it through the REST API.

Only ``alice`` may answer. The model is trained once and reused by later runs. model-v2 and
the params that shape it are the example rollout's (``dags/canary_model.py``, copied beside
this file with the example DAG).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task
from canary_model import MODEL_PARAMS, MODEL_V2_MANIFEST

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.rollout import canary_rollout


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
    params={
        "bake_time_seconds": 5,
        "v2_error_rate": MODEL_PARAMS["v2_error_rate"],
        "v2_extra_latency_ms": MODEL_PARAMS["v2_extra_latency_ms"],
        "v2_crash_after_requests": MODEL_PARAMS["v2_crash_after_requests"],
        "v2_crash_mode": MODEL_PARAMS["v2_crash_mode"],
        "v2_crash_on": MODEL_PARAMS["v2_crash_on"],
    },
) as dag:
    deploy_v2 = DeployModelVersionOperator(
        task_id="deploy_v2", manifest=MODEL_V2_MANIFEST, timeout=120, poll_interval=1
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
