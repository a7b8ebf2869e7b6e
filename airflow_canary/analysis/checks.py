"""Health checks: what to measure on each arm, the PromQL that measures it, and its limits.

Counters are read raw and cumulative (``sum(istio_requests_total{...})``) at every poll; the
analysis subtracts the reading taken at the first poll of the step. That difference is
exact, needs no range window (``increase()`` extrapolates to the window edges and
under-counts series born inside the window), and gives both arms the very same interval.
Quantiles and the prediction-drift index are computed by Prometheus over the window since
the step started, because they need whole histograms or label vectors.
"""

from __future__ import annotations

import json
import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from airflow_canary.analysis.promql import (
    ISTIO_DURATION_BUCKETS_MS,
    bucket_bound,
    duration,
    render_template,
    require_label_name,
    selector,
    template_placeholders,
)
from airflow_canary.analysis.values import AnalysisError, Arm, Arms
from airflow_canary.parameters import flag, is_finite_number

REQUESTS = "istio_requests_total"
DURATION = "istio_request_duration_milliseconds"
CANARY_TOTAL, STABLE_TOTAL = "canary.total", "stable.total"
CANARY_BAD, STABLE_BAD = "canary.bad", "stable.bad"
CANARY_VALUE, STABLE_VALUE = "canary.value", "stable.value"
CANARY_SERIES, STABLE_SERIES = "canary.series", "stable.series"


def role(arm: Arm, what: str) -> str:
    return f"{arm.value}.{what}"


@dataclass(frozen=True)
class ProportionLimits:
    """Limits on the share of bad events (errors, slow requests, wrong predictions)."""

    max_rate: float | None = None
    max_increase: float | None = None
    max_ratio: float | None = None


def _fraction(check: str, what: str, value: float | None, *, allow_one: bool = True) -> None:
    if value is None:
        return
    if not _is_number(value) or not 0 <= value <= 1 or (not allow_one and value == 1):
        raise AnalysisError(f"{check}: {what} must be a fraction between 0 and 1, got {value!r}")


def _ratio(check: str, what: str, value: float | None) -> None:
    if value is None:
        return
    if not is_finite_number(value) or value < 1:
        raise AnalysisError(
            f"{check}: {what} must be a number >= 1 (canary / stable), got {value!r}"
        )


def _proportion_limits(
    check: str, max_rate: float | None, max_increase: float | None, max_ratio: float | None
) -> None:
    """Validate a proportion check's limits: each well-formed, at least one given."""
    _fraction(check, "max_rate", max_rate)
    _fraction(check, "max_increase", max_increase)
    _ratio(check, "max_ratio", max_ratio)
    if max_rate is None and max_increase is None and max_ratio is None:
        raise AnalysisError(
            f"{check}: give at least one limit: max_rate (e.g. 0.01), "
            "max_increase (e.g. 0.005) or max_ratio (e.g. 1.5)"
        )


def positive_number(check: str, what: str, value: object) -> float | None:
    """``value`` as a float when it is a finite number above 0; None stays None (no limit).

    :raises AnalysisError: naming the check, the field and the value otherwise
    """
    if value is None:
        return None
    if not is_finite_number(value) or float(value) <= 0:  # type: ignore[arg-type]
        raise AnalysisError(f"{check}: {what} must be a positive number, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _count(check: str, what: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise AnalysisError(f"{check}: {what} must be an integer >= 0, got {value!r}")


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


#: The longest check name: names label the verdict's rows, the XCom record and log lines.
MAX_NAME_LENGTH = 63


def require_check_name(value: object) -> None:
    """Raise AnalysisError unless ``value`` can name a check (also the shadow checks)."""
    if (
        not isinstance(value, str)
        or not value.strip()
        or value != value.strip()
        or len(value) > MAX_NAME_LENGTH
        or "/" in value
        or any(not c.isprintable() for c in value)
    ):
        raise AnalysisError(
            f"check name must be a non-empty string of at most {MAX_NAME_LENGTH} printable "
            f"characters, without '/' or surrounding spaces, got {value!r}"
        )


class Check(ABC):
    """A health check: a name, queries for both arms, and limits.

    ``higher_is_worse`` tells judges which direction of a difference is a regression; a
    canary better than stable always passes.
    """

    type_name: ClassVar[str]
    name: str
    higher_is_worse: ClassVar[bool] = True

    @property
    @abstractmethod
    def min_requests(self) -> int:
        """Events each arm needs before the check can pass."""

    @abstractmethod
    def counters(self, arms: Arms) -> dict[str, str]:
        """Cumulative counters by role: ``canary.total``/``stable.total`` (traffic) and,
        for proportion checks, ``canary.bad``/``stable.bad``."""

    def values(self, arms: Arms, window_seconds: float) -> dict[str, str]:
        """Instant queries over the last ``window_seconds``: ``canary.value``/``stable.value``."""
        return {}

    def buckets(self, arms: Arms) -> dict[str, str]:
        """Cumulative histogram buckets by role (``canary.buckets``), ``sum by (le)``."""
        return {}

    @property
    def is_count(self) -> bool:
        """Whether the check is judged on counts of events (bad among all), poll by poll."""
        return self.proportion is not None

    def series(self, arms: Arms, step_seconds: float) -> dict[str, str]:
        """Per-step queries for range evaluation: ``canary.series``/``stable.series``."""
        return {}

    @property
    def proportion(self) -> ProportionLimits | None:
        """Limits on the bad share when the check is a proportion (bad / total)."""
        return None

    def value_violations(self, canary: float | None, stable: float | None) -> list[str]:
        """Sentences naming each fixed limit on the measured values that the canary breaks."""
        return []

    def describe(self) -> str:
        """What the check measures, for messages."""
        return self.name

    def format_value(self, value: float | None) -> str:
        if value is None:
            return "no data"
        return f"{value:.4g}"

    def format_rate(self, value: float | None) -> str:
        """A share of events as a percentage, for proportion checks."""
        return _format_rate(value)

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type_name}
        for field in fields(self):  # type: ignore[arg-type]
            value = getattr(self, field.name)
            data[field.name] = list(value) if isinstance(value, tuple) else value
        return data


