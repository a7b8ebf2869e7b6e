"""Always-valid sequential judge: a mixture likelihood-ratio test on bad-event proportions.

Canary against stable: given the total number of bad events k = k_c + k_s, each of them
fell on the canary with probability p. If the canary's bad rate is at most ``ratio`` times
stable's (``ratio`` = the check's max_ratio, else 1 + tolerance), p is at most
p0 = ratio*n_c / (ratio*n_c + n_s). The judge tracks the exact binomial likelihood ratio

    LR = integral over p in (p0, 1) of  p^k_c (1-p)^k_s  prior(p) dp  /  p0^k_c (1-p0)^k_s

with a Beta(1, 1/p0) prior truncated to (p0, 1) (mass a few times above p0, a tail to 1).
Under H0, LR is a nonnegative supermartingale in the sequence of bad events, so by
Ville's inequality P(LR ever reaches 1/alpha) <= alpha: the judge may look at every poll
and FAIL the moment LR >= 1/alpha. An absolute ``max_rate`` uses the same test on the
canary alone (k_c bad of n_c, p0 = max_rate). Small counts are handled exactly; a normal
approximation at 1% traffic (one or two errors a minute) would be far too conservative.

The traffic share n_c/(n_c+n_s) is taken from the counters; within one weight step it is
steady and known to a fraction of a percent, which is what the test assumes.
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

from airflow_canary.analysis.checks import Check, LatencyCheck
from airflow_canary.analysis.judges.base import (
    Classification,
    Judge,
    number,
    proportion_text,
    result,
    traffic_shortfall,
    value_text,
)
from airflow_canary.analysis.observations import Observation
from airflow_canary.analysis.values import AnalysisError, Status


def log_mixture_lr(bad: float, good: float, p0: float) -> float:
    """ln of the mixture likelihood ratio for ``bad`` successes of probability > ``p0``.

    The prior is Beta(1, 1/p0) truncated to (p0, 1). Returns -inf when the data speak
    overwhelmingly for p <= p0 (the tail probability underflows), +inf when p0 is 0 and
    there is a bad event.
    """
    if bad < 0 or good < 0:
        raise ValueError(f"counts must be non-negative, got {bad} and {good}")
    if p0 >= 1:
        return -math.inf
    if p0 <= 0:
        return math.inf if bad > 0 else 0.0
    a, b = 1.0, 1.0 / p0
    from scipy import special, stats  # at the first poll, not when a DAG file is parsed

    numerator = special.betaln(bad + a, good + b) + stats.beta.logsf(p0, bad + a, good + b)
    prior_mass = special.betaln(a, b) + stats.beta.logsf(p0, a, b)
    null = bad * math.log(p0) + good * math.log1p(-p0)
    value = float(numerator - prior_mass - null)
    return value if not math.isnan(value) else -math.inf


def canary_share_null(n_canary: float, n_stable: float, ratio: float) -> float:
    """The canary's share of bad events if its rate were ``ratio`` times stable's."""
    return ratio * n_canary / (ratio * n_canary + n_stable)


class SequentialJudge(Judge):
    """FAIL as soon as an always-valid test rejects; PASS after bake time otherwise."""

    name: ClassVar[str] = "sequential"

    def __init__(self, alpha: float = 0.01, tolerance: float = 0.25) -> None:
        self.alpha = number("alpha", alpha, low=0, high=0.5)
        self.tolerance = number("tolerance", tolerance, low=-1e-12)
        self.threshold = math.log(1 / self.alpha)

    def options(self) -> dict[str, Any]:
        return {"alpha": self.alpha, "tolerance": self.tolerance}

    def validate(self, checks: list[Check]) -> None:
        for check in checks:
            if isinstance(check, LatencyCheck) and check.effective_slo_ms is None:
                raise AnalysisError(
                    f"{check.name}: the sequential judge compares the share of requests "
                    "slower than an SLO; set slo_ms (or max_ms) to a bucket bound, e.g. 250"
                )

    def _tests(self, obs: Observation) -> list[tuple[str, float]]:
        """(name, ln LR) for each test that applies to a proportion check."""
        limits = obs.check.proportion
        assert limits is not None
        c, s = obs.canary.since_start, obs.stable.since_start
        kc, nc = c.bad or 0.0, c.requests
        ks, ns = s.bad or 0.0, s.requests
        out = []
        if nc > 0 and ns > 0 and kc + ks > 0:
            ratio = limits.max_ratio if limits.max_ratio is not None else 1 + self.tolerance
            p0 = canary_share_null(nc, ns, ratio)
            out.append(
                (
                    f"the canary's bad events exceed {ratio:g}x its traffic share",
                    log_mixture_lr(kc, ks, p0),
                )
            )
        if nc > 0 and limits.max_rate is not None:
            out.append(
                (
                    f"above max_rate {obs.check.format_rate(limits.max_rate)}",
                    log_mixture_lr(kc, nc - kc, limits.max_rate),
                )
            )
        if nc > 0 and ns > 0 and limits.max_increase is not None:
            # Stable's rate is measured on ~all traffic, so its point estimate stands in for it.
            bound = min(1.0, (ks / ns) + limits.max_increase)
            out.append(
                (
                    f"more than max_increase {obs.check.format_rate(limits.max_increase)} above stable",
                    log_mixture_lr(kc, nc - kc, bound),
                )
            )
        return out

    def classify(self, obs: Observation, state: dict[str, Any]) -> Classification:
        check = obs.check
        shortfall = traffic_shortfall(obs)
        if check.proportion is None:
            return self._classify_value(obs, shortfall)
        c, s = obs.canary.since_start, obs.stable.since_start
        text = proportion_text(check, c, s)
        tests = self._tests(obs)
        best = max((lr for _, lr in tests), default=0.0)
        state["max_log_lr"] = max(
            float(state.get("max_log_lr", 0.0)),
            best if math.isfinite(best) else (1e300 if best > 0 else 0.0),
        )
        p_value = min(1.0, math.exp(-state["max_log_lr"])) if state["max_log_lr"] < 700 else 0.0
        statistic = best if math.isfinite(best) else None
        rejected = [(why, lr) for why, lr in tests if lr >= self.threshold]
        if rejected:
            why = rejected[0][0]
            p_now = math.exp(-rejected[0][1]) if math.isfinite(rejected[0][1]) else 0.0
            message = f"{text}; {why} (p={p_now:.2g} < alpha {self.alpha:g})"
            return Classification(
                result(obs, Status.FAIL, message, statistic=statistic, p_value=p_now), decisive=True
            )
        if shortfall:
            return Classification(
                result(
                    obs,
                    Status.INCONCLUSIVE,
                    f"{text}; {shortfall}",
                    statistic=statistic,
                    p_value=p_value,
                )
            )
        if not obs.bake_done:
            message = f"{text}; no evidence against the canary yet (p={p_value:.2g}), baking"
            return Classification(
                result(obs, Status.INCONCLUSIVE, message, statistic=statistic, p_value=p_value)
            )
        message = (
            f"{text}; no evidence against the canary (p={p_value:.2g} >= alpha {self.alpha:g})"
        )
        return Classification(
            result(obs, Status.PASS, message, statistic=statistic, p_value=p_value)
        )

    def _classify_value(self, obs: Observation, shortfall: str | None) -> Classification:
        # Quantiles, PSI and custom values have no always-valid test here: judged once,
        # on the whole window, when the bake time is over.
        text = value_text(obs.check, obs.canary.value, obs.stable.value)
        if not obs.bake_done:
            return Classification(
                result(
                    obs,
                    Status.INCONCLUSIVE,
                    f"{obs.check.describe()}: judged at the end of bake time",
                )
            )
        if shortfall:
            return Classification(result(obs, Status.INCONCLUSIVE, f"{text}; {shortfall}"))
        if obs.canary.value is None:
            return Classification(
                result(obs, Status.INCONCLUSIVE, f"{text}; the query returned no data")
            )
        violations = obs.check.value_violations(obs.canary.value, obs.stable.value)
        if violations:
            return Classification(
                result(obs, Status.FAIL, f"{text}; {'; '.join(violations)}"), decisive=True
            )
        return Classification(result(obs, Status.PASS, f"{text}; within limits"))


__all__ = ["SequentialJudge", "log_mixture_lr", "canary_share_null"]
