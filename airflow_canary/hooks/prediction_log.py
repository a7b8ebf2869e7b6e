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
from typing import Any

from airflow_canary.analysis.shadow.records import ReadResult, read_records, record_format


class PredictionLogError(OSError):
    """A prediction log location that does not exist or cannot be read; the message names it."""


@dataclass
class LogCursor:
    """How far each log file has been read: per file path, the bytes of the whole lines read
    and how many lines they are (so later rows keep their true line numbers)."""

    positions: dict[str, tuple[int, int]] = field(default_factory=dict)


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
        stream.seek(start)
        data = stream.read(size - start)
    end = data.rfind(b"\n") + 1
    text = data[:end].decode(encoding)
    rows = ((number + lines, row) for number, row in parse(io.StringIO(text)))
    result = read_records(rows, key)
    cursor.positions[key] = (start + end, lines + text.count("\n"))
    return result
