"""Prediction logs written for shadow analysis tests: JSON Lines records of the documented schema."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

from airflow_canary.analysis.shadow import Prediction, PredictionRecord, input_hash


def write_log(folder: Path, n: int, disagree_every: int | None) -> str:
    """``folder/predictions.jsonl``: ``n`` requests each answered by v1 and v2 (class 1; v2
    answers class 0 to every ``disagree_every``-th), plus one record missing required fields;
    returns the folder's ``file://`` URL."""
    # From now on: the analysis pairs only records from its own start (minus the pairing window).
    t0 = datetime.now(timezone.utc) + timedelta(minutes=5)
    lines = []
    for i in range(n):
        for version in ("v1", "v2"):
            wrong = version == "v2" and disagree_every and i % disagree_every == 0
            lines.append(
                PredictionRecord(
                    request_id=f"req-{i}",
                    version=version,
                    time=t0 + timedelta(milliseconds=7 * i + (2 if version == "v2" else 0)),
                    input_hash=input_hash([float(i)]),
                    prediction=Prediction(class_=0 if wrong else 1),
                ).to_json_line()
            )
    lines.append(json.dumps({"request_id": "req-x", "version": "v1"}))  # missing fields
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "predictions.jsonl").write_text("\n".join(lines) + "\n")
    return f"file://{folder}"
