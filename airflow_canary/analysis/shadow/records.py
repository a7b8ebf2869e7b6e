"""Prediction records: the schema of a prediction log, its JSON Lines format, and the format seam.

A prediction log holds one record per prediction a model version made (docs/prediction-logs.md):

    {"request_id": "3f2c...", "version": "v2", "time": "2026-12-01T10:00:00.125Z",
     "input_hash": "sha256:9b1d...", "prediction": {"class": "1", "scores": {"0": 0.1, "1": 0.9}},
     "instance": 0, "mirrored": true}

``request_id`` (the request's ``x-request-id``: a live request and its mirrored copy share it),
``version``, ``time`` (RFC 3339 with an offset), ``input_hash`` and ``prediction`` (with at least
one of ``class``, ``scores``, ``value``) are required; ``instance`` (the position within a batched
request, default 0) and ``mirrored`` (whether the model saw a mirrored copy) are optional.

Reading is two steps: a *format* turns a text stream into rows (line number, mapping or a
``RowError``), and ``read_records`` checks every row against the schema, keeping the records
and counting what is wrong (per missing field, with an example line). Another format, e.g. what
a KServe inference-logger sink stores, is one function from a stream to rows, registered in
``FORMATS``. Pure: no Airflow, no network.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, TextIO

from airflow_canary.analysis.values import AnalysisError
from airflow_canary.timestamps import parse_timestamp

#: The fields every record needs, in the order the schema lists them.
REQUIRED_FIELDS = ("request_id", "version", "time", "input_hash", "prediction")
#: What a prediction may hold; a record needs at least one of them.
PREDICTION_FIELDS = ("class", "scores", "value")

ClassLabel = str | int


@dataclass(frozen=True)
class Prediction:
    """What a model answered for one instance: a class, scores per class, and/or a value.

    ``class_`` is the predicted class label (a string or an integer), ``scores`` the score or
    probability per class label (labels as strings, as JSON object keys are), ``value`` a
    regression output. At least one is set.
    """

    class_: ClassLabel | None = None
    scores: tuple[tuple[str, float], ...] | None = None
    value: float | None = None

    def score_map(self) -> dict[str, float]:
        return dict(self.scores or ())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.class_ is not None:
            out["class"] = self.class_
        if self.scores is not None:
            out["scores"] = dict(self.scores)
        if self.value is not None:
            out["value"] = self.value
        return out


@dataclass(frozen=True)
class PredictionRecord:
    """One prediction of one model version for one instance of one request."""

    request_id: str
    version: str
    time: datetime
    input_hash: str
    prediction: Prediction
    instance: int = 0
    mirrored: bool = False

    @property
    def key(self) -> tuple[str, int]:
        """What pairs a stable record with a canary record: the request id and the instance."""
        return (self.request_id, self.instance)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "request_id": self.request_id,
            "version": self.version,
            "time": format_time(self.time),
            "input_hash": self.input_hash,
            "prediction": self.prediction.to_dict(),
        }
        if self.instance:
            out["instance"] = self.instance
        if self.mirrored:
            out["mirrored"] = True
        return out

    def to_json_line(self) -> str:
        """The record as one line of JSON Lines (no trailing newline)."""
        return json.dumps(self.to_dict(), separators=(",", ":"), allow_nan=False)


def format_time(moment: datetime) -> str:
    """RFC 3339 in UTC with milliseconds and ``Z``: ``2026-12-01T10:00:00.125Z``."""
    if moment.tzinfo is None:
        raise AnalysisError(f"prediction time must carry a timezone, got {moment!r}")
    return moment.astimezone(timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def input_hash(features: Sequence[float]) -> str:
    """``sha256:<hex>`` of an instance's features as compact JSON (floats as Python prints them).

    Both versions hash the instance they were given the same way, so a pair whose hashes
    differ did not see the same input.
    """
    canonical = json.dumps([float(v) for v in features], separators=(",", ":"))
    return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()


# -- reading -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    """A row a format could not turn into a mapping (not JSON, not an object)."""

    message: str


Row = tuple[int, "Mapping[str, Any] | RowError"]
#: A format: a text stream to rows (1-based line or row number, the row or why it is not one).
RecordFormat = Callable[[TextIO], Iterator[Row]]


def json_lines(stream: TextIO) -> Iterator[Row]:
    """JSON Lines: one JSON object per line; blank lines are skipped."""
    for number, line in enumerate(stream, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield number, RowError(f"not JSON: {exc.msg} at column {exc.colno}")
            continue
        if not isinstance(row, dict):
            yield number, RowError(f"not a JSON object but {type(row).__name__}")
            continue
        yield number, row


#: The formats a prediction log may be stored in, by name.
FORMATS: dict[str, RecordFormat] = {"jsonl": json_lines}


def record_format(name: object) -> RecordFormat:
    """The format called ``name``; AnalysisError listing the known ones."""
    if isinstance(name, str) and name in FORMATS:
        return FORMATS[name]
    raise AnalysisError(
        f"prediction log format must be one of {', '.join(map(repr, FORMATS))}, got {name!r}"
    )


@dataclass
class Problem:
    """One kind of fault in a log: how many rows have it and where the first one is."""

    count: int
    example: str  # "<source>:<line>"
    detail: str = ""


@dataclass
class ReadResult:
    """The records read from a log, and every row that could not be used, counted.

    ``missing`` maps a required field to the rows without it; ``invalid`` maps a reason (not
    JSON, a wrong type) to the rows with it. ``rows`` counts every non-blank row read.
    """

    records: list[PredictionRecord] = field(default_factory=list)
    rows: int = 0
    missing: dict[str, Problem] = field(default_factory=dict)
    invalid: dict[str, Problem] = field(default_factory=dict)
    sources: list[str] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        return self.rows - len(self.records)

    def extend(self, other: ReadResult) -> None:
        self.records += other.records
        self.rows += other.rows
        self.sources += [source for source in other.sources if source not in self.sources]
        for mine, theirs in ((self.missing, other.missing), (self.invalid, other.invalid)):
            for key, problem in theirs.items():
                if key in mine:
                    mine[key].count += problem.count
                else:
                    mine[key] = Problem(problem.count, problem.example, problem.detail)

    def describe_problems(self) -> str:
        """One sentence per kind of fault, e.g. ``12 records miss 'input_hash' (first at
        log.jsonl:7)``; empty when every row was a record."""
        parts = [
            f"{p.count} record(s) miss required field {name!r} (first at {p.example})"
            for name, p in self.missing.items()
        ]
        parts += [
            f"{p.count} row(s) {reason} (first at {p.example}{': ' + p.detail if p.detail else ''})"
            for reason, p in self.invalid.items()
        ]
        return "; ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {
            "sources": list(self.sources),
            "rows": self.rows,
            "records": len(self.records),
            "missing": {
                k: {"count": p.count, "example": p.example} for k, p in self.missing.items()
            },
            "invalid": {
                k: {"count": p.count, "example": p.example, "detail": p.detail}
                for k, p in self.invalid.items()
            },
        }


class InvalidRecord(ValueError):
    """A row that has every required field but a value of the wrong kind."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def read_records(rows: Iterable[Row], source: str) -> ReadResult:
    """Check every row against the schema; records in order, faults counted with an example.

    A row missing several required fields counts once under each. ``source`` names the log
    (a path or URL) in the examples.
    """
    result = ReadResult(sources=[source])
    for number, row in rows:
        result.rows += 1
        where = f"{source}:{number}"
        if isinstance(row, RowError):
            _note(result.invalid, "are not records", where, row.message)
            continue
        absent = [name for name in REQUIRED_FIELDS if row.get(name) in (None, "")]
        if absent:
            for name in absent:
                _note(result.missing, name, where)
            continue
        try:
            result.records.append(record_from_mapping(row))
        except InvalidRecord as exc:
            _note(result.invalid, exc.reason, where, exc.detail)
    return result


