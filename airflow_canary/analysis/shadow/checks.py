"""Shadow checks: how far v2's predictions may stray from v1's on the same paired requests.

Each check reduces the pairs to counts or bounded values, and the shadow judge
(``airflow_canary.analysis.shadow.judge``) turns those into e-values.

- ``PredictionAgreementCheck(max_disagreement=)``: classifiers; the share of pairs whose
  predicted class differs may be at most ``max_disagreement``.
- ``PredictionDeltaCheck(max_mean_abs=, max_quantile_abs=)``: regressors and scores; per pair
  the absolute difference of the values (``on="value"``) or the largest absolute difference of
  any class's score (``on="scores"``); its mean may be at most ``max_mean_abs`` and its
  ``quantile`` at most ``max_quantile_abs``.
- ``PairedPredictionDriftCheck(max_psi=)``: classifiers; the population stability index of v2's
  predicted-class shares against v1's on the same paired requests may be at most ``max_psi``.
  ``PredictionDriftCheck`` (the live check) is taken as this check in a shadow phase.
- ``MirroredErrorRateCheck(max_rate=)`` and ``MirroredLatencyCheck(quantile=, max_ms=)``: v2's
  answers to the mirrored requests themselves, from Istio telemetry (``MirroredRequestsCheck``).

A pair that lacks what a check compares (no class, no value) is counted as not comparable and
reported, never judged.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from airflow_canary.analysis.checks import (
    GRPC_SERVER_ERROR_CODES,
    ErrorRateCheck,
    LatencyCheck,
    PredictionDriftCheck,
    positive_number,
    require_check_name,
)
from airflow_canary.analysis.promql import ISTIO_DURATION_BUCKETS_MS
from airflow_canary.analysis.shadow.pairing import Pair
from airflow_canary.analysis.values import AnalysisError, Arm, Arms
from airflow_canary.parameters import is_finite_number


def _share(check: str, what: str, value: object) -> float:
    if not is_finite_number(value) or not 0 < float(value) < 1:  # type: ignore[arg-type]
        raise AnalysisError(f"{check}: {what} must be a share between 0 and 1, got {value!r}")
    return float(value)  # type: ignore[arg-type]


def _min_pairs(check: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise AnalysisError(f"{check}: min_pairs must be a whole number >= 1, got {value!r}")


@dataclass(frozen=True)
class Compared:
    """What a check measured on the pairs: per comparable pair a value, and what was left out."""

    values: tuple[float, ...]
    not_comparable: int
    #: For each comparable pair, the indices into the pair list (to pick examples from).
    index: tuple[int, ...]


class ShadowCheck:
    """Common parts of the shadow checks (a name, a minimum number of pairs, serialisation)."""

    type_name: ClassVar[str]
    name: str
    min_pairs: int | None

    def compare(self, pairs: Sequence[Pair]) -> Compared:
        """Each comparable pair's value (a subclass defines what is compared)."""
        raise NotImplementedError(f"{type(self).__name__} must define compare()")

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"type": self.type_name}
        for f in fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            data[f.name] = list(value) if isinstance(value, tuple) else value
        return data


@dataclass(frozen=True)
class PredictionAgreementCheck(ShadowCheck):
    """v2 predicts another class than v1 on at most ``max_disagreement`` of the paired requests.

    :param max_disagreement: the largest acceptable share of pairs whose classes differ, in (0, 1)
    :param min_pairs: pairs needed before the check may PASS; default (None) the number at which
        a v2 disagreeing at twice the limit would reach the FAIL threshold (the judge computes it)
    :param name: the check's name in verdicts
    :raises AnalysisError: naming a bad value
    """

    type_name: ClassVar[str] = "prediction_agreement"
    max_disagreement: float = 0.02
    min_pairs: int | None = None
    name: str = "prediction-agreement"

    def __post_init__(self) -> None:
        require_check_name(self.name)
        _share(self.name, "max_disagreement", self.max_disagreement)
        _min_pairs(self.name, self.min_pairs)

    def compare(self, pairs: Sequence[Pair]) -> Compared:
        """1.0 for a pair whose classes differ, 0.0 when they agree."""
        values, index, left_out = [], [], 0
        for i, pair in enumerate(pairs):
            a, b = pair.stable.prediction.class_, pair.canary.prediction.class_
            if a is None or b is None:
                left_out += 1
                continue
            values.append(0.0 if str(a) == str(b) else 1.0)
            index.append(i)
        return Compared(tuple(values), left_out, tuple(index))