#: Which Istio proxy's report a check counts. ``destination``: the serving pod's sidecar,
#: once per attempt (a request retried twice counts three times). ``source``: the caller's
#: sidecar or gateway, once per client request with its final status and total duration,
#: including the 503s the caller's proxy answered itself. ``auto``: source where the arm has
#: source-reported series, else destination (callers outside the mesh, ambient waypoints).
REPORTERS: tuple[str, ...] = ("auto", "source", "destination")


def _reporter(check: str, value: object) -> None:
    if value not in REPORTERS:
        raise AnalysisError(
            f"{check}: reporter must be one of {', '.join(REPORTERS)} (Istio's reporter "
            f"label: the caller's proxy or the serving pod's), got {value!r}"
        )


def _traffic_selector(
    arms: Arms,
    arm: Arm,
    metric: str = REQUESTS,
    extra: str = "",
    reporter: str = "destination",
) -> str:
    return selector(
        metric,
        {
            "reporter": reporter,
            "destination_workload_namespace": arms.namespace,
            "destination_version": arms.version(arm),
        },
        extra,
    )


def _by_reporter(reporter: str, expression: Any, guard: Any) -> str:
    """``expression(r)`` for the check's reporter; for ``auto``, the source-reported one when
    ``guard("source")`` has data, else the destination-reported one.

    ``a or on() b`` is ``a`` when it has any sample and ``b`` otherwise; ``a and on() g`` is
    ``a`` only while ``g`` has a sample (PromQL's set operators with an empty label match).
    Both arms of a comparison go through the same rule, so each counts client requests once
    when callers report them.
    """
    if reporter != "auto":
        return expression(reporter)
    return (
        f"(({expression('source')}) and on() ({guard('source')})) "
        f"or on() ({expression('destination')})"
    )


def _format_rate(value: float | None) -> str:
    if value is None:
        return "no data"
    percent = value * 100
    return f"{percent:.1f}%" if percent >= 0.1 or percent == 0 else f"{percent:.3f}%"


#: gRPC status codes that count as server errors: those gRPC's HTTP mapping sends to 5xx
#: (UNKNOWN 2, DEADLINE_EXCEEDED 4, UNIMPLEMENTED 12, INTERNAL 13, UNAVAILABLE 14,
#: DATA_LOSS 15; google.rpc.Code in googleapis/google/rpc/code.proto). Client errors such as
#: INVALID_ARGUMENT or NOT_FOUND are the caller's fault, like a 4xx.
GRPC_SERVER_ERROR_CODES: tuple[int, ...] = (2, 4, 12, 13, 14, 15)

#: Envoy response flags of a proxy that answered the caller itself because no upstream
#: could serve: UH no healthy upstream, UF upstream connection failure, URX retry limit
#: exceeded (Envoy access-log docs, "response flags").
PROXY_UNREACHABLE_FLAGS: tuple[str, ...] = ("UH", "UF", "URX")


