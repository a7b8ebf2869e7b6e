"""Pure canary analysis: checks become PromQL, samples become verdicts."""

from __future__ import annotations

from airflow_canary.analysis.canary import CanaryAnalysis
from airflow_canary.analysis.checks import (
    Check,
    ErrorRateCheck,
    LatencyCheck,
    ModelAccuracyCheck,
    PredictionDriftCheck,
    PromQLCheck,
    PromQLRatioCheck,
    check_from_dict,
)
from airflow_canary.analysis.judges import Judge, make_judge
from airflow_canary.analysis.promql import ISTIO_DURATION_BUCKETS_MS, escape_label_value
from airflow_canary.analysis.shadow import (
    MirroredErrorRateCheck,
    MirroredLatencyCheck,
    PredictionAgreementCheck,
    PredictionDeltaCheck,
)
from airflow_canary.analysis.values import (
    AnalysisError,
    Arm,
    Arms,
    Query,
    QueryFailure,
    Sample,
    Status,
)
from airflow_canary.analysis.verdict import CheckResult, Verdict

__all__ = [
    "ISTIO_DURATION_BUCKETS_MS",
    "AnalysisError",
    "Arm",
    "Arms",
    "CanaryAnalysis",
    "Check",
    "CheckResult",
    "ErrorRateCheck",
    "Judge",
    "LatencyCheck",
    "MirroredErrorRateCheck",
    "MirroredLatencyCheck",
    "ModelAccuracyCheck",
    "PredictionAgreementCheck",
    "PredictionDeltaCheck",
    "PredictionDriftCheck",
    "PromQLCheck",
    "PromQLRatioCheck",
    "Query",
    "QueryFailure",
    "Sample",
    "Status",
    "Verdict",
    "check_from_dict",
    "escape_label_value",
    "make_judge",
]