@dataclass(frozen=True)
class PredictionDeltaCheck(ShadowCheck):
    """v2's values (or class scores) differ from v1's by little on the paired requests.

    :param max_mean_abs: the largest acceptable mean absolute difference (a positive number, in
        the values' unit), or None
    :param max_quantile_abs: the largest acceptable ``quantile`` of the absolute difference, or
        None; at least one of the two limits is given
    :param quantile: which quantile ``max_quantile_abs`` bounds, in (0, 1), default 0.99
    :param on: ``"value"`` (regressors: |v2 - v1|) or ``"scores"`` (the largest |v2 - v1| of any
        class's score)
    :param clip: differences above it count as ``clip`` for the mean (the e-value for a mean
        needs bounded values; clipping only makes the test more lenient); default four times
        ``max_mean_abs``
    :param min_pairs: as for PredictionAgreementCheck
    :raises AnalysisError: naming a bad value
    """

    type_name: ClassVar[str] = "prediction_delta"
    max_mean_abs: float | None = None
    max_quantile_abs: float | None = None
    quantile: float = 0.99
    on: str = "value"
    clip: float | None = None
    min_pairs: int | None = None
    name: str = "prediction-delta"

    def __post_init__(self) -> None:
        require_check_name(self.name)
        if self.max_mean_abs is None and self.max_quantile_abs is None:
            raise AnalysisError(
                f"{self.name}: give max_mean_abs, max_quantile_abs or both, got neither"
            )
        if self.max_mean_abs is not None:
            positive_number(self.name, "max_mean_abs", self.max_mean_abs)
        if self.max_quantile_abs is not None:
            positive_number(self.name, "max_quantile_abs", self.max_quantile_abs)
        _share(self.name, "quantile", self.quantile)
        if self.on not in ("value", "scores"):
            raise AnalysisError(f"{self.name}: on must be 'value' or 'scores', got {self.on!r}")
        if self.clip is not None:
            positive_number(self.name, "clip", self.clip)
            if self.max_mean_abs is not None and self.clip <= self.max_mean_abs:
                raise AnalysisError(
                    f"{self.name}: clip must be above max_mean_abs {self.max_mean_abs:g}, "
                    f"got {self.clip!r}"
                )
        _min_pairs(self.name, self.min_pairs)

    @property
    def clip_at(self) -> float | None:
        if self.max_mean_abs is None:
            return None
        return self.clip if self.clip is not None else 4 * self.max_mean_abs

    def compare(self, pairs: Sequence[Pair]) -> Compared:
        """The absolute difference of each comparable pair."""
        values, index, left_out = [], [], 0
        for i, pair in enumerate(pairs):
            delta = self._delta(pair)
            if delta is None:
                left_out += 1
                continue
            values.append(delta)
            index.append(i)
        return Compared(tuple(values), left_out, tuple(index))

    def _delta(self, pair: Pair) -> float | None:
        a, b = pair.stable.prediction, pair.canary.prediction
        if self.on == "value":
            if a.value is None or b.value is None:
                return None
            return abs(b.value - a.value)
        sa, sb = a.score_map(), b.score_map()
        if not sa or not sb:
            return None
        return max(abs(sb.get(c, 0.0) - sa.get(c, 0.0)) for c in set(sa) | set(sb))


