"""Example: retrain a model and roll it out as a canary, 1% -> 10% -> 50% -> 100%, with rollback.

``canary_rollout``: train -> deploy_v2 -> canary (shadow phase, header route, weight steps,
health analysis after each step, promote or roll back). In the shadow phase every live request
is mirrored to model-v2, whose answers nobody sees, and v2's predictions are compared with
v1's on the same requests: a model that answers otherwise is rolled back before any user
request reaches it. Triggered by hand (the trigger form edits the params
below) or by a new model published on the ``canary_model`` asset, which the weekly
``retrain_model_weekly`` DAG does. Heavy imports live inside the tasks so this file parses fast.

A promotion emits an asset event on ``canary://default/model-virtual-service``, which starts
``after_model_promotion``. With ``CANARY_NOTIFY_EMAIL`` set, every promotion and rollback is
mailed there (with the reason, each check's numbers and links) through the ``smtp_default``
connection.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Asset, Param, task
from canary_model import MODEL_PARAMS, MODEL_V2_MANIFEST, V1_PREDICTION_LOG, V2_PREDICTION_LOG

from airflow_canary.analysis import (
    ErrorRateCheck,
    LatencyCheck,
    MirroredErrorRateCheck,
    ModelAccuracyCheck,
    PredictionAgreementCheck,
)
from airflow_canary.assets.canary import promotion_asset
from airflow_canary.notifications.rollout import RolloutNotifier
from airflow_canary.operators.deploy import DeployModelVersionOperator
from airflow_canary.rollout import ShadowPhase, canary_rollout
from airflow_canary.routing.router import route_parameter

#: the candidate model; the weekly retrain publishes it, the rollout consumes it
MODEL_ASSET = Asset(name="canary_model", uri="file:///canary/models/candidate")
MODEL_DIR = Path(
    os.environ.get(
        "CANARY_MODEL_DIR", Path(os.environ.get("AIRFLOW_HOME", "~/airflow")) / "canary-models"
    )
).expanduser()
BAKE_TIME_SECONDS = int(os.environ.get("CANARY_BAKE_TIME_SECONDS", "120"))
SHADOW_DURATION_SECONDS = int(os.environ.get("CANARY_SHADOW_DURATION_SECONDS", "120"))
POLL_INTERVAL_SECONDS = float(os.environ.get("CANARY_POLL_INTERVAL_SECONDS", "5"))
STEPS = [1, 10, 50, 100]
#: the traffic backend: "istio" (VirtualService + DestinationRule subsets) or "gateway-api"
#: (an HTTPRoute whose rules send to the Services model-v1 and model-v2)
ROUTER = os.environ.get("CANARY_ROUTER", "istio")
ROUTE_TARGETS: dict[str, dict[str, str]] = {
    "istio": {"route": "model-virtual-service", "stable": "v1", "canary": "v2"},
    "gateway-api": {"route": "model-route", "stable": "model-v1", "canary": "model-v2"},
}
ROUTE_TARGET = ROUTE_TARGETS.get(ROUTER, ROUTE_TARGETS["istio"])
#: the param (and canary_rollout() argument) naming the route object: ``virtual_service`` for
#: Istio, ``http_route`` for Gateway API
ROUTE_PARAM = route_parameter(ROUTER)
#: the model's route object; a promotion there emits an event on this asset
PROMOTED_MODEL = promotion_asset("default", ROUTE_TARGET["route"])
NOTIFY_EMAIL = os.environ.get("CANARY_NOTIFY_EMAIL")


def notifiers() -> list[RolloutNotifier]:
    """Mail the rollout's outcome to ``CANARY_NOTIFY_EMAIL`` (none when it is unset)."""
    if not NOTIFY_EMAIL:
        return []
    from airflow.providers.smtp.notifications.smtp import SmtpNotifier

    return [RolloutNotifier(SmtpNotifier(to=NOTIFY_EMAIL, from_email="canary@localhost"))]


PARAMS = {
    ROUTE_PARAM: Param(
        ROUTE_TARGET["route"],
        type="string",
        description="route object to shift (VirtualService, or HTTPRoute with Gateway API)",
    ),
    "namespace": Param("default", type="string", description="namespace of the model's objects"),
    "steps": Param(
        STEPS,
        type="array",
        items={"type": "integer", "minimum": 1, "maximum": 100},
        minItems=len(STEPS),
        maxItems=len(STEPS),
        description="canary weight at each step, strictly increasing",
    ),
    "bake_time_seconds": Param(
        BAKE_TIME_SECONDS,
        type="integer",
        minimum=1,
        description="how long each step is judged before it may pass",
    ),
    "shadow_duration_seconds": Param(
        SHADOW_DURATION_SECONDS,
        type="integer",
        minimum=1,
        description="how long v2's predictions on mirrored requests are judged before it may pass",
    ),
    **MODEL_PARAMS,
}

