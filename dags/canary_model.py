"""The candidate model of the example rollout: model-v2's Deployment and the params that shape it.

A plain module beside the DAG files (it defines no DAG), so that every DAG rolling out this
model deploys the same model-v2 and offers the same trigger-form params: Airflow puts the DAGs
folder on ``sys.path`` when it parses and runs DAG files. The manifest's templates read the
DAG's params, so a DAG using it offers ``v2_error_rate``, ``v2_extra_latency_ms``,
``v2_crash_after_requests``, ``v2_crash_mode`` and ``v2_crash_on``.

Both versions log every prediction (docs/prediction-logs.md) under ``PREDICTION_LOG_DIR``, where
a shadow phase reads them: model-v1 to ``v1.jsonl`` (the local stack starts it so), model-v2 to a
file of its own per DAG run, so a rollout never pairs records of an earlier one.
"""

from __future__ import annotations

import os
from pathlib import Path

from airflow.sdk import Param

#: the folder of the prediction logs; a cluster would use a store both Airflow and the model
#: pods reach (``s3://...``), the local stack a folder of its state (``CANARY_PREDICTION_LOG_DIR``)
PREDICTION_LOG_DIR = (
    Path(
        os.environ.get(
            "CANARY_PREDICTION_LOG_DIR",
            Path(os.environ.get("AIRFLOW_HOME", "~/airflow")) / "canary-predictions",
        )
    )
    .expanduser()
    .resolve()
)
#: model-v1's prediction log
V1_PREDICTION_LOG = f"file://{PREDICTION_LOG_DIR}/v1.jsonl"
#: model-v2's prediction log, one per DAG run (a template of the run id)
V2_PREDICTION_LOG = (
    f"file://{PREDICTION_LOG_DIR}/v2-{{{{ run_id | replace(':', '-') | replace('+', '-') }}}}.jsonl"
)

#: model-v2's Deployment; the MODEL_PATH template reads the ``train`` task's XCom
MODEL_V2_MANIFEST = {
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
                            {"name": "MODEL_PREDICTION_LOG", "value": V2_PREDICTION_LOG},
                            {"name": "MODEL_ERROR_RATE", "value": "{{ params.v2_error_rate }}"},
                            {
                                "name": "MODEL_EXTRA_LATENCY_MS",
                                "value": "{{ params.v2_extra_latency_ms }}",
                            },
                            {
                                "name": "MODEL_CRASH_AFTER_REQUESTS",
                                "value": "{{ params.v2_crash_after_requests }}",
                            },
                            {"name": "MODEL_CRASH_MODE", "value": "{{ params.v2_crash_mode }}"},
                            {"name": "MODEL_CRASH_ON", "value": "{{ params.v2_crash_on }}"},
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

#: the params the manifest and the training read: which model, and faults injected into v2
MODEL_PARAMS = {
    "model_quality": Param(
        "good", enum=["good", "bad"], description="'bad' trains a deliberately worse model"
    ),
    "v2_error_rate": Param(
        0.0,
        type="number",
        minimum=0,
        maximum=1,
        description="share of v2 requests answered with HTTP 500",
    ),
    "v2_extra_latency_ms": Param(
        0, type="integer", minimum=0, description="latency added to every v2 answer"
    ),
    "v2_crash_after_requests": Param(
        0,
        type="integer",
        minimum=0,
        description="each v2 pod crashes after this many predictions (0: never)",
    ),
    "v2_crash_mode": Param(
        "exit",
        enum=["exit", "fail"],
        description="exit: the pod's process is killed (an OOM kill) and restarted with "
        "back-off; fail: it stays up and answers every prediction with HTTP 500",
    ),
    "v2_crash_on": Param(
        "all",
        enum=["all", "live", "mirrored"],
        description="which predictions count toward the crash: all, live (users' requests) or "
        "mirrored (the shadow phase's copies)",
    ),
}