def population_stability_index(
    canary: Mapping[str, float], stable: Mapping[str, float], epsilon: float
) -> float:
    """PSI = sum over classes of (c - s) x ln(c / s), c and s each side's share of the class.

    ``canary`` and ``stable`` map a class to its count (or share); a class one side never
    predicts has share 0, floored at ``epsilon`` like every share, so it counts as a large
    but finite shift. The live ``PredictionDriftCheck`` computes the same sum in PromQL
    (Siddiqi 2006, "Credit Risk Scorecards", ch. 8; Yurdakul 2018, "Statistical properties
    of population stability index"). 0 for identical shares; 0.1 is a small shift, 0.2 a
    significant one by the usual rule of thumb.

    :raises ValueError: when either side has no counts
    """
    c_total, s_total = sum(canary.values()), sum(stable.values())
    if c_total <= 0 or s_total <= 0:
        raise ValueError(f"both sides need counts, got {dict(canary)} and {dict(stable)}")
    psi = 0.0
    for key in set(canary) | set(stable):
        c = max(canary.get(key, 0.0) / c_total, epsilon)
        s = max(stable.get(key, 0.0) / s_total, epsilon)
        psi += (c - s) * math.log(c / s)
    return psi


@dataclass(frozen=True)
class Drift:
    """PSI of the pairs' classes: v2's class counts, v1's, and which pairs changed class."""

    psi: float | None
    canary: Mapping[str, int]
    stable: Mapping[str, int]
    pairs: int
    not_comparable: int
    #: Indices into the pair list of the pairs whose class changed (to pick examples from).
    changed: tuple[int, ...]


@dataclass(frozen=True)
class PairedPredictionDriftCheck(ShadowCheck):
    """v2's predicted-class shares differ from v1's on the same requests by a PSI <= ``max_psi``.

    The live ``PredictionDriftCheck`` compares the two arms' class shares on different
    requests; here both shares come from the same paired requests, so the index measures v2's
    shift alone, not a difference of traffic. It is the same formula
    (``population_stability_index``) with the same ``epsilon`` flooring, and it is judged the
    same way: on its point estimate, once, at the end of the phase, and only with at least
    ``min_predictions`` comparable pairs (fewer: INCONCLUSIVE, never PASS). Being a point
    estimate, not an e-value, it spends none of the phase's e-value budget and never ends
    the phase early. A ``PredictionDriftCheck`` given to a shadow phase is taken as this check
    (its ``version_label``/``namespace_label`` say where Prometheus keeps the versions and do
    not apply to prediction records).

    :param max_psi: the largest acceptable PSI, a positive number (0.1 small, 0.2 significant)
    :param min_predictions: comparable pairs needed before the check may PASS, a whole number
        >= 1
    :param name: the check's name in verdicts
    :param epsilon: the floor of a class's share, in (0, 0.01)
    :raises AnalysisError: naming a bad value
    """

    type_name: ClassVar[str] = "prediction_drift"
    max_psi: float = 0.2
    min_predictions: int = 100
    name: str = "prediction-drift"
    epsilon: float = 1e-4

    def __post_init__(self) -> None:
        # The live check's validation, so both refuse the same values with the same words.
        PredictionDriftCheck(
            max_psi=self.max_psi,
            min_predictions=self.min_predictions,
            name=self.name,
            epsilon=self.epsilon,
        )
        if self.min_predictions < 1:
            raise AnalysisError(
                f"{self.name}: min_predictions must be a whole number >= 1 in a shadow phase "
                f"(no pair is never enough to pass), got {self.min_predictions!r}"
            )

    @property
    def min_pairs(self) -> int:  # type: ignore[override]
        return self.min_predictions

    @classmethod
    def from_live(cls, check: PredictionDriftCheck) -> PairedPredictionDriftCheck:
        """The shadow form of a live ``PredictionDriftCheck``: its limit, minimum, name, floor."""
        return cls(
            max_psi=check.max_psi,
            min_predictions=check.min_predictions,
            name=check.name,
            epsilon=check.epsilon,
        )

    def measure(self, pairs: Sequence[Pair]) -> Drift:
        """The PSI of v2's classes against v1's over the pairs where both have a class."""
        canary: Counter[str] = Counter()
        stable: Counter[str] = Counter()
        changed, left_out = [], 0
        for i, pair in enumerate(pairs):
            a, b = pair.stable.prediction.class_, pair.canary.prediction.class_
            if a is None or b is None:
                left_out += 1
                continue
            stable[str(a)] += 1
            canary[str(b)] += 1
            if str(a) != str(b):
                changed.append(i)
        n = sum(stable.values())
        psi = population_stability_index(canary, stable, self.epsilon) if n else None
        return Drift(psi, dict(canary), dict(stable), n, left_out, tuple(changed))


