"""Reading prediction logs through Airflow's ObjectStoragePath (``file://`` here; any store it reads)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from airflow_canary.hooks.prediction_log import PredictionLogError, read_prediction_log
from tests.analysis.test_prediction_records import GOOD


def test_a_folder_is_read_recursively_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / "a.jsonl").write_text(json.dumps({**GOOD, "request_id": "first"}) + "\n")
    (tmp_path / "b" / "c.jsonl").write_text(
        json.dumps({**GOOD, "request_id": "second"}) + "\n" + json.dumps({"request_id": "x"})
    )
    result = read_prediction_log(f"file://{tmp_path}")
    assert [r.request_id for r in result.records] == ["first", "second"]
    assert len(result.sources) == 2
    assert result.missing["version"].example.endswith("b/c.jsonl:2")
    single = read_prediction_log(f"file://{tmp_path}/a.jsonl")
    assert [r.request_id for r in single.records] == ["first"]


def test_a_location_that_does_not_exist_is_an_error_naming_it(tmp_path: Path) -> None:
    missing = f"file://{tmp_path}/nowhere"
    with pytest.raises(PredictionLogError, match=f"location '{missing}' does not exist"):
        read_prediction_log(missing)
    with pytest.raises(PredictionLogError, match="non-empty URL, got ''"):
        read_prediction_log("")


def test_an_unreadable_log_is_an_error_naming_the_location_and_the_cause(tmp_path: Path) -> None:
    (tmp_path / "log.jsonl").write_bytes(b"\xff\xfe not utf-8\n")
    with pytest.raises(
        PredictionLogError, match="cannot read prediction log location .*UnicodeDecodeError"
    ):
        read_prediction_log(f"file://{tmp_path}/log.jsonl")


def test_a_cursor_reads_each_whole_line_once_and_keeps_line_numbers(tmp_path: Path) -> None:
    from airflow_canary.hooks.prediction_log import LogCursor

    log = tmp_path / "v1.jsonl"
    lines = [json.dumps({**GOOD, "request_id": f"r{i}"}) for i in range(4)]
    # the third line is still being written: no newline yet
    log.write_text(lines[0] + "\n" + lines[1] + "\n" + lines[2][:20])
    cursor = LogCursor()
    first = read_prediction_log(f"file://{log}", cursor=cursor)
    assert [r.request_id for r in first.records] == ["r0", "r1"] and first.rows == 2
    with log.open("a") as stream:
        stream.write(lines[2][20:] + "\n" + json.dumps({"request_id": "r3"}) + "\n")
    second = read_prediction_log(f"file://{log}", cursor=cursor)
    assert [r.request_id for r in second.records] == ["r2"]
    assert second.missing["version"].example.endswith("v1.jsonl:4")  # the file's own line
    assert read_prediction_log(f"file://{log}", cursor=cursor).rows == 0  # nothing new
    log.write_text(lines[3] + "\n")  # replaced by a shorter file: read from its start
    third = read_prediction_log(f"file://{log}", cursor=cursor)
    assert [r.request_id for r in third.records] == ["r3"]


def test_a_first_read_skips_unparsed_what_the_log_held_long_before_the_phase(
    tmp_path: Path,
) -> None:
    from datetime import datetime, timedelta, timezone

    from airflow_canary.hooks.prediction_log import SKIP_SLACK, LogCursor

    t0 = datetime(2026, 12, 1, 3, 0, tzinfo=timezone.utc)
    log = tmp_path / "v1.jsonl"
    # 3,000 records, one a second (about 600 KB): the phase starts at the 2,500th
    log.write_text(
        "".join(
            json.dumps(
                {**GOOD, "request_id": f"r{i}", "time": (t0 + timedelta(seconds=i)).isoformat()}
            )
            + "\n"
            for i in range(3000)
        )
    )
    since = t0 + timedelta(seconds=2500)
    cursor = LogCursor(skip_before=since)
    result = read_prediction_log(f"file://{log}", cursor=cursor)
    read = [r.request_id for r in result.records]
    # every record of the phase, and at most the slack and one bisection probe before it
    assert read[-500:] == [f"r{i}" for i in range(2500, 3000)]
    assert cursor.skipped + len(read) == 3000
    assert (
        2500 - SKIP_SLACK.total_seconds() - 400
        < cursor.skipped
        <= 2500 - SKIP_SLACK.total_seconds()
    )
    # lines keep their numbers: a fault appended now is reported at line 3,001
    with log.open("a") as stream:
        stream.write(json.dumps({"request_id": "late"}) + "\n")
    late = read_prediction_log(f"file://{log}", cursor=cursor)
    assert late.missing["version"].example.endswith("v1.jsonl:3001")
    # a log that starts after the phase began is read from its first line
    fresh = LogCursor(skip_before=t0)
    assert len(read_prediction_log(f"file://{log}", cursor=fresh).records) == 3000
    assert fresh.skipped == 0
