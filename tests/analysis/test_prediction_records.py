"""Prediction records: the schema, the JSON Lines format, fault counting and the format seam."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any, TextIO

import pytest

from airflow_canary.analysis.shadow.records import (
    FORMATS,
    Prediction,
    PredictionRecord,
    Row,
    RowError,
    input_hash,
    json_lines,
    read_records,
    record_format,
)
from airflow_canary.analysis.values import AnalysisError

GOOD = {
    "request_id": "r-1",
    "version": "v2",
    "time": "2026-12-01T10:00:00.125Z",
    "input_hash": input_hash([1.0, 2.5]),
    "prediction": {"class": "1", "scores": {"0": 0.25, "1": 0.75}},
}


def lines(*rows: Any) -> io.StringIO:
    return io.StringIO("\n".join(r if isinstance(r, str) else json.dumps(r) for r in rows) + "\n")


def test_a_record_round_trips_through_its_json_line() -> None:
    record = PredictionRecord(
        request_id="r-1",
        version="v2",
        time=datetime(2026, 12, 1, 10, 0, 0, 125000, tzinfo=timezone.utc),
        input_hash=input_hash([1.0, 2.5]),
        prediction=Prediction(class_="1", scores=(("0", 0.25), ("1", 0.75))),
        instance=3,
        mirrored=True,
    )
    line = record.to_json_line()
    assert json.loads(line) == {**GOOD, "instance": 3, "mirrored": True}
    (back,) = read_records(json_lines(io.StringIO(line)), "log").records
    assert back == record and back.key == ("r-1", 3)


def test_input_hash_is_the_same_for_the_same_features_however_written() -> None:
    assert input_hash([1, 2]) == input_hash([1.0, 2.0]) != input_hash([2.0, 1.0])
    assert input_hash([0.1]).startswith("sha256:") and len(input_hash([0.1])) == 71


def test_missing_fields_are_counted_per_field_with_the_first_line() -> None:
    no_hash = {k: v for k, v in GOOD.items() if k != "input_hash"}
    bare = {"request_id": "r-9"}
    result = read_records(json_lines(lines(GOOD, no_hash, "", GOOD, no_hash, bare)), "s3://b/log")
    assert len(result.records) == 2 and result.rows == 5  # the blank line is no row
    assert result.missing["input_hash"].count == 3
    assert result.missing["input_hash"].example == "s3://b/log:2"
    assert result.missing["version"].count == 1
    assert result.missing["version"].example == "s3://b/log:6"
    assert "request_id" not in result.missing
    text = result.describe_problems()
    assert "3 record(s) miss required field 'input_hash' (first at s3://b/log:2)" in text
    assert result.rejected == 3


@pytest.mark.parametrize(
    ("row", "reason", "detail"),
    [
        ("{not json", "are not records", "not JSON"),
        ("[1, 2]", "are not records", "not a JSON object but list"),
        ({**GOOD, "time": "yesterday"}, "time that is not RFC 3339", '"yesterday"'),
        ({**GOOD, "time": "2026-12-01T10:00:00"}, "time that is not RFC 3339", "10:00:00"),
        ({**GOOD, "prediction": {"label": 1}}, "without class, scores or value", "label"),
        ({**GOOD, "prediction": {"value": "high"}}, "value that is not a finite", "high"),
        ({**GOOD, "prediction": {"scores": {"a": None}}}, "scores that are not finite", "null"),
        ({**GOOD, "prediction": {"class": [1]}}, "class that is not a string", "[1]"),
        ({**GOOD, "request_id": 7}, "request_id that is not a string", "request_id=7"),
        ({**GOOD, "instance": -1}, "instance that is not an integer", "-1"),
        ({**GOOD, "mirrored": "yes"}, "mirrored that is not true/false", "yes"),
    ],
)
def test_a_row_of_the_wrong_kind_is_counted_with_why(row: Any, reason: str, detail: str) -> None:
    result = read_records(json_lines(lines(GOOD, row)), "log")
    assert len(result.records) == 1
    ((found, problem),) = result.invalid.items()
    assert reason in found and detail in problem.detail and problem.example == "log:2"
    assert problem.example in result.describe_problems()


def test_scores_as_a_list_are_keyed_by_class_index_and_values_are_floats() -> None:
    row = {**GOOD, "prediction": {"scores": [0.2, 0.8], "value": 3}}
    (record,) = read_records(json_lines(lines(row)), "log").records
    assert record.prediction.score_map() == {"0": 0.2, "1": 0.8}
    assert record.prediction.value == 3.0 and record.prediction.class_ is None


def test_another_format_is_one_function_from_a_stream_to_rows() -> None:
    # A CSV export "id,model,ts,hash,label" becomes records with no other change.
    def csv_rows(stream: TextIO) -> Iterator[Row]:
        for number, line in enumerate(stream, start=1):
            parts = line.strip().split(",")
            if len(parts) != 5:
                yield number, RowError(f"{len(parts)} columns, expected 5")
                continue
            rid, model, ts, digest, label = parts
            yield (
                number,
                {
                    "request_id": rid,
                    "version": model,
                    "time": ts,
                    "input_hash": digest,
                    "prediction": {"class": label},
                },
            )

    FORMATS["csv-test"] = csv_rows
    try:
        parse = record_format("csv-test")
        stream = io.StringIO("r-1,v1,2026-12-01T10:00:00Z,sha256:ab,cat\nbroken\n")
        result = read_records(parse(stream), "x.csv")
        assert [r.prediction.class_ for r in result.records] == ["cat"]
        assert result.invalid["are not records"].example == "x.csv:2"
    finally:
        del FORMATS["csv-test"]
    with pytest.raises(AnalysisError, match="format must be one of 'jsonl', got 'parquet'"):
        record_format("parquet")
