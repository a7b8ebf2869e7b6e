"""Read prediction logs from any location Airflow's object storage reads: ``file://``, ``s3://``, ``gs://``, ...

A location is one log file or a folder of them (every file below it, in name order). The records
and the faults in them come back as a ``ReadResult`` (airflow_canary.analysis.shadow.records);
credentials for remote stores come from the Airflow connection ``conn_id``, as for any
``ObjectStoragePath``. A ``LogCursor`` makes reads incremental: each read returns only what
was appended since the last one, so a phase polling a growing log parses every line once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from airflow_canary.analysis.shadow.records import (
    InvalidRecord,
    ReadResult,
    read_records,
    record_format,
    record_from_mapping,
)

#: Writers (a version's replicas) interleave their lines a little out of time order, so a
#: first read that skips old lines starts this long before ``LogCursor.skip_before``.
SKIP_SLACK = timedelta(seconds=60)
#: Bytes read to find one line's time while searching a log for where to start.
_PROBE_BYTES = 65536


class PredictionLogError(OSError):
    """A prediction log location that does not exist or cannot be read; the message names it."""


@dataclass
class LogCursor:
    """How far each log file has been read: per file path, the bytes of the whole lines read
    and how many lines they are (so later rows keep their true line numbers).

    With ``skip_before`` (timezone-aware), the first read of a file starts at a line written
    at least ``SKIP_SLACK`` before it, found by bisecting the file on its lines' times (logs
    are appended in time order); the lines before are counted in ``skipped``, not parsed.
    A line whose time cannot be read stops the search there.
    """

    positions: dict[str, tuple[int, int]] = field(default_factory=dict)
    skip_before: datetime | None = None
    skipped: int = 0


def read_prediction_log(
    location: str,
    *,
    conn_id: str | None = None,
    format: str = "jsonl",
    encoding: str = "utf-8",
    cursor: LogCursor | None = None,
) -> ReadResult:
    """Every record under ``location`` (a file, or a folder read recursively in name order).

    With ``cursor``, only the whole lines appended to each file since the cursor last read it
    (a last line without its newline, perhaps still being written, waits for the next read; a
    file shorter than before was replaced and is read from its start); the cursor advances.

    :param location: a URL ``ObjectStoragePath`` understands, e.g. ``file:///var/log/pred``,
        ``s3://bucket/shadow/v2/``
    :param conn_id: the Airflow connection holding the store's credentials (None: the
        store's default)
    :param format: a name from ``airflow_canary.analysis.shadow.records.FORMATS``
    :param cursor: where the previous read of this location stopped, or None to read it all
    :raises PredictionLogError: naming the location when it does not exist or cannot be read
    :raises AnalysisError: for an unknown ``format``
    """
    from airflow.sdk import ObjectStoragePath  # when a task runs, not when a DAG is parsed

    parse = record_format(format)
    if not isinstance(location, str) or not location.strip():
        raise PredictionLogError(
            f"prediction log location must be a non-empty URL, got {location!r}"
        )
    try:
        root: Any = ObjectStoragePath(location, conn_id=conn_id)
        if not root.exists():
            raise PredictionLogError(f"prediction log location {location!r} does not exist")
        files = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        result = ReadResult(sources=[])
        for path in files:
            if cursor is None:
                with path.open("r", encoding=encoding) as stream:
                    result.extend(read_records(parse(stream), str(path)))
            else:
                result.extend(_read_appended(path, cursor, parse, encoding))
    except PredictionLogError:
        raise
    except (OSError, ValueError) as exc:
        raise PredictionLogError(
            f"cannot read prediction log location {location!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return result


def _read_appended(path: Any, cursor: LogCursor, parse: Any, encoding: str) -> ReadResult:
    """The records in the whole lines of ``path`` after the cursor's position; advances it."""
    key = str(path)
    start, lines = cursor.positions.get(key, (0, 0))
    with path.open("rb") as stream:
        size = stream.seek(0, io.SEEK_END)
        if size < start:  # replaced by a shorter file: read it anew
            start, lines = 0, 0
        if key not in cursor.positions and cursor.skip_before is not None:
            start = _line_start_before(
                stream, size, cursor.skip_before - SKIP_SLACK, parse, encoding
            )
            lines = _count_lines(stream, start)
            cursor.skipped += lines
        stream.seek(start)
        data = stream.read(size - start)
    end = data.rfind(b"\n") + 1
    text = data[:end].decode(encoding)
    rows = ((number + lines, row) for number, row in parse(io.StringIO(text)))
    result = read_records(rows, key)
    cursor.positions[key] = (start + end, lines + text.count("\n"))
    return result


def _line_start_before(stream: Any, size: int, moment: datetime, parse: Any, encoding: str) -> int:
    """The start of a line written before ``moment`` with no later line before it: bisect the
    file on its lines' times; 0 when the file starts after ``moment`` or a time is unreadable."""
    low, high = 0, size  # the line at ``low`` is from before ``moment`` (or ``low`` is 0)
    while high - low > _PROBE_BYTES:
        middle = (low + high) // 2
        stream.seek(middle)
        chunk = stream.read(_PROBE_BYTES)
        begin = chunk.find(b"\n") + 1
        end = chunk.find(b"\n", begin)
        if begin == 0 or end < 0:
            break  # a line longer than the probe: stop narrowing
        written = _line_time(chunk[begin:end], parse, encoding)
        if written is None:
            break
        if written < moment:
            low = middle + begin
        else:
            high = middle
    return low


def _line_time(line: bytes, parse: Any, encoding: str) -> datetime | None:
    try:
        rows = list(parse(io.StringIO(line.decode(encoding, errors="replace"))))
        row = rows[0][1] if rows else None
        return record_from_mapping(row).time if isinstance(row, dict) else None
    except (InvalidRecord, KeyError, TypeError, ValueError):
        return None


def _count_lines(stream: Any, end: int) -> int:
    """How many lines the first ``end`` bytes hold (``end`` is a line start)."""
    stream.seek(0)
    count, left = 0, end
    while left > 0:
        chunk = stream.read(min(left, 1 << 20))
        if not chunk:
            break
        count += chunk.count(b"\n")
        left -= len(chunk)
    return count
