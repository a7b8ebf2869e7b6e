"""Read prediction logs from any location Airflow's object storage reads: ``file://``, ``s3://``, ``gs://``, ...

A location is one log file or a folder of them (every file below it, in name order). The records
and the faults in them come back as a ``ReadResult`` (airflow_canary.analysis.shadow.records);
credentials for remote stores come from the Airflow connection ``conn_id``, as for any
``ObjectStoragePath``.
"""

from __future__ import annotations

from typing import Any

from airflow_canary.analysis.shadow.records import ReadResult, read_records, record_format


class PredictionLogError(OSError):
    """A prediction log location that does not exist or cannot be read; the message names it."""


def read_prediction_log(
    location: str, *, conn_id: str | None = None, format: str = "jsonl", encoding: str = "utf-8"
) -> ReadResult:
    """Every record under ``location`` (a file, or a folder read recursively in name order).

    :param location: a URL ``ObjectStoragePath`` understands, e.g. ``file:///var/log/pred``,
        ``s3://bucket/shadow/v2/``
    :param conn_id: the Airflow connection holding the store's credentials (None: the
        store's default)
    :param format: a name from ``airflow_canary.analysis.shadow.records.FORMATS``
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
            with path.open("r", encoding=encoding) as stream:
                result.extend(read_records(parse(stream), str(path)))
    except PredictionLogError:
        raise
    except (OSError, ValueError) as exc:
        raise PredictionLogError(
            f"cannot read prediction log location {location!r}: {type(exc).__name__}: {exc}"
        ) from exc
    return result
