"""Shadow analysis: v2's predictions compared with v1's on the same mirrored requests."""

from __future__ import annotations

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
    "Prediction",
    "PredictionRecord",
    "ReadResult",
    "input_hash",
    "json_lines",
    "read_records",
    "record_format",
]