def _unreachable_selector(arms: Arms) -> str:
    """5xx that callers' sidecars answered themselves for services in the arms' namespace.

    When every canary pod is down, only ``reporter="source"`` sees these requests, and its
    destination workload labels are "unknown" (istio/istio#28387); the service name
    ``<name>.<namespace>.svc.<domain>`` still says where they were headed.
    """
    namespace = arms.namespace  # an RFC 1123 label: nothing to escape in a regex
    flags = "|".join(PROXY_UNREACHABLE_FLAGS)
    return selector(
        REQUESTS,
        {"reporter": "source"},
        f'destination_service=~"[^.]+\\\\.{namespace}\\\\.svc(\\\\..+)?",'
        f'response_code=~"5..",response_flags=~"(.*,)?({flags})(,.*)?"',
    )


@dataclass(frozen=True)
class ErrorRateCheck(Check):
    """Share of requests that failed, from Istio's request counter.

    A request failed when its HTTP status is 5xx, or when it is a gRPC call whose
    ``grpc_response_status`` is one of ``grpc_error_codes`` (gRPC failures travel as HTTP
    200 with the status in a trailer). ``grpc_error_codes=()`` counts HTTP 5xx only.

    ``reporter`` (one of ``REPORTERS``, default ``auto``) picks whose report is counted: the
    callers' (``source``: each client request once, after Istio's retries, including the
    503s a caller's proxy answered itself) or the serving pods' (``destination``: every
    attempt, so a retried failure counts up to three times); ``auto`` takes the callers'
    wherever they report, which they do whenever Istio's routing (done by the caller's
    proxy) split the traffic.
    """

    type_name: ClassVar[str] = "error_rate"
    max_rate: float | None = None
    max_increase: float | None = None
    max_ratio: float | None = None
    min_requests: int = 100  # type: ignore[assignment]
    name: str = "error-rate"
    grpc_error_codes: tuple[int, ...] = GRPC_SERVER_ERROR_CODES
    reporter: str = "auto"

    def __post_init__(self) -> None:
        require_check_name(self.name)
        _reporter(self.name, self.reporter)
        if isinstance(self.grpc_error_codes, list):
            object.__setattr__(self, "grpc_error_codes", tuple(self.grpc_error_codes))
        if not isinstance(self.grpc_error_codes, tuple) or any(
            not isinstance(c, int) or isinstance(c, bool) or not 1 <= c <= 16
            for c in self.grpc_error_codes
        ):
            raise AnalysisError(
                f"{self.name}: grpc_error_codes must be gRPC status codes 1..16 (0 is OK), "
                f"got {self.grpc_error_codes!r}"
            )
        _proportion_limits(self.name, self.max_rate, self.max_increase, self.max_ratio)
        _count(self.name, "min_requests", self.min_requests)

    def _error_selectors(self, arms: Arms, arm: Arm, reporter: str) -> list[str]:
        out = [_traffic_selector(arms, arm, extra='response_code=~"5.."', reporter=reporter)]
        if self.grpc_error_codes:
            codes = "|".join(str(c) for c in sorted(set(self.grpc_error_codes)))
            out.append(
                _traffic_selector(
                    arms,
                    arm,
                    extra=f'response_code!~"5..",grpc_response_status=~"{codes}"',
                    reporter=reporter,
                )
            )
        return out

    def counters(self, arms: Arms) -> dict[str, str]:
        out = {}
        for arm in Arm:

            def total(reporter: str, arm: Arm = arm) -> str:
                return f"sum({_traffic_selector(arms, arm, reporter=reporter)})"

            def bad(reporter: str, arm: Arm = arm) -> str:
                # No error series yet means no errors, not missing data.
                return " + ".join(
                    f"(sum({sel}) or vector(0))"
                    for sel in self._error_selectors(arms, arm, reporter)
                )

            out[role(arm, "total")] = _by_reporter(self.reporter, total, total)
            out[role(arm, "bad")] = _by_reporter(self.reporter, bad, total)
        out[role(Arm.CANARY, "unreachable")] = f"(sum({_unreachable_selector(arms)}) or vector(0))"
        return out

    def series(self, arms: Arms, step_seconds: float) -> dict[str, str]:
        window = duration(step_seconds)
        out = {}
        for arm in Arm:

            def ratio(reporter: str, arm: Arm = arm) -> str:
                errors = " + ".join(
                    f"(sum(increase({sel}[{window}])) or vector(0))"
                    for sel in self._error_selectors(arms, arm, reporter)
                )
                total = _traffic_selector(arms, arm, reporter=reporter)
                return f"({errors}) / sum(increase({total}[{window}]))"

            def guard(reporter: str, arm: Arm = arm) -> str:
                return f"sum({_traffic_selector(arms, arm, reporter=reporter)})"

            out[role(arm, "series")] = _by_reporter(self.reporter, ratio, guard)
        return out

    def counts_as(self) -> str:
        """Which responses count as errors, for verdicts."""
        if not self.grpc_error_codes:
            return "HTTP 5xx"
        codes = ", ".join(str(c) for c in sorted(set(self.grpc_error_codes)))
        return f"HTTP 5xx or gRPC status {codes}"

    @property
    def proportion(self) -> ProportionLimits:
        return ProportionLimits(self.max_rate, self.max_increase, self.max_ratio)

    def describe(self) -> str:
        return f"error rate ({self.counts_as()})"

    def format_value(self, value: float | None) -> str:
        return _format_rate(value)


