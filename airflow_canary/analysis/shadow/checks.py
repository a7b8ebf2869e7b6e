"""Shadow checks: how far v2's predictions may stray from v1's on the same paired requests.

Each check reduces the pairs to counts or bounded values, and the shadow judge
(``airflow_canary.analysis.shadow.judge``) turns those into e-values.

- ``PredictionAgreementCheck(max_disagreement=)``: classifiers; the share of pairs whose
  predicted class differs may be at most ``max_disagreement``.
- ``PredictionDeltaCheck(max_mean_abs=, max_quantile_abs=)``: regressors and scores; per pair
  the absolute difference of the values (``on="value"``) or the largest absolute difference of
  any class's score (``on="scores"``); its mean may be at most ``max_mean_abs`` and its
  ``quantile`` at most ``max_quantile_abs``.

A pair that lacks what a check compares (no class, no value) is counted as not comparable and
reported, never judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, ClassVar

from airflow_canary.analysis.checks import positive_number, require_check_name
from airflow_canary.analysis.shadow.pairing import Pair
from airflow_canary.analysis.values import AnalysisError
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
        return {"type": self.type_name, **{f.name: getattr(self, f.name) for f in fields(self)}}  # type: ignore[arg-type]


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


SHADOW_CHECKS: dict[str, type[ShadowCheck]] = {
    PredictionAgreementCheck.type_name: PredictionAgreementCheck,
    PredictionDeltaCheck.type_name: PredictionDeltaCheck,
}


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
