"""A canary rollout as one task group: its plan, its bookkeeping operators and ``canary_rollout()``."""

from __future__ import annotations

from airflow_canary.rollout.plan import RolloutPlan, RolloutPlanError, validate_steps
from airflow_canary.rollout.shadow import ShadowPhase
from airflow_canary.rollout.task_group import (
    KUBERNETES_CONN_ID,
    PROMETHEUS_CONN_ID,
    canary_rollout,
)

__all__ = [
    "KUBERNETES_CONN_ID",
    "PROMETHEUS_CONN_ID",
    "RolloutPlan",
    "RolloutPlanError",
    "ShadowPhase",
    "canary_rollout",
    "validate_steps",
]
