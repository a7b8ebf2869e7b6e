"""Values the analysis exchanges with its driver: arms, queries, samples, statuses and errors."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Literal, TypeAlias

from airflow_canary import names


class AnalysisError(ValueError):
    """A check, judge or analysis the product cannot run; the message names the bad value."""


class Status(str, Enum):
    """The outcome of one check or of a whole analysis."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"


def require_label_value(what: str, value: object) -> str:
    """Return ``value`` if Kubernetes would accept it as a label value, else raise."""
    return names.label_value(what, value, AnalysisError)


def require_namespace(value: object) -> str:
    """Return ``value`` if it is a valid Kubernetes namespace name, else raise."""
    return names.namespace_name("namespace", value, AnalysisError)


@dataclass(frozen=True)
class Arms:
    """The two versions an analysis compares, and the namespace their workloads run in."""

    namespace: str
    stable_version: str = "v1"
    canary_version: str = "v2"

    def __post_init__(self) -> None:
        require_namespace(self.namespace)
        require_label_value("stable_version", self.stable_version)
        require_label_value("canary_version", self.canary_version)
        if self.stable_version == self.canary_version:
            raise AnalysisError(
                f"stable_version and canary_version must differ, both are {self.stable_version!r}"
            )

    def version(self, arm: Arm) -> str:
        return self.canary_version if arm is Arm.CANARY else self.stable_version

    def to_dict(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "stable_version": self.stable_version,
            "canary_version": self.canary_version,
        }


class Arm(str, Enum):
    """One side of the comparison."""

    CANARY = "canary"
    STABLE = "stable"


@dataclass(frozen=True)
class Query:
    """One PromQL query the driver runs for a poll.

    An instant query is evaluated at the poll's time and its sample is one number. A vector
    query is an instant query whose series differ in the label ``by`` (e.g. ``le`` of a
    histogram); its sample maps each value of that label to its number. A range query covers
    the last ``range_seconds`` at ``step_seconds`` resolution and its sample is the list of
    values.
    """

    id: str
    promql: str
    kind: Literal["instant", "range", "vector"] = "instant"
    step_seconds: float | None = None
    range_seconds: float | None = None
    by: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in ("instant", "range", "vector"):
            raise AnalysisError(
                f"query kind must be 'instant', 'range' or 'vector', got {self.kind!r}"
            )
        if self.kind == "vector" and not self.by:
            raise AnalysisError(f"vector query {self.id!r} needs the label it is keyed by")
        if self.kind == "range" and (not self.step_seconds or not self.range_seconds):
            raise AnalysisError(
                f"range query {self.id!r} needs positive step_seconds and range_seconds, "
                f"got {self.step_seconds!r} and {self.range_seconds!r}"
            )


@dataclass(frozen=True)
class QueryFailure:
    """A query Prometheus did not answer (HTTP error, timeout, bad PromQL).

    ``permanent``: asking again cannot help (Prometheus rejected the PromQL itself), so the
    step fails at once instead of after ``max_inconclusive_polls``.
    """

    message: str
    permanent: bool = False


Sample: TypeAlias = "float | None | list[float] | dict[str, float] | QueryFailure"


def query_failures(
    query_ids: Iterable[str], samples: Mapping[str, object]
) -> tuple[list[str], list[str]]:
    """What went wrong with a poll's queries: (every failure, the permanent ones), as
    ``"<query id>: <message>"`` (``"no sample for query <id>"`` for a query not answered)."""
    failures: list[str] = []
    rejected: list[str] = []
    for qid in query_ids:
        sample = samples.get(qid)
        if qid not in samples:
            failures.append(f"no sample for query {qid}")
        elif isinstance(sample, QueryFailure):
            failures.append(f"{qid}: {sample.message}")
            if sample.permanent:
                rejected.append(f"{qid}: {sample.message}")
    return failures, rejected


def require_max_inconclusive_polls(value: object) -> int:
    """``max_inconclusive_polls``: failed Prometheus polls in a row that end an analysis FAIL,
    a whole number >= 1; AnalysisError naming the value otherwise."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise AnalysisError(f"max_inconclusive_polls must be an integer >= 1, got {value!r}")
    return value
