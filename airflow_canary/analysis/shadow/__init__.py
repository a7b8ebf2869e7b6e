"""Shadow analysis: v2's predictions compared with v1's on the same mirrored requests.

Records (``records``) are read from prediction logs, joined by request id (``pairing``),
measured by the shadow checks (``checks``) and judged sequentially within the rollout's error
budget (``judge``).
"""

from __future__ import annotations

from airflow_canary.analysis.shadow.checks import (
    SHADOW_CHECK_NAMES,
    MirroredErrorRateCheck,
    MirroredLatencyCheck,
    MirroredRequestsCheck,
    PairedPredictionDriftCheck,
    PredictionAgreementCheck,
    PredictionDeltaCheck,
    ShadowCheck,
    as_shadow_check,
    population_stability_index,
    shadow_check_from_dict,
)
from airflow_canary.analysis.shadow.judge import ShadowJudge, ShadowVerdict, pairs_needed_for_share
from airflow_canary.analysis.shadow.pairing import Pair, Pairing, pair_records
from airflow_canary.analysis.shadow.records import (
    FORMATS,
    REQUIRED_FIELDS,
    Prediction,
    PredictionRecord,
    ReadResult,
    input_hash,
    json_lines,
    read_records,
    record_format,
)
from airflow_canary.analysis.shadow.telemetry import (
    MirroredCounts,
    MirroredTelemetry,
    TelemetryPoll,
)

__all__ = [
    "FORMATS",
    "REQUIRED_FIELDS",
    "SHADOW_CHECK_NAMES",
    "MirroredCounts",
    "MirroredErrorRateCheck",
    "MirroredLatencyCheck",
    "MirroredRequestsCheck",
    "MirroredTelemetry",
    "PairedPredictionDriftCheck",
    "Pair",
    "Pairing",
    "Prediction",
    "PredictionAgreementCheck",
    "PredictionDeltaCheck",
    "PredictionRecord",
    "ReadResult",
    "ShadowCheck",
    "ShadowJudge",
    "ShadowVerdict",
    "TelemetryPoll",
    "as_shadow_check",
    "input_hash",
    "json_lines",
    "pair_records",
    "pairs_needed_for_share",
    "population_stability_index",
    "read_records",
    "record_format",
    "shadow_check_from_dict",
]
