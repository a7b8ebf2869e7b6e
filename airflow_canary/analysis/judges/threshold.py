"""Flagger-style judge: fixed limits on a trailing window, FAIL after N failing polls in a row."""

from __future__ import annotations

from typing import Any, ClassVar

from airflow_canary.analysis.judges.base import (
    Classification,
    Judge,
    fixed_limit_violations,
    number,
    proportion_text,
    result,
    traffic_shortfall,
    value_text,
)
from airflow_canary.analysis.observations import Observation
from airflow_canary.analysis.values import AnalysisError, Status


class ThresholdJudge(Judge):
    """Compare the last ``window_seconds`` with the limits at every poll.

    Flagger's defaults are a 1-minute interval and a threshold of 5 failed checks; here the
    window is a minute and ``failure_threshold`` consecutive failing polls end the
    analysis. Point estimates on small windows are noisy, which is why a streak is needed.
    """

    name: ClassVar[str] = "threshold"

    def __init__(self, failure_threshold: int = 5, window_seconds: float = 60.0) -> None:
        if (
            isinstance(failure_threshold, bool)
            or not isinstance(failure_threshold, int)
            or failure_threshold < 1
        ):
            raise AnalysisError(
                f"judge option failure_threshold must be an integer >= 1, got {failure_threshold!r}"
            )
        self.failure_threshold = failure_threshold
        self.window_seconds = number("window_seconds", window_seconds, low=0)

    def options(self) -> dict[str, Any]:
        return {"failure_threshold": self.failure_threshold, "window_seconds": self.window_seconds}

    def wants_values(self, bake_done: bool) -> bool:
        return True

    def classify(self, obs: Observation, state: dict[str, Any]) -> Classification:
        check = obs.check
        if check.proportion is not None:
            c, s = obs.canary.window, obs.stable.window
            text = proportion_text(check, c, s)
            if c.requests <= 0:
                state["streak"] = 0
                return Classification(
                    result(
                        obs,
                        Status.INCONCLUSIVE,
                        f"{text}; no canary traffic in the last {self.window_seconds:g}s",
                        counts=(c, s),
                    )
                )
            violations = fixed_limit_violations(obs, c, s)
            violations += check.value_violations(obs.canary.value, obs.stable.value)
        else:
            text = value_text(check, obs.canary.value, obs.stable.value)
            if obs.canary.value is None:
                state["streak"] = 0
                return Classification(
                    result(obs, Status.INCONCLUSIVE, f"{text}; the query returned no data")
                )
            c, s = obs.canary.since_start, obs.stable.since_start
            violations = check.value_violations(obs.canary.value, obs.stable.value)
        if violations:
            state["streak"] = int(state.get("streak", 0)) + 1
            streak = state["streak"]
            message = f"{text}; {'; '.join(violations)} ({streak} of {self.failure_threshold} failing polls in a row)"
            return Classification(
                result(obs, Status.FAIL, message, counts=(c, s), statistic=float(streak)),
                decisive=streak >= self.failure_threshold,
            )
        state["streak"] = 0
        shortfall = traffic_shortfall(obs)
        if shortfall:
            return Classification(
                result(obs, Status.INCONCLUSIVE, f"{text}; {shortfall}", counts=(c, s))
            )
        if not obs.bake_done:
            return Classification(
                result(obs, Status.INCONCLUSIVE, f"{text}; within limits, baking", counts=(c, s))
            )
        return Classification(result(obs, Status.PASS, f"{text}; within limits", counts=(c, s)))