@dataclass(frozen=True)
class LatencyCheck(Check):
    """A latency quantile from Istio's duration histogram, and the share slower than an SLO.

    The sequential judge reads the whole histogram (``sum by (le)``) and judges shares of
    requests slower than bucket bounds found in the data: ``max_ms`` as "at most 1-quantile
    of canary requests slower than max_ms"; ``max_ratio`` as "at each bound in the tail
    (``slo_ms``, else the bounds around stable's quantile), at most max_ratio times stable's
    share of requests is slower"; ``slo_ms`` alone as the same ratio with the judge's
    tolerance. Other judges compare the quantile values Prometheus interpolates.

    ``slo_ms`` must be one of the histogram's bucket bounds: the share of requests slower
    than it is then exact (``1 - bucket{le=slo}/count``); interpolating inside a bucket would
    assume requests spread evenly in it, which biases the very tail we compare. Because
    "quantile q <= X" is the same statement as "at most 1-q of requests are slower than X",
    ``max_ms`` on a bucket bound doubles as the SLO when ``slo_ms`` is not given.

    ``reporter`` as for :class:`ErrorRateCheck`: the callers' durations (``source``) include
    retries and are what clients waited; the pods' (``destination``) time each attempt.
    """

    type_name: ClassVar[str] = "latency"
    quantile: float = 0.99
    max_ms: float | None = None
    max_ratio: float | None = None
    slo_ms: float | None = None
    min_requests: int = 100  # type: ignore[assignment]
    name: str = "latency"
    buckets_ms: tuple[float, ...] = ISTIO_DURATION_BUCKETS_MS
    reporter: str = "auto"

    def __post_init__(self) -> None:
        require_check_name(self.name)
        _reporter(self.name, self.reporter)
        buckets_ms = self.buckets_ms  # as given, for the message
        if isinstance(self.buckets_ms, list):
            object.__setattr__(self, "buckets_ms", tuple(self.buckets_ms))
        if not _is_number(self.quantile) or not 0 < self.quantile < 1:
            raise AnalysisError(
                f"{self.name}: quantile must be strictly between 0 and 1 (e.g. 0.99), "
                f"got {self.quantile!r}"
            )
        positive_number(self.name, "max_ms", self.max_ms)
        _ratio(self.name, "max_ratio", self.max_ratio)
        _count(self.name, "min_requests", self.min_requests)
        if (
            not isinstance(self.buckets_ms, tuple)
            or not self.buckets_ms
            or any(not is_finite_number(b) or b <= 0 for b in self.buckets_ms)
        ):
            raise AnalysisError(
                f"{self.name}: buckets_ms must be a list of finite positive numbers, got "
                f"{buckets_ms!r}"
            )
        if self.slo_ms is not None:
            positive_number(self.name, "slo_ms", self.slo_ms)
            if self.slo_ms not in self.buckets_ms:
                raise AnalysisError(
                    f"{self.name}: slo_ms must be a bucket bound of {DURATION}_bucket so the "
                    f"share of slower requests is exact, got {self.slo_ms!r}; bounds: "
                    f"{', '.join(format(b, 'g') for b in self.buckets_ms)}"
                )
        if self.max_ms is None and self.max_ratio is None and self.slo_ms is None:
            raise AnalysisError(
                f"{self.name}: give at least one limit: max_ms (e.g. 500), max_ratio "
                "(e.g. 1.5) or slo_ms (a bucket bound, e.g. 250)"
            )

    @property
    def effective_slo_ms(self) -> float | None:
        """The bound the slow-request share is measured against, if there is one."""
        if self.slo_ms is not None:
            return self.slo_ms
        if self.max_ms is not None and self.max_ms in self.buckets_ms:
            return self.max_ms
        return None

    def _count(self, arms: Arms, arm: Arm) -> Any:
        def count(reporter: str) -> str:
            return f"sum({_traffic_selector(arms, arm, f'{DURATION}_count', reporter=reporter)})"

        return count

    def counters(self, arms: Arms) -> dict[str, str]:
        out = {}
        slo = self.effective_slo_ms
        for arm in Arm:
            count = self._count(arms, arm)
            out[role(arm, "total")] = _by_reporter(self.reporter, count, count)
            if slo is not None:

                def slow(reporter: str, arm: Arm = arm, count: Any = count) -> str:
                    fast = _traffic_selector(
                        arms, arm, f"{DURATION}_bucket", bucket_bound(slo), reporter=reporter
                    )
                    return f"({count(reporter)} - sum({fast}))"

                out[role(arm, "bad")] = _by_reporter(self.reporter, slow, count)
        return out

    def buckets(self, arms: Arms) -> dict[str, str]:
        out = {}
        for arm in Arm:

            def by_le(reporter: str, arm: Arm = arm) -> str:
                sel = _traffic_selector(arms, arm, f"{DURATION}_bucket", reporter=reporter)
                return f"sum by (le) ({sel})"

            out[role(arm, "buckets")] = _by_reporter(self.reporter, by_le, self._count(arms, arm))
        return out

    def _quantile(self, arms: Arms, arm: Arm, window: str) -> str:
        def by_le(reporter: str) -> str:
            buckets = _traffic_selector(arms, arm, f"{DURATION}_bucket", reporter=reporter)
            return f"sum by (le) (increase({buckets}[{window}]))"

        return (
            f"histogram_quantile({self.quantile:g}, "
            f"{_by_reporter(self.reporter, by_le, self._count(arms, arm))})"
        )

    def values(self, arms: Arms, window_seconds: float) -> dict[str, str]:
        return {
            role(arm, "value"): self._quantile(arms, arm, duration(window_seconds)) for arm in Arm
        }

    def series(self, arms: Arms, step_seconds: float) -> dict[str, str]:
        return {
            role(arm, "series"): self._quantile(arms, arm, duration(step_seconds)) for arm in Arm
        }

    @property
    def proportion(self) -> ProportionLimits | None:
        slo = self.effective_slo_ms
        if slo is None:
            return None
        max_rate = 1 - self.quantile if self.max_ms is not None and self.max_ms == slo else None
        return ProportionLimits(max_rate=max_rate)

    def value_violations(self, canary: float | None, stable: float | None) -> list[str]:
        out = []
        label = f"p{self.quantile * 100:g}"
        if self.max_ms is not None and canary is not None and canary > self.max_ms:
            out.append(f"canary {label} {canary:.0f} ms exceeds max_ms {self.max_ms:g}")
        if self.max_ratio is not None and canary is not None and stable:
            if canary / stable > self.max_ratio:
                out.append(
                    f"canary {label} is {canary / stable:.2f}x stable's, above max_ratio "
                    f"{self.max_ratio:g}"
                )
        return out

    def describe(self) -> str:
        slo = self.effective_slo_ms
        return f"requests slower than {slo:g} ms" if slo is not None else "latency"

    def format_value(self, value: float | None) -> str:
        return "no data" if value is None else f"{value:.0f} ms"

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.buckets_ms == ISTIO_DURATION_BUCKETS_MS:
            del data["buckets_ms"]
        return data