class MirroredRequestsCheck(ShadowCheck):
    """A check on v2's answers to the mirrored requests, from Istio's request telemetry.

    Istio reports a mirrored copy only at the destination: the mirror target's sidecar
    (``reporter="destination"``); the caller's sidecar reports the routed request alone
    (istio/istio#23496). In the shadow phase no live request reaches v2 yet, so v2's
    destination-reported requests over the phase are the mirrored copies. The counters are read
    raw and cumulative at every poll, the phase's first poll the baseline
    (``airflow_canary.analysis.shadow.telemetry``); the share of bad ones among them is tested
    with the binomial mixture e-value, inside the phase's error budget
    (``airflow_canary.analysis.shadow.judge``).
    """

    min_requests: int | None
    min_pairs = None

    @property
    def max_share(self) -> float:
        """The largest acceptable share of bad mirrored requests, in (0, 1)."""
        raise NotImplementedError(f"{type(self).__name__} must define max_share")

    def live_check(self) -> ErrorRateCheck | LatencyCheck:
        """The live check whose selectors, with ``reporter="destination"``, count the events."""
        raise NotImplementedError(f"{type(self).__name__} must define live_check()")

    def counters(self, arms: Arms) -> dict[str, str]:
        """Cumulative counters by role: ``total`` (v2's mirrored requests), ``bad`` (those
        that count against the limit) and ``stable`` (v1's requests, only to tell a reading
        of an idle Prometheus from one before v2's first mirrored request)."""
        live = self.live_check().counters(arms)
        return {
            "total": live[f"{Arm.CANARY.value}.total"],
            "bad": live[f"{Arm.CANARY.value}.bad"],
            "stable": live[f"{Arm.STABLE.value}.total"],
        }

    def headline(self, bad: float, requests: float) -> str:
        """What was measured, for verdicts."""
        raise NotImplementedError(f"{type(self).__name__} must define headline()")


#: a mirrored-requests check's line before any request was counted
NONE_COUNTED = "v2's mirrored requests: none counted since the phase's first poll, the baseline"


def _whole(check: str, what: str, value: object) -> None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise AnalysisError(f"{check}: {what} must be a whole number >= 1, got {value!r}")


def _requests(value: float) -> str:
    return f"{value:,.0f}"


