"""Shadow analysis: v2's predictions compared with v1's on the same mirrored requests.

Records (``records``) are read from prediction logs, joined by request id (``pairing``),
measured by the shadow checks (``checks``) and judged sequentially within the rollout's error
budget (``judge``).
"""

from __future__ import annotations

from airflow_canary.analysis.shadow.checks import (
    PredictionAgreementCheck,
    PredictionDeltaCheck,
    ShadowCheck,
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

__all__ = [
    "FORMATS",
    "REQUIRED_FIELDS",
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
    "input_hash",
    "json_lines",
    "pair_records",
    "pairs_needed_for_share",
    "read_records",
    "record_format",
    "shadow_check_from_dict",
]