def _model_selector(
    metric: str,
    arms: Arms,
    arm: Arm,
    version_label: str,
    namespace_label: str | None,
    extra: str = "",
) -> str:
    labels = {version_label: arms.version(arm)}
    if namespace_label:
        labels[namespace_label] = arms.namespace
    return selector(metric, labels, extra)


@dataclass(frozen=True)
class ModelAccuracyCheck(Check):
    """Share of correct predictions, from the model server's feedback counters.

    The model server labels its metrics with ``version``; set ``namespace_label`` when the
    scrape configuration adds the pod's namespace under some label (often ``namespace``).
    """

    type_name: ClassVar[str] = "model_accuracy"
    higher_is_worse: ClassVar[bool] = True  # judged on the share of wrong predictions
    min_accuracy: float | None = None
    max_drop: float | None = None
    min_feedback: int = 100
    name: str = "accuracy"
    version_label: str = "version"
    namespace_label: str | None = None

    def __post_init__(self) -> None:
        require_check_name(self.name)
        _fraction(self.name, "min_accuracy", self.min_accuracy)
        _fraction(self.name, "max_drop", self.max_drop)
        _count(self.name, "min_feedback", self.min_feedback)
        require_label_name(f"{self.name}: version_label", self.version_label)
        if self.namespace_label is not None:
            require_label_name(f"{self.name}: namespace_label", self.namespace_label)
        if self.min_accuracy is None and self.max_drop is None:
            raise AnalysisError(
                f"{self.name}: give at least one limit: min_accuracy (e.g. 0.9) or "
                "max_drop (e.g. 0.02)"
            )

    @property
    def min_requests(self) -> int:
        return self.min_feedback

    def _sel(self, metric: str, arms: Arms, arm: Arm) -> str:
        return _model_selector(metric, arms, arm, self.version_label, self.namespace_label)

    def counters(self, arms: Arms) -> dict[str, str]:
        out = {}
        for arm in Arm:
            feedback = f"sum({self._sel('model_feedback_total', arms, arm)})"
            correct = f"(sum({self._sel('model_feedback_correct_total', arms, arm)}) or vector(0))"
            out[role(arm, "total")] = feedback
            out[role(arm, "bad")] = f"({feedback} - {correct})"
        return out

    def series(self, arms: Arms, step_seconds: float) -> dict[str, str]:
        window = duration(step_seconds)
        out = {}
        for arm in Arm:
            feedback = f"sum(increase({self._sel('model_feedback_total', arms, arm)}[{window}]))"
            correct = self._sel("model_feedback_correct_total", arms, arm)
            out[role(arm, "series")] = (
                f"1 - ((sum(increase({correct}[{window}])) or vector(0)) / {feedback})"
            )
        return out

    @property
    def proportion(self) -> ProportionLimits:
        max_rate = None if self.min_accuracy is None else 1 - self.min_accuracy
        return ProportionLimits(max_rate=max_rate, max_increase=self.max_drop)

    def describe(self) -> str:
        return "wrong predictions"

    def format_value(self, value: float | None) -> str:
        return _format_rate(value)