@dataclass(frozen=True)
class MirroredErrorRateCheck(MirroredRequestsCheck):
    """v2 answers at most ``max_rate`` of the mirrored requests with an error.

    An error is what the live ``ErrorRateCheck`` counts, with its selectors: HTTP 5xx, or a
    gRPC call whose ``grpc_response_status`` is one of ``grpc_error_codes``; counted from
    ``istio_requests_total{reporter="destination", destination_version=<v2>}``.

    :param max_rate: the largest acceptable share of mirrored requests answered with an error,
        in (0, 1)
    :param min_requests: mirrored requests needed before the check may PASS, a whole number
        >= 1; default (None) the number at which a v2 failing at twice the limit would reach
        the FAIL threshold
    :param name: the check's name in verdicts
    :param grpc_error_codes: gRPC status codes counted as errors (``()``: HTTP 5xx only)
    :raises AnalysisError: naming a bad value
    """

    type_name: ClassVar[str] = "mirrored_error_rate"
    max_rate: float = 0.01
    min_requests: int | None = None
    name: str = "mirrored-error-rate"
    grpc_error_codes: tuple[int, ...] = GRPC_SERVER_ERROR_CODES

    def __post_init__(self) -> None:
        require_check_name(self.name)
        if isinstance(self.grpc_error_codes, list):
            object.__setattr__(self, "grpc_error_codes", tuple(self.grpc_error_codes))
        _share(self.name, "max_rate", self.max_rate)
        _whole(self.name, "min_requests", self.min_requests)
        self.live_check()  # the live check's validation of the error codes

    @property
    def max_share(self) -> float:
        return float(self.max_rate)

    def live_check(self) -> ErrorRateCheck:
        return ErrorRateCheck(
            max_rate=self.max_rate,
            name=self.name,
            grpc_error_codes=self.grpc_error_codes,
            reporter="destination",
        )

    def headline(self, bad: float, requests: float) -> str:
        if not requests:
            return (
                f"{NONE_COUNTED} (limit {_share_text(self.max_rate)} "
                f"with {self.live_check().counts_as()})"
            )
        return (
            f"v2 answered {_share_text(bad / requests)} of {_requests(requests)} mirrored "
            f"requests with {self.live_check().counts_as()} (limit {_share_text(self.max_rate)})"
        )


@dataclass(frozen=True)
class MirroredLatencyCheck(MirroredRequestsCheck):
    """v2's ``quantile`` latency on the mirrored requests is at most ``max_ms``.

    "The q-quantile is at most x" is "at most 1 - q of the requests are slower than x". Istio's
    duration histogram counts requests at or below its bucket bounds only, so the check counts
    v2's mirrored requests slower than ``bound_ms``, the smallest bucket bound >= ``max_ms``
    (exact, no interpolation inside a bucket; a bound above ``max_ms`` makes the check more
    lenient, never stricter), from
    ``istio_request_duration_milliseconds_bucket{reporter="destination"}``; the verdict names
    the bound. The timing is v2's sidecar's: the time v2 took to answer, which no caller waited
    for.

    :param quantile: the quantile bounded, in (0, 1), default 0.99
    :param max_ms: the largest acceptable ``quantile`` latency, a positive number of
        milliseconds at most the histogram's largest bound
    :param min_requests: as for ``MirroredErrorRateCheck``
    :param name: the check's name in verdicts
    :param buckets_ms: the histogram's bucket bounds in milliseconds (default Istio's)
    :raises AnalysisError: naming a bad value
    """

    type_name: ClassVar[str] = "mirrored_latency"
    quantile: float = 0.99
    max_ms: float | None = None
    min_requests: int | None = None
    name: str = "mirrored-latency"
    buckets_ms: tuple[float, ...] = ISTIO_DURATION_BUCKETS_MS

    def __post_init__(self) -> None:
        require_check_name(self.name)
        if isinstance(self.buckets_ms, list):
            object.__setattr__(self, "buckets_ms", tuple(self.buckets_ms))
        _share(self.name, "quantile", self.quantile)
        if self.max_ms is None:
            raise AnalysisError(
                f"{self.name}: max_ms must be a positive number of milliseconds (e.g. 250), "
                "got None"
            )
        positive_number(self.name, "max_ms", self.max_ms)
        _whole(self.name, "min_requests", self.min_requests)
        # The live check's validation of the bounds (a list of finite positive numbers).
        LatencyCheck(
            quantile=self.quantile, max_ms=self.max_ms, name=self.name, buckets_ms=self.buckets_ms
        )
        if self.max_ms > max(self.buckets_ms):
            raise AnalysisError(
                f"{self.name}: max_ms must be at most the histogram's largest bucket bound "
                f"{max(self.buckets_ms):g} ms (no bound above it counts slower requests), got "
                f"{self.max_ms!r}"
            )

    @property
    def bound_ms(self) -> float:
        """The smallest bucket bound >= ``max_ms``: slower requests are counted against it."""
        assert self.max_ms is not None
        return float(min(b for b in self.buckets_ms if b >= self.max_ms))

    @property
    def max_share(self) -> float:
        return 1 - float(self.quantile)

    def live_check(self) -> LatencyCheck:
        return LatencyCheck(
            quantile=self.quantile,
            max_ms=self.bound_ms,
            name=self.name,
            buckets_ms=self.buckets_ms,
            reporter="destination",
        )

    def headline(self, bad: float, requests: float) -> str:
        share = bad / requests if requests else 0.0
        bound = self.bound_ms
        assert self.max_ms is not None
        which = (
            f"{bound:g} ms"
            if bound == self.max_ms
            else f"{bound:g} ms, the smallest bucket bound >= max_ms {self.max_ms:g}"
        )
        if not requests:
            return (
                f"{NONE_COUNTED} (p{self.quantile * 100:g} limit: at "
                f"most {_share_text(self.max_share)} slower than {which})"
            )
        return (
            f"{_share_text(share)} of v2's {_requests(requests)} mirrored requests slower than "
            f"{which} (p{self.quantile * 100:g} limit: at most {_share_text(self.max_share)})"
        )

    def to_dict(self) -> dict[str, Any]:
        data = super().to_dict()
        if self.buckets_ms == ISTIO_DURATION_BUCKETS_MS:
            del data["buckets_ms"]
        return data


