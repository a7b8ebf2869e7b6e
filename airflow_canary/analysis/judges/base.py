"""The judge seam: classify one check from an observation; plus the shared data guards."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow_canary.analysis.checks import Check
from airflow_canary.analysis.observations import Counts, Observation
from airflow_canary.analysis.values import AnalysisError, Status
from airflow_canary.analysis.verdict import CheckResult
from airflow_canary.parameters import is_finite_number


@dataclass(frozen=True)
class Classification:
    """A check's result at one poll; ``decisive`` when a FAIL ends the analysis now."""

    result: CheckResult
    decisive: bool = False


class Judge(ABC):
    """Turns an observation of one check into a classification.

    ``state`` is the check's own JSON dict that persists across polls (streaks, running
    maxima); the judge may change it in place.
    """

    name: ClassVar[str]
    #: Trailing window for counters, in seconds; None means since the step started.
    window_seconds: float | None = None

    @abstractmethod
    def options(self) -> dict[str, Any]:
        """The options the judge was built with, so it can be rebuilt from state."""

    def wants_values(self, bake_done: bool) -> bool:
        """Whether this poll needs the checks' value queries (quantiles, PSI, custom)."""
        return bake_done

    def wants_series(self, bake_done: bool) -> bool:
        """Whether this poll needs range queries."""
        return False

    series_step_seconds: float = 60.0

    def validate(self, checks: list[Check]) -> None:
        """Raise AnalysisError when a check cannot be judged this way."""
        return None

    @abstractmethod
    def classify(self, obs: Observation, state: dict[str, Any]) -> Classification:
        """Classify one check at one poll."""

    def combine(
        self, results: list[Classification], states: dict[str, Any], bake_done: bool
    ) -> list[Classification]:
        """The checks' classifications after weighing them together (``states`` by check
        name); judges that decide each check on its own return them unchanged."""
        return results

    def judged_as(self, check: Check) -> str:
        """How this judge decides ``check``, in one sentence, for plans and docs."""
        if check.is_count:
            return f"{check.name}: counts of bad events, judged at every poll"
        return f"{check.name}: its value, judged once when the bake time is over"


def number(option: str, value: object, *, low: float, high: float | None = None) -> float:
    """A judge option that must be a number in ``(low, high)``."""
    if not is_finite_number(value):
        raise AnalysisError(f"judge option {option} must be a finite number, got {value!r}")
    assert isinstance(value, (int, float))
    if value <= low or (high is not None and value >= high):
        bound = f"between {low:g} and {high:g}" if high is not None else f"above {low:g}"
        raise AnalysisError(f"judge option {option} must be {bound}, got {value!r}")
    return float(value)


def group(n: float) -> str:
    return f"{int(round(n)):,}"


def proportion_text(check: Check, canary: Counts, stable: Counts) -> str:
    """``error rate: canary 10.3% (124/1,204) vs stable 1.0% (109/10,933)``."""

    def arm(counts: Counts) -> str:
        if counts.requests <= 0 or counts.bad is None:
            return "no data"
        return f"{check.format_rate(counts.rate)} ({group(counts.bad)}/{group(counts.requests)})"

    return f"{check.describe()}: canary {arm(canary)} vs stable {arm(stable)}"


def value_text(check: Check, canary: float | None, stable: float | None) -> str:
    if stable is None:
        return f"{check.describe()}: canary {check.format_value(canary)}"
    return f"{check.describe()}: canary {check.format_value(canary)} vs stable {check.format_value(stable)}"


def result(
    obs: Observation,
    status: Status,
    message: str,
    *,
    counts: tuple[Counts, Counts] | None = None,
    values: tuple[float | None, float | None] | None = None,
    statistic: float | None = None,
    p_value: float | None = None,
) -> CheckResult:
    canary, stable = counts or (obs.canary.since_start, obs.stable.since_start)
    if values is None:
        values = (
            (canary.rate, stable.rate)
            if obs.check.proportion
            else (obs.canary.value, obs.stable.value)
        )
    return CheckResult(
        name=obs.check.name,
        status=status,
        canary_value=values[0],
        stable_value=values[1],
        canary_requests=int(round(canary.requests)),
        stable_requests=int(round(stable.requests)),
        statistic=statistic,
        p_value=p_value,
        message=message,
        unreachable_requests=int(round(obs.canary.extra.get("unreachable", 0.0))),
    )


def traffic_shortfall(obs: Observation) -> str | None:
    """Why the arms do not yet have enough events to pass, or None when they do."""
    needed = obs.check.min_requests
    noun = (
        "predictions"
        if "prediction" in obs.check.type_name
        else ("feedback events" if obs.check.type_name == "model_accuracy" else "requests")
    )
    missing = []
    counted = obs.check.is_count or needed > 0
    for label, arm in (("canary", obs.canary), ("stable", obs.stable)):
        if not arm.seen and needed > 0:
            missing.append(f"no data for {label} {noun} (the query returned nothing)")
        elif counted and arm.since_start.requests <= 0:
            # No data is never a pass, whatever min_requests says.
            missing.append(f"{label} received no {noun}")
        elif arm.since_start.requests < needed:
            missing.append(
                f"{label} received {group(arm.since_start.requests)} {noun}, needs {needed}"
            )
    return "; ".join(missing) or None


def fixed_limit_violations(obs: Observation, canary: Counts, stable: Counts) -> list[str]:
    """Point-estimate breaches of a proportion check's fixed limits, as sentences."""
    limits = obs.check.proportion
    if limits is None:
        return []
    out: list[str] = []
    rate_c, rate_s = canary.rate, stable.rate
    fmt = obs.check.format_rate
    if rate_c is None:
        return out
    if limits.max_rate is not None and rate_c > limits.max_rate:
        out.append(f"canary {fmt(rate_c)} is above max_rate {fmt(limits.max_rate)}")
    if rate_s is not None:
        if limits.max_increase is not None and rate_c - rate_s > limits.max_increase:
            out.append(
                f"canary exceeds stable by {fmt(rate_c - rate_s)}, above max_increase "
                f"{fmt(limits.max_increase)}"
            )
        if limits.max_ratio is not None and rate_c > 0:
            # With no bad events on stable, count half of one so the ratio stays finite.
            floor = rate_s if rate_s > 0 else 0.5 / max(stable.requests, 1.0)
            if rate_c / floor > limits.max_ratio:
                out.append(
                    f"canary is {rate_c / floor:.2f}x stable, above max_ratio {limits.max_ratio:g}"
                )
    return out