@dataclass(frozen=True)
class PredictionDriftCheck(Check):
    """Population stability index between canary and stable prediction classes.

    PSI = sum over classes of (c - s) * ln(c / s), with c and s each arm's share of
    predictions in the class, floored at ``epsilon`` so a class one arm never predicts
    counts as a large but finite shift. Prometheus computes it over the window since the
    step started, so classes need not be known in advance. 0.1 is a small shift, 0.2 a
    significant one by the usual rule of thumb.
    """

    type_name: ClassVar[str] = "prediction_drift"
    max_psi: float = 0.2
    min_predictions: int = 100
    name: str = "prediction-drift"
    epsilon: float = 1e-4
    version_label: str = "version"
    namespace_label: str | None = None

    def __post_init__(self) -> None:
        require_check_name(self.name)
        if self.max_psi is None:
            raise AnalysisError(
                f"{self.name}: max_psi must be a positive number (e.g. 0.2), got None"
            )
        positive_number(self.name, "max_psi", self.max_psi)
        _count(self.name, "min_predictions", self.min_predictions)
        if not _is_number(self.epsilon) or not 0 < self.epsilon < 0.01:
            raise AnalysisError(
                f"{self.name}: epsilon must be a small positive share below 0.01, "
                f"got {self.epsilon!r}"
            )
        require_label_name(f"{self.name}: version_label", self.version_label)
        if self.namespace_label is not None:
            require_label_name(f"{self.name}: namespace_label", self.namespace_label)

    @property
    def min_requests(self) -> int:
        return self.min_predictions

    def _sel(self, arms: Arms, arm: Arm) -> str:
        return _model_selector(
            "model_predictions_total", arms, arm, self.version_label, self.namespace_label
        )

    def counters(self, arms: Arms) -> dict[str, str]:
        return {role(arm, "total"): f"sum({self._sel(arms, arm)})" for arm in Arm}

    def psi_query(self, arms: Arms, window_seconds: float) -> str:
        window = duration(window_seconds)

        def shares(arm: Arm) -> str:
            by_class = f"sum by (prediction) (increase({self._sel(arms, arm)}[{window}]))"
            return f"({by_class} / scalar(sum(increase({self._sel(arms, arm)}[{window}]))))"

        c, s = shares(Arm.CANARY), shares(Arm.STABLE)
        # `x or y * 0` fills in classes only the other arm predicted, as a zero share.
        c_all = f"clamp_min(({c} or {s} * 0), {self.epsilon:g})"
        s_all = f"clamp_min(({s} or {c} * 0), {self.epsilon:g})"
        return f"sum(({c_all} - {s_all}) * ln({c_all} / {s_all}))"

    def values(self, arms: Arms, window_seconds: float) -> dict[str, str]:
        return {CANARY_VALUE: self.psi_query(arms, window_seconds)}

    def value_violations(self, canary: float | None, stable: float | None) -> list[str]:
        if canary is not None and canary > self.max_psi:
            return [f"PSI {canary:.3f} between canary and stable exceeds max_psi {self.max_psi:g}"]
        return []

    def describe(self) -> str:
        return "prediction drift (PSI)"

    def format_value(self, value: float | None) -> str:
        return "no data" if value is None else f"{value:.3f}"