CHECKS = [
    ErrorRateCheck(max_increase=0.02),
    LatencyCheck(quantile=0.99, max_ratio=1.5),
    ModelAccuracyCheck(max_drop=0.05),
]
#: before any user request reaches v2: every live request mirrored to it, its predicted class
#: the same as v1's on at least 98% of them, and at most a fifth of the mirrored requests
#: answered with an error (Istio telemetry from v2's own sidecar). The shadow phase stops a v2
#: that is broken; a few percent more errors than v1 is for the weight steps to judge, against
#: v1 on the same live traffic (ErrorRateCheck(max_increase=0.02) above).
SHADOW = ShadowPhase(
    prediction_log=[V1_PREDICTION_LOG, V2_PREDICTION_LOG],
    checks=[
        PredictionAgreementCheck(max_disagreement=0.02),
        MirroredErrorRateCheck(max_rate=0.2),
    ],
    percent=100,
    duration="{{ params.shadow_duration_seconds }}",
)


def _train(context: dict, *, use_published: bool) -> dict:
    from airflow_canary.local.model.training import train_model

    if use_published:
        for events in (context.get("triggering_asset_events") or {}).values():
            for event in events:
                extra = dict(event.extra or {})
                if extra.get("path") and Path(extra["path"]).is_file():
                    print(f"using the model published on {MODEL_ASSET.name}: {extra['path']}")
                    return extra
    params = context["params"]
    run = context["run_id"].replace(":", "_").replace("+", "_")
    path = MODEL_DIR / f"model-{context['dag'].dag_id}-{run}.joblib"
    result = train_model(path, quality=params["model_quality"])
    print(
        f"trained {result.quality.value} model on {result.dataset}: "
        f"holdout accuracy {result.holdout_accuracy:.3f} ({result.n_holdout} rows), saved to {path}"
    )
    return result.to_dict()


@task
def train(**context) -> dict:
    """Train on the bundled dataset, or take the model the weekly retrain published."""
    return _train(context, use_published=True)


@task(outlets=[MODEL_ASSET])
def train_and_publish(**context) -> dict:
    """Train on the bundled dataset and publish the model on the asset, which starts a rollout."""
    result = _train(context, use_published=False)
    context["outlet_events"][MODEL_ASSET].extra = result
    return result


with DAG(
    dag_id="canary_rollout",
    description="Retrain the model and roll it out as a canary with health analysis and rollback",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=MODEL_ASSET,
    catchup=False,
    params=PARAMS,
    tags=["canary", "ml"],
    dagrun_timeout=timedelta(hours=2),
    doc_md=__doc__,
) as dag:
    deploy_v2 = DeployModelVersionOperator(
        task_id="deploy_v2",
        manifest=MODEL_V2_MANIFEST,
        namespace="{{ params.namespace }}",
        timeout=120,
        poll_interval=1,
    )
    rollout = canary_rollout(
        # The route object, named in its router's term: an Istio VirtualService, or an HTTPRoute.
        virtual_service="{{ params.virtual_service }}" if ROUTER == "istio" else None,
        http_route="{{ params.http_route }}" if ROUTER == "gateway-api" else None,
        namespace="{{ params.namespace }}",
        steps=STEPS,
        steps_param="steps",
        checks=CHECKS,
        bake_time="{{ params.bake_time_seconds }}",
        poll_interval=POLL_INTERVAL_SECONDS,
        shadow=SHADOW,
        router=ROUTER,
        stable_subset=ROUTE_TARGET["stable"],
        canary_subset=ROUTE_TARGET["canary"],
        stable_version="v1",
        canary_version="v2",
        notifiers=notifiers(),
    )
    train() >> deploy_v2 >> rollout


@task
def announce_promotion(**context) -> dict:
    """Read the promotion's asset event: which version now serves, from which training run."""
    promoted = {}
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            promoted = dict(event.extra or {})
            verdicts = {t: v["verdict"] for t, v in (promoted.get("verdicts") or {}).items()}
            print(
                f"{promoted.get('version')} now serves {promoted.get('namespace')}/"
                f"{promoted.get('virtual_service') or promoted.get('http_route')} "
                f"(rollout {promoted.get('rollout')}, "
                f"trained by {promoted.get('trained_by')}, verdicts {verdicts})"
            )
    return promoted


with DAG(
    dag_id="after_model_promotion",
    description="Runs after each promotion of a model behind model-virtual-service",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule=PROMOTED_MODEL,
    catchup=False,
    tags=["canary", "ml"],
) as after_promotion:
    announce_promotion()


with DAG(
    dag_id="retrain_model_weekly",
    description="Weekly retrain; publishing the model triggers canary_rollout",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    schedule="@weekly",
    catchup=False,
    is_paused_upon_creation=True,  # turn it on when retrained models should roll out unattended
    params={"model_quality": PARAMS["model_quality"]},
    tags=["canary", "ml"],
) as weekly:
    train_and_publish()