def _note(problems: dict[str, Problem], key: str, where: str, detail: str = "") -> None:
    if key in problems:
        problems[key].count += 1
    else:
        problems[key] = Problem(1, where, detail)


def record_from_mapping(row: Mapping[str, Any]) -> PredictionRecord:
    """A PredictionRecord from a row with every required field; InvalidRecord naming a bad one."""
    for name in ("request_id", "version", "input_hash"):
        if not isinstance(row[name], str):
            raise InvalidRecord(
                f"have a {name} that is not a string", f"{name}={json.dumps(row[name])[:60]}"
            )
    moment = _time(row["time"])
    prediction = _prediction(row["prediction"])
    instance = row.get("instance", 0)
    if isinstance(instance, bool) or not isinstance(instance, int) or instance < 0:
        raise InvalidRecord(
            "have an instance that is not an integer >= 0", f"instance={json.dumps(instance)}"
        )
    mirrored = row.get("mirrored", False)
    if not isinstance(mirrored, bool):
        raise InvalidRecord("have a mirrored that is not true/false", f"mirrored={mirrored!r}")
    return PredictionRecord(
        request_id=row["request_id"],
        version=row["version"],
        time=moment,
        input_hash=row["input_hash"],
        prediction=prediction,
        instance=instance,
        mirrored=mirrored,
    )


def _time(raw: Any) -> datetime:
    if isinstance(raw, str):
        try:
            moment = parse_timestamp(raw)
        except ValueError:
            moment = None
        if moment is not None and moment.tzinfo is not None:
            return moment
    raise InvalidRecord(
        "have a time that is not RFC 3339 with an offset",
        f'time={json.dumps(raw)[:60]} (expected e.g. "2026-12-01T10:00:00.125Z")',
    )


def _finite(raw: Any) -> bool:
    return isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw)


def _prediction(raw: Any) -> Prediction:
    if not isinstance(raw, Mapping) or not any(raw.get(k) is not None for k in PREDICTION_FIELDS):
        raise InvalidRecord(
            "have a prediction without class, scores or value",
            f"prediction={json.dumps(raw)[:80]}",
        )
    class_ = raw.get("class")
    if class_ is not None and (isinstance(class_, bool) or not isinstance(class_, (str, int))):
        raise InvalidRecord(
            "have a class that is not a string or integer", f"class={json.dumps(class_)[:60]}"
        )
    scores_raw = raw.get("scores")
    scores: tuple[tuple[str, float], ...] | None = None
    if scores_raw is not None:
        if isinstance(scores_raw, list):
            scores_raw = {str(i): v for i, v in enumerate(scores_raw)}
        if not isinstance(scores_raw, Mapping) or not all(_finite(v) for v in scores_raw.values()):
            raise InvalidRecord(
                "have scores that are not finite numbers per class",
                f"scores={json.dumps(scores_raw)[:80]}",
            )
        scores = tuple((str(k), float(v)) for k, v in scores_raw.items())
    value = raw.get("value")
    if value is not None and not _finite(value):
        raise InvalidRecord("have a value that is not a finite number", f"value={value!r}")
    return Prediction(class_=class_, scores=scores, value=None if value is None else float(value))