@dataclass(frozen=True)
class PromQLCheck(Check):
    """A custom PromQL query with ``{{ namespace }}``, ``{{ version }}``, ``{{ interval }}``.

    With ``{{ version }}`` the query runs once per arm and ``max_ratio`` compares them;
    without it, it runs once and the limits apply to its value. ``{{ interval }}`` is the
    window since the step started (or the judge's window), e.g. ``60s``. Traffic for
    ``min_requests`` comes from Istio's request counter; 0 skips that guard.
    """

    type_name: ClassVar[str] = "promql"
    name: str = ""
    query: str = ""
    max_value: float | None = None
    min_value: float | None = None
    max_ratio: float | None = None
    min_requests: int = 100  # type: ignore[assignment]
    higher_is_better: bool = False

    def __post_init__(self) -> None:
        require_check_name(self.name)
        if not isinstance(self.query, str) or not self.query.strip():
            raise AnalysisError(f"{self.name}: query must be non-empty PromQL, got {self.query!r}")
        placeholders = template_placeholders(self.query)
        flag(f"{self.name}: higher_is_better", self.higher_is_better, AnalysisError)
        for what in ("max_value", "min_value"):
            value = getattr(self, what)
            if value is not None and not is_finite_number(value):
                raise AnalysisError(f"{self.name}: {what} must be a finite number, got {value!r}")
        _ratio(self.name, "max_ratio", self.max_ratio)
        _count(self.name, "min_requests", self.min_requests)
        if self.min_value is not None and self.max_value is not None:
            if self.min_value > self.max_value:
                raise AnalysisError(
                    f"{self.name}: min_value {self.min_value!r} is above max_value "
                    f"{self.max_value!r}; no value could pass"
                )
        if self.max_value is None and self.min_value is None and self.max_ratio is None:
            raise AnalysisError(
                f"{self.name}: give at least one limit: max_value, min_value or max_ratio"
            )
        if self.max_ratio is not None and "version" not in placeholders:
            raise AnalysisError(
                f"{self.name}: max_ratio compares canary with stable, so the query needs a "
                f"{{{{ version }}}} placeholder: {self.query!r}"
            )

    @property
    def higher_is_worse(self) -> bool:  # type: ignore[override]
        return not self.higher_is_better

    def _render(self, arms: Arms, arm: Arm, window_seconds: float) -> str:
        return render_template(
            self.query,
            {
                "namespace": arms.namespace,
                "version": arms.version(arm),
                "interval": duration(window_seconds),
            },
        )

    def _per_arm(self) -> bool:
        return "version" in template_placeholders(self.query)

    def counters(self, arms: Arms) -> dict[str, str]:
        if self.min_requests == 0:
            return {}
        out = {}
        for arm in Arm:

            def total(reporter: str, arm: Arm = arm) -> str:
                return f"sum({_traffic_selector(arms, arm, reporter=reporter)})"

            out[role(arm, "total")] = _by_reporter("auto", total, total)
        return out

    def values(self, arms: Arms, window_seconds: float) -> dict[str, str]:
        arms_used = list(Arm) if self._per_arm() else [Arm.CANARY]
        return {role(a, "value"): self._render(arms, a, window_seconds) for a in arms_used}

    def series(self, arms: Arms, step_seconds: float) -> dict[str, str]:
        if not self._per_arm():
            return {}
        return {role(a, "series"): self._render(arms, a, step_seconds) for a in Arm}

    def value_violations(self, canary: float | None, stable: float | None) -> list[str]:
        out: list[str] = []
        if canary is None:
            return out
        if self.max_value is not None and canary > self.max_value:
            out.append(f"{self.name} {canary:.4g} exceeds max_value {self.max_value:g}")
        if self.min_value is not None and canary < self.min_value:
            out.append(f"{self.name} {canary:.4g} is below min_value {self.min_value:g}")
        if self.max_ratio is not None and stable:
            ratio = (
                canary / stable if self.higher_is_worse else stable / canary if canary else math.inf
            )
            if ratio > self.max_ratio:
                out.append(
                    f"{self.name}: canary {canary:.4g} vs stable {stable:.4g} is {ratio:.2f}x "
                    f"worse, above max_ratio {self.max_ratio:g}"
                )
        return out