def _share_text(share: float) -> str:
    return f"{share * 100:.3g}%"


SHADOW_CHECKS: dict[str, type[ShadowCheck]] = {
    PredictionAgreementCheck.type_name: PredictionAgreementCheck,
    PredictionDeltaCheck.type_name: PredictionDeltaCheck,
    PairedPredictionDriftCheck.type_name: PairedPredictionDriftCheck,
    MirroredErrorRateCheck.type_name: MirroredErrorRateCheck,
    MirroredLatencyCheck.type_name: MirroredLatencyCheck,
}


def as_shadow_check(check: object) -> ShadowCheck:
    """A shadow check from itself, its ``to_dict()`` form or a live ``PredictionDriftCheck``.

    :raises AnalysisError: naming what is not a shadow check
    """
    if isinstance(check, ShadowCheck):
        return check
    if isinstance(check, PredictionDriftCheck):
        return PairedPredictionDriftCheck.from_live(check)
    if isinstance(check, Mapping):
        return shadow_check_from_dict(check)
    if isinstance(check, (ErrorRateCheck, LatencyCheck)):
        counterpart = (
            "MirroredErrorRateCheck"
            if isinstance(check, ErrorRateCheck)
            else ("MirroredLatencyCheck")
        )
        raise AnalysisError(
            f"{check!r} compares live traffic of both versions, which the shadow phase does not "
            f"have; for v2's answers to the mirrored requests use {counterpart}"
        )
    raise AnalysisError(
        f"{check!r} is not a shadow check; use one of {', '.join(SHADOW_CHECK_NAMES)}"
    )


#: What a user may give a shadow phase, by the names they write.
SHADOW_CHECK_NAMES = (
    "PredictionAgreementCheck",
    "PredictionDeltaCheck",
    "PredictionDriftCheck",
    "MirroredErrorRateCheck",
    "MirroredLatencyCheck",
)


def shadow_check_from_dict(data: Mapping[str, Any]) -> ShadowCheck:
    """Rebuild a shadow check from ``to_dict()``; AnalysisError naming an unknown type or field."""
    kind = data.get("type")
    cls = SHADOW_CHECKS.get(str(kind))
    if cls is None:
        raise AnalysisError(
            f"shadow check type must be one of {', '.join(map(repr, SHADOW_CHECKS))}, got {kind!r}"
        )
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    extra = sorted(set(data) - known - {"type"})
    if extra:
        raise AnalysisError(f"{kind}: unknown field(s) {', '.join(extra)}")
    return cls(**{k: v for k, v in data.items() if k != "type"})
