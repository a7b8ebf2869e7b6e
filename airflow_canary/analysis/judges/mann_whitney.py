"""Kayenta-style judge: Mann-Whitney U on per-interval series of both arms, at the end.

Each check's range query gives one value per ``step_seconds`` for each arm over the bake
window (error rate per minute, p99 per minute, ...). At the end of the bake time the judge
runs a two-sided Mann-Whitney U test at ``confidence`` (Kayenta's 98%) and estimates the
effect as the Hodges-Lehmann shift (median of all canary - stable differences) relative to
stable's median. A check FAILs when the difference is significant, in the worse direction,
and larger than ``tolerance`` (the band Kayenta calls the allowed change). It decides only
once: repeating the test at every poll would multiply its false-alarm rate. Fixed limits
(max_rate, max_ms, ...) are also applied, on the whole window, at the same moment.
"""

from __future__ import annotations

import math
import warnings
from typing import TYPE_CHECKING, Any, ClassVar

from airflow_canary.analysis.judges.base import (
    Classification,
    Judge,
    fixed_limit_violations,
    number,
    result,
    traffic_shortfall,
)
from airflow_canary.analysis.observations import Observation
from airflow_canary.analysis.values import AnalysisError, Status

if TYPE_CHECKING:  # numpy and scipy load at the first judgement, not when a DAG file is parsed
    import numpy as np


def hodges_lehmann(canary: np.ndarray, stable: np.ndarray) -> float:
    """Median of all pairwise differences canary - stable: a robust shift estimate."""
    import numpy as np

    return float(np.median(np.subtract.outer(canary, stable)))


def mann_whitney_p(canary: np.ndarray, stable: np.ndarray) -> float:
    """Two-sided p-value; 1.0 when the samples cannot be told apart (e.g. all tied)."""
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.mannwhitneyu(canary, stable, alternative="two-sided").pvalue)
    return 1.0 if math.isnan(p) else p


class MannWhitneyJudge(Judge):
    """Compare the arms' per-interval series once, when the bake time is over."""

    name: ClassVar[str] = "mann_whitney"

    def __init__(
        self,
        confidence: float = 0.98,
        tolerance: float = 0.25,
        step_seconds: float = 60.0,
        min_points: int = 3,
    ) -> None:
        self.confidence = number("confidence", confidence, low=0.5, high=1)
        self.tolerance = number("tolerance", tolerance, low=-1e-12)
        self.series_step_seconds = number("step_seconds", step_seconds, low=0)
        if isinstance(min_points, bool) or not isinstance(min_points, int) or min_points < 2:
            raise AnalysisError(
                f"judge option min_points must be an integer >= 2, got {min_points!r}"
            )
        self.min_points = min_points

    def options(self) -> dict[str, Any]:
        return {
            "confidence": self.confidence,
            "tolerance": self.tolerance,
            "step_seconds": self.series_step_seconds,
            "min_points": self.min_points,
        }

    def wants_series(self, bake_done: bool) -> bool:
        return bake_done

    def classify(self, obs: Observation, state: dict[str, Any]) -> Classification:
        check = obs.check
        label = check.name  # the series are the raw values (e.g. p99), not the SLO share
        if not obs.bake_done:
            return Classification(
                result(obs, Status.INCONCLUSIVE, f"{label}: judged at the end of bake time")
            )
        shortfall = traffic_shortfall(obs)
        c, s = obs.canary.since_start, obs.stable.since_start
        violations = fixed_limit_violations(obs, c, s) + check.value_violations(
            obs.canary.value, obs.stable.value
        )
        import numpy as np

        canary, stable = np.asarray(obs.canary.series), np.asarray(obs.stable.series)
        has_series = obs.has_series
        p_value = statistic = None
        summary = label
        if canary.size >= self.min_points and stable.size >= self.min_points:
            p_value = mann_whitney_p(canary, stable)
            shift = hodges_lehmann(canary, stable)
            scale = abs(float(np.median(stable))) or abs(float(np.mean(stable)))
            relative = (
                shift / scale
                if scale > 0
                else (math.inf if shift > 0 else -math.inf if shift < 0 else 0.0)
            )
            statistic = relative
            worse = relative if check.higher_is_worse else -relative
            summary = (
                f"{label}: canary median {check.format_value(float(np.median(canary)))} vs stable "
                f"{check.format_value(float(np.median(stable)))} over {canary.size} and {stable.size} intervals, "
                f"shift {relative:+.0%} (p={p_value:.2g})"
            )
            if p_value < 1 - self.confidence and worse > self.tolerance:
                violations.append(
                    f"the canary is significantly worse (p={p_value:.2g} < {1 - self.confidence:.2g}) by more "
                    f"than the {self.tolerance:.0%} tolerance"
                )
        elif has_series:
            summary = f"{label}: {canary.size} canary and {stable.size} stable intervals with data, needs {self.min_points}"
        if violations:
            return Classification(
                result(
                    obs,
                    Status.FAIL,
                    f"{summary}; {'; '.join(violations)}",
                    statistic=statistic,
                    p_value=p_value,
                ),
                decisive=True,
            )
        if shortfall:
            return Classification(
                result(
                    obs,
                    Status.INCONCLUSIVE,
                    f"{summary}; {shortfall}",
                    statistic=statistic,
                    p_value=p_value,
                )
            )
        if p_value is None and has_series:
            return Classification(result(obs, Status.INCONCLUSIVE, summary))
        return Classification(
            result(
                obs,
                Status.PASS,
                f"{summary}; within tolerance",
                statistic=statistic,
                p_value=p_value,
            )
        )