@dataclass(frozen=True)
class PromQLRatioCheck(Check):
    """A custom ratio of two cumulative counters: bad events among all events, per arm.

    ``bad_query`` and ``total_query`` are PromQL over counters (no ``rate``/``increase``: the
    analysis takes their raw readings at every poll and subtracts the step's first, as for
    Istio's counters), each with a ``{{ version }}`` placeholder (and optionally
    ``{{ namespace }}``); each is summed, so any vector works. Examples: timeouts among
    feature-store lookups, fallbacks among predictions. Because they are counts, the default
    judge tests them sequentially at every poll, like errors, with the same limits:
    ``max_rate`` (the canary's share), ``max_increase`` (canary minus stable) and
    ``max_ratio`` (canary / stable). ``min_events`` is each arm's minimum of total events.
    """

    type_name: ClassVar[str] = "promql_ratio"
    name: str = ""
    bad_query: str = ""
    total_query: str = ""
    max_rate: float | None = None
    max_increase: float | None = None
    max_ratio: float | None = None
    min_events: int = 100

    def __post_init__(self) -> None:
        require_check_name(self.name)
        for what in ("bad_query", "total_query"):
            query = getattr(self, what)
            if not isinstance(query, str) or not query.strip():
                raise AnalysisError(f"{self.name}: {what} must be non-empty PromQL, got {query!r}")
            placeholders = template_placeholders(query)
            if "version" not in placeholders:
                raise AnalysisError(
                    f"{self.name}: {what} counts one arm's events, so it needs a "
                    f"{{{{ version }}}} placeholder: {query!r}"
                )
            if "interval" in placeholders:
                raise AnalysisError(
                    f"{self.name}: {what} must read cumulative counters, not a window "
                    f"({{{{ interval }}}}); the analysis subtracts the step's first reading: "
                    f"{query!r}"
                )
        _proportion_limits(self.name, self.max_rate, self.max_increase, self.max_ratio)
        _count(self.name, "min_events", self.min_events)

    @property
    def min_requests(self) -> int:
        return self.min_events

    def _render(self, query: str, arms: Arms, arm: Arm) -> str:
        return render_template(query, {"namespace": arms.namespace, "version": arms.version(arm)})

    def counters(self, arms: Arms) -> dict[str, str]:
        out = {}
        for arm in Arm:
            out[role(arm, "total")] = f"sum({self._render(self.total_query, arms, arm)})"
            # No bad series yet means no bad events, not missing data.
            out[role(arm, "bad")] = f"(sum({self._render(self.bad_query, arms, arm)}) or vector(0))"
        return out

    def series(self, arms: Arms, step_seconds: float) -> dict[str, str]:
        window = duration(step_seconds)
        out = {}
        for arm in Arm:
            bad = self._render(self.bad_query, arms, arm)
            total = self._render(self.total_query, arms, arm)
            out[role(arm, "series")] = (
                f"(sum(increase(({bad})[{window}:])) or vector(0)) "
                f"/ sum(increase(({total})[{window}:]))"
            )
        return out

    @property
    def proportion(self) -> ProportionLimits:
        return ProportionLimits(self.max_rate, self.max_increase, self.max_ratio)

    def describe(self) -> str:
        return f"{self.name} (bad / total events)"

    def format_value(self, value: float | None) -> str:
        return _format_rate(value)


CHECK_TYPES: dict[str, type[Check]] = {
    cls.type_name: cls
    for cls in (
        ErrorRateCheck,
        LatencyCheck,
        ModelAccuracyCheck,
        PredictionDriftCheck,
        PromQLCheck,
        PromQLRatioCheck,
    )
}


def check_from_dict(data: Mapping[str, Any]) -> Check:
    """Rebuild a check from ``Check.to_dict()``; unknown types or fields raise AnalysisError."""
    if not isinstance(data, Mapping):
        raise AnalysisError(f"a check must be a mapping with a 'type', got {data!r}")
    kind = data.get("type")
    cls = CHECK_TYPES.get(kind)  # type: ignore[arg-type]
    if cls is None:
        raise AnalysisError(f"unknown check type {kind!r}; known: {sorted(CHECK_TYPES)}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    params = {k: v for k, v in data.items() if k != "type"}
    unknown = set(params) - known
    if unknown:
        raise AnalysisError(f"unknown field(s) {sorted(unknown)} for check type {kind!r}")
    if "buckets_ms" in params:
        params["buckets_ms"] = tuple(params["buckets_ms"])
    try:
        return cls(**params)
    except TypeError as exc:
        raise AnalysisError(f"bad fields for check type {kind!r}: {exc}") from exc


def require_serializable(check: Check) -> dict[str, Any]:
    """The check's dict form, after proving it survives JSON and rebuilds to the same check."""
    try:
        data = check.to_dict()
        rebuilt = check_from_dict(json.loads(json.dumps(data, allow_nan=False)))
    except (TypeError, ValueError) as exc:
        raise AnalysisError(
            f"check {getattr(check, 'name', check)!r} is not JSON-serializable: {exc}"
        ) from exc
    if rebuilt != check:
        raise AnalysisError(
            f"check {check.name!r} does not survive a to_dict/check_from_dict round-trip"
        )
    return data
