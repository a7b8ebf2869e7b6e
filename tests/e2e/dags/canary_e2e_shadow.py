"""A rollout with a shadow phase: v2 sees mirrored live requests and is judged on its predictions first.

``model`` picks model-v2: ``same`` serves v1's very model file (an identical model), ``bad`` a
deliberately worse one; ``v2_error_rate`` makes v2 answer that share of requests with HTTP 500. Both versions log their predictions (docs/prediction-logs.md); v2's log
is per run, so runs do not see each other's records.
"""

from __future__ import annotations

import os
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_canary.analysis import ErrorRateCheck, PredictionAgreementCheck
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.rollout import ShadowPhase, canary_rollout

MODEL_DIR = Path(os.environ.get("CANARY_MODEL_DIR", "/tmp/canary-models"))
LOG_DIR = Path(os.environ.get("CANARY_PREDICTION_LOG_DIR", "/tmp/canary-predictions"))
V2_LOG = f"file://{LOG_DIR}/v2-{{{{ run_id | replace(':', '-') | replace('+', '-') }}}}.jsonl"

MODEL_V2 = {
    "apiVersion": "apps/v1",
    "kind": "Deployment",
    "metadata": {"name": "model-v2", "labels": {"app": "model", "version": "v2"}},
    "spec": {
        "replicas": 1,
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
                                "value": "{{ ti.xcom_pull(task_ids='model_path') }}",
                            },
                            {"name": "MODEL_PREDICTION_LOG", "value": V2_LOG},
                            {"name": "MODEL_ERROR_RATE", "value": "{{ params.v2_error_rate }}"},
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
def model_path(**context) -> str:
    """v1's model file for an identical v2, else a deliberately worse model."""
    if context["params"]["model"] == "same":
        return str(MODEL_DIR / "model-v1.joblib")
    from airflow_canary.local.model.training import train_model

    return str(train_model(MODEL_DIR / "model-shadow-bad.joblib", quality="bad").path)


with DAG(
    dag_id="canary_e2e_shadow",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=None,
    catchup=False,
    params={
        "model": Param("same", enum=["same", "bad"]),
        "v2_error_rate": Param(0.0, type="number", minimum=0, maximum=1),
    },
) as dag:
    deploy_v2 = DeployModelVersionOperator(
        task_id="deploy_v2", manifest=MODEL_V2, timeout=120, poll_interval=1
    )
    (
        model_path()
        >> deploy_v2
        >> canary_rollout(
            virtual_service="model-virtual-service",
            steps=(50, 100),
            checks=[ErrorRateCheck(max_increase=0.05)],
            bake_time=5,
            poll_interval=1,
            shadow=ShadowPhase(
                prediction_log=[f"file://{LOG_DIR}/v1.jsonl", V2_LOG],
                checks=[PredictionAgreementCheck(max_disagreement=0.02)],
                percent=100,
                duration=10,
                poll_interval=2,
                pairing_window=10,
            ),
        )
    )
