"""Always-valid sequential judge: e-processes on bad-event counts, one error budget.

**One test.** Canary against stable: given the total number of bad events k = k_c + k_s,
each fell on the canary with probability p. If the canary's bad rate is at most ``ratio``
times stable's, p is at most p0 = ratio*n_c / (ratio*n_c + n_s). The judge tracks the exact
binomial likelihood ratio

    E = integral over p in (p0, 1) of  p^k_c (1-p)^k_s  prior(p) dp  /  p0^k_c (1-p0)^k_s

with a Beta(1, 1/p0) prior truncated to (p0, 1). A mixture of likelihood ratios is a
nonnegative martingale under H0 with E_0 = 1 (Robbins 1970, "Statistical methods related
to the law of the iterated logarithm"; Ramdas, Grünwald, Vovk & Shafer 2023, "Game-theoretic
statistics and safe anytime-valid inference", Statist. Sci. 38(4), section 3): an
*e-process*. An absolute limit (``max_rate``) is the same test on the canary alone (k_c bad
of n_c, p0 = max_rate). Small counts are exact.

**Tests only where asked.** Error and model-quality checks test exactly the limits they
were given (``max_ratio``, ``max_rate``, ``max_increase``). A latency check tests shares of
requests slower than bucket bounds read from the data: ``max_ms`` as an absolute share
(1 - quantile) slower than max_ms; ``max_ratio`` (else the judge's ``tolerance`` when only
``slo_ms`` is set) as a ratio of shares at ``slo_ms``, or at up to three bounds of the
histogram where the pooled share of slower requests is near 1 - quantile.

**One error budget.** A check's e-value is the mean of its tests' e-values, and the step's
e-value the mean over the count checks: a mean of e-processes is an e-process, and it
dominates Bonferroni (one of J e-values >= J/alpha implies the mean >= 1/alpha) (Vovk &
Wang 2021, "E-values: calibration, combination and applications", Ann. Statist. 49(3),
section 4). By Ville's inequality P(sup_t E_t >= 1/a) <= a, so the step FAILs when its
e-value reaches 1/(alpha * budget_share): a rollout whose judged steps have shares summing
to at most 1 rolls back an identical canary with probability at most alpha in all, however
often it is polled (union bound over steps).

**Bursts.** Errors that come in clusters (retries on the same pod, a bad pod failing in
bursts) make counts overdispersed and the binomial evidence too strong. The judge estimates
the dispersion phi from the per-poll increments with Pearson's statistic, phi = X^2/df
(McCullagh & Nelder 1989, "Generalized Linear Models", 2nd ed., section 4.5.2), over the
arm-polls expecting at least 2 bad events, shrunk toward a prior phi0 = 5 worth one degree
of freedom, phi = (X^2 + phi0) / (df + 1), so that the first polls of a step, before any
increments say how bursty the errors are, are not judged as independent errors. It divides
the counts by max(1, phi) (the quasi-likelihood's effective sample size) before the test;
the verdict reports phi when it is above 1. This is an approximation, not an exact
guarantee; see docs/decision-quality.md for what it measures to.

Within one weight step the traffic share n_c/(n_c+n_s) is steady and known to a fraction
of a percent from the counters, which the ratio test assumes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from airflow_canary.analysis.checks import Check, ErrorRateCheck, LatencyCheck
from airflow_canary.analysis.judges.base import (
    Classification,
    Judge,
    group,
    number,
    proportion_text,
    result,
    traffic_shortfall,
    value_text,
)
from airflow_canary.analysis.observations import Counts, Observation, format_le
from airflow_canary.analysis.values import AnalysisError, Status

#: Pearson's dispersion uses arm-polls that expect at least this many bad events; below
#: it X^2 is too skewed to say anything (Cochran's rule of thumb asks for about 5).
DISPERSION_MIN_EXPECTED = 2.0
#: Before a step has per-poll increments to estimate it from, phi is unknown, and a first
#: poll with a burst in the canary would be judged as independent errors. The estimate is
#: shrunk toward DISPERSION_PRIOR as if it came with DISPERSION_PRIOR_DF degrees of freedom:
#: phi = (X^2 + k * phi0) / (df + k), a conjugate-style pseudo-count; phi0 = 5 is the
#: dispersion of errors in geometric clusters of mean 3 (E[S^2]/E[S] = 15/3).
DISPERSION_PRIOR = 5.0
DISPERSION_PRIOR_DF = 1.0
#: Callers' proxy 503s (UH/UF/URX) needed before a canary that received nothing FAILs.
UNREACHABLE_MIN = 5
#: Consecutive poll intervals in which the canary must look unreachable before it FAILs: in
#: one it can be the readiness lag of pods restarting together (the stable pods ready a probe
#: period before the canary's), which ends by the next.
UNREACHABLE_POLLS = 2
#: Alternatives for the power statement: the limit doubled.
POWER_FACTOR = 2.0
#: below this chance of catching a canary at POWER_FACTOR x the limit, a PASS says it rests on
#: too few events
LOW_POWER = 0.5
POWER_DRAWS = 400


def log_mixture_lr(bad: Any, good: Any, p0: float) -> Any:
    """ln of the mixture likelihood ratio for ``bad`` successes of probability > ``p0``.

    ``bad``/``good`` are counts (floats allowed: tempered counts; arrays allowed). The
    prior is Beta(1, 1/p0) truncated to (p0, 1). Returns -inf when the data speak
    overwhelmingly for p <= p0, +inf when p0 is 0 and there is a bad event.
    """
    import numpy as np  # at the first poll, not when a DAG file is parsed
    from scipy import special

    bad_a, good_a = np.asarray(bad, dtype=float), np.asarray(good, dtype=float)
    if np.any(bad_a < 0) or np.any(good_a < 0):
        raise ValueError(f"counts must be non-negative, got {bad} and {good}")
    scalar = bad_a.ndim == 0 and good_a.ndim == 0
    if p0 >= 1:
        out = np.full(np.broadcast(bad_a, good_a).shape, -math.inf)
    elif p0 <= 0:
        out = np.where(bad_a > 0, math.inf, 0.0) + 0 * good_a
    else:
        # The posterior Beta(bad+1, good+1/p0) mass above p0 is the regularized incomplete
        # beta function I_{1-p0}(good+b, bad+a); the prior's is (1-p0)^(1/p0) in closed form.
        a, b = 1.0, 1.0 / p0
        with np.errstate(all="ignore"):
            tail = special.betaincc(bad_a + a, good_a + b, p0)
            numerator = special.betaln(bad_a + a, good_a + b) + np.log(tail)
            prior_mass = special.betaln(a, b) + b * math.log1p(-p0)
            null = bad_a * math.log(p0) + good_a * math.log1p(-p0)
            out = numerator - prior_mass - null
        out = np.where(np.isnan(out), -math.inf, out)
    return float(out) if scalar else out


def canary_share_null(n_canary: float, n_stable: float, ratio: float) -> float:
    """The canary's share of bad events if its rate were ``ratio`` times stable's."""
    return ratio * n_canary / (ratio * n_canary + n_stable)


#: One-sided level of the Clopper-Pearson bound that stands in for stable's rate.
STABLE_BOUND_LEVEL = 0.001


def stable_rate_upper(stable: Counts) -> float:
    """Clopper-Pearson upper bound of stable's bad rate at ``STABLE_BOUND_LEVEL``.

    The exact binomial bound is the (1-level) quantile of Beta(k+1, n-k) (Clopper & Pearson
    1934). It is not time-uniform; stable's counts grow fast, and the bound only widens the
    null, so the test stays conservative in the usual case.
    """
    from scipy import special

    k, n = stable.bad or 0.0, stable.requests
    if n <= 0:
        return 1.0
    if k >= n:
        return 1.0
    return float(special.betaincinv(k + 1, n - k, 1 - STABLE_BOUND_LEVEL))


def log_mean_exp(values: Sequence[float]) -> float:
    """ln of the mean of exp(values): the log of a mean of e-values."""
    if not values:
        return 0.0
    top = max(values)
    if not math.isfinite(top):
        return top
    return top + math.log(sum(math.exp(v - top) for v in values) / len(values))


@dataclass(frozen=True)
class EvidenceTest:
    """One test: ``bad`` of ``bad + other`` events against the null share ``p0``.

    ``kind`` is "ratio" (the canary's share of all bad events) or "rate" (the canary's
    bad share of its own events).
    """

    why: str
    bad: float
    other: float
    p0: float
    kind: str

    def log_e(self, phi: float = 1.0) -> float:
        return float(log_mixture_lr(self.bad / phi, self.other / phi, self.p0))

    def alternative(self) -> float:
        """The null share with the limit doubled: what the power statement is about."""
        if self.kind == "ratio":
            return POWER_FACTOR * self.p0 / (1 + (POWER_FACTOR - 1) * self.p0)
        return min(1.0, POWER_FACTOR * self.p0)


def _fmt_e(log_e: float) -> str:
    if log_e >= 700:
        return "> 1e300"
    return f"{math.exp(log_e):.3g}"


class SequentialJudge(Judge):
    """FAIL as soon as the step's e-value reaches its threshold; PASS after bake time otherwise.

    Options: ``alpha`` (the rollout's error budget), ``tolerance`` (the ratio margin used
    only for a latency check that gives nothing but ``slo_ms``), ``budget_share`` (the
    fraction of alpha this step may spend; ``canary_rollout()`` gives each judged step
    1/steps), ``dispersion`` (estimate and correct for bursty errors).
    """

    name: ClassVar[str] = "sequential"

    def __init__(
        self,
        alpha: float = 0.01,
        tolerance: float = 0.25,
        budget_share: float = 1.0,
        dispersion: bool = True,
    ) -> None:
        self.alpha = number("alpha", alpha, low=0, high=0.5)
        self.tolerance = number("tolerance", tolerance, low=-1e-12)
        self.budget_share = number("budget_share", budget_share, low=0, high=1 + 1e-12)
        if not isinstance(dispersion, bool):
            raise AnalysisError(
                f"judge option dispersion must be true or false, got {dispersion!r}"
            )
        self.dispersion = dispersion
        self.step_alpha = self.alpha * self.budget_share
        self.threshold = math.log(1 / self.step_alpha)

    def options(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "tolerance": self.tolerance,
            "budget_share": self.budget_share,
            "dispersion": self.dispersion,
        }

    def budget_text(self) -> str:
        share = (
            "" if self.budget_share == 1 else f" x {self.budget_share:.3g} of the rollout's budget"
        )
        return f"1/(alpha {self.alpha:g}{share}) = {1 / self.step_alpha:.4g}"

    def validate(self, checks: list[Check]) -> None:
        for check in checks:
            if isinstance(check, LatencyCheck) and check.max_ms is not None:
                if check.max_ms not in check.buckets_ms:
                    raise AnalysisError(
                        f"{check.name}: the sequential judge tests the share of requests slower "
                        f"than max_ms, so it must be a bucket bound, got {check.max_ms!r}; "
                        f"bounds: {', '.join(format_le(b) for b in check.buckets_ms)}"
                    )

    def judged_as(self, check: Check) -> str:
        if isinstance(check, LatencyCheck):
            parts = []
            q = f"{(1 - check.quantile) * 100:g}%"
            if check.max_ms is not None:
                parts.append(f"at most {q} of canary requests slower than {check.max_ms:g} ms")
            ratio = self.latency_ratio(check)
            if ratio is not None:
                where = (
                    f"{check.slo_ms:g} ms"
                    if check.slo_ms is not None
                    else f"the histogram's bounds near stable's p{check.quantile * 100:g}"
                )
                parts.append(f"at {where}, at most {ratio:g}x stable's share of requests slower")
            return f"{check.name}: sequential, {'; '.join(parts)}"
        if check.is_count:
            return f"{check.name}: sequential on counts of bad events, every poll"
        return (
            f"{check.name}: not a count, so judged once on its value when the bake time is "
            "over, outside the sequential error budget"
        )

    # -- tests ---------------------------------------------------------------------------

    def latency_ratio(self, check: LatencyCheck) -> float | None:
        if check.max_ratio is not None:
            return check.max_ratio
        if check.slo_ms is not None and check.max_ms is None:
            return 1 + self.tolerance
        return None

    @staticmethod
    def _ratio_test(why: str, c: Counts, s: Counts, ratio: float) -> EvidenceTest | None:
        kc, ks = c.bad or 0.0, s.bad or 0.0
        if c.requests <= 0 or s.requests <= 0:
            return None
        return EvidenceTest(why, kc, ks, canary_share_null(c.requests, s.requests, ratio), "ratio")

    @staticmethod
    def _rate_test(why: str, c: Counts, p0: float) -> EvidenceTest | None:
        if c.requests <= 0:
            return None
        kc = c.bad or 0.0
        return EvidenceTest(why, kc, max(0.0, c.requests - kc), p0, "rate")

    def _proportion_tests(self, obs: Observation) -> list[EvidenceTest]:
        limits = obs.check.proportion
        assert limits is not None
        fmt = obs.check.format_rate
        c, s = obs.canary.since_start, obs.stable.since_start
        tests: list[EvidenceTest | None] = []
        if limits.max_ratio is not None:
            why = f"the canary's bad events exceed {limits.max_ratio:g}x its traffic share"
            tests.append(self._ratio_test(why, c, s, limits.max_ratio))
        if limits.max_rate is not None:
            tests.append(
                self._rate_test(f"above max_rate {fmt(limits.max_rate)}", c, limits.max_rate)
            )
        if limits.max_increase is not None and s.requests > 0:
            # Stable's rate stands in at its upper confidence bound, not its point estimate:
            # early in a step (or on feedback, a small share of requests) the estimate is
            # noisy, and a low draw would make an identical canary look worse.
            bound = min(1.0, stable_rate_upper(s) + limits.max_increase)
            why = f"more than max_increase {fmt(limits.max_increase)} above stable"
            tests.append(self._rate_test(why, c, bound))
        return [t for t in tests if t is not None]

    def _latency_tests(self, obs: Observation, state: dict[str, Any]) -> list[EvidenceTest] | str:
        """The latency tests at this poll, or why the check cannot be judged (an error)."""
        check = obs.check
        assert isinstance(check, LatencyCheck)
        canary, stable = obs.canary, obs.stable
        if not canary.buckets or not stable.buckets:
            return []
        for label, arm in (("canary", canary), ("stable", stable)):
            bounds = sorted(arm.buckets)
            for what in ("slo_ms", "max_ms"):
                wanted = getattr(check, what)
                if wanted is not None and float(wanted) not in arm.buckets:
                    return (
                        f"{what} {wanted:g} is not a bucket bound of the {label}'s "
                        f"istio_request_duration_milliseconds histogram, so the share of "
                        f"slower requests cannot be read; its bounds are "
                        f"{', '.join(format_le(b) for b in bounds)}: set {what} to one of them"
                    )
        tests: list[EvidenceTest | None] = []
        tail = 1 - check.quantile
        if check.max_ms is not None:
            bound = float(check.max_ms)
            why = f"more than {tail * 100:g}% of canary requests slower than {bound:g} ms"
            tests.append(self._rate_test(why, canary.slower_than(bound), tail))
        ratio = self.latency_ratio(check)
        if ratio is not None:
            for bound in self._tail_bounds(obs, state):
                why = f"{ratio:g}x stable's share of requests slower than {bound:g} ms"
                tests.append(
                    self._ratio_test(
                        why, canary.slower_than(bound), stable.slower_than(bound), ratio
                    )
                )
        return [t for t in tests if t is not None]

    @staticmethod
    def _tail_bounds(obs: Observation, state: dict[str, Any]) -> list[float]:
        """The bounds the ratio test uses, chosen once per step and kept in ``state``.

        ``slo_ms`` when given. Otherwise up to three bounds both arms have where the pooled
        share of slower requests lies in [(1-q)/10, 20(1-q)] (capped at 1/2), nearest to
        1-q on a log scale. Pooled counts say nothing about which arm is slower, so choosing
        bounds from them leaves the test valid.
        """
        check = obs.check
        assert isinstance(check, LatencyCheck)
        if check.slo_ms is not None:
            return [float(check.slo_ms)]
        if "bounds" in state:
            return [float(b) for b in state["bounds"]]
        tail = 1 - check.quantile
        total = obs.canary.since_start.requests + obs.stable.since_start.requests
        if total < 10 / tail:
            return []
        common = sorted(
            b for b in set(obs.canary.buckets) & set(obs.stable.buckets) if math.isfinite(b)
        )
        scored = []
        for bound in common:
            slower = total - obs.canary.buckets[bound] - obs.stable.buckets[bound]
            share = slower / total
            if tail / 10 <= share <= min(0.5, 20 * tail):
                scored.append((abs(math.log(share / tail)), bound))
        chosen = sorted(bound for _, bound in sorted(scored)[:3])
        state["bounds"] = chosen
        return chosen

    # -- dispersion ----------------------------------------------------------------------

    def _dispersion(
        self, primary: EvidenceTest | None, obs: Observation, state: dict[str, Any]
    ) -> float:
        """Pearson's X^2/df from per-poll increments of the primary test's counts."""
        if not self.dispersion or primary is None:
            return 1.0
        if primary.kind == "ratio":
            c_bad, s_bad = primary.bad, primary.other
        else:
            c_bad, s_bad = primary.bad, obs.stable.since_start.bad or 0.0
        now = [obs.canary.since_start.requests, c_bad, obs.stable.since_start.requests, s_bad]
        last = state.get("last_counts", [0.0, 0.0, 0.0, 0.0])
        increments = state.setdefault("increments", [])
        step = [max(0.0, a - b) for a, b in zip(now, last, strict=True)]
        if step[0] > 0 or step[2] > 0:
            increments.append(step)
        state["last_counts"] = now
        x2, df = 0.0, 0
        for n_i, k_i in ((0, 1), (2, 3)):
            rows = [(r[n_i], r[k_i]) for r in increments if r[n_i] > 0]
            n_all, k_all = sum(n for n, _ in rows), sum(k for _, k in rows)
            if n_all <= 0 or k_all <= 0 or k_all >= n_all:
                continue
            rate = k_all / n_all
            used = [(n, k) for n, k in rows if n * rate >= DISPERSION_MIN_EXPECTED]
            if len(used) < 2:
                continue
            x2 += sum((k - n * rate) ** 2 / (n * rate * (1 - rate)) for n, k in used)
            df += len(used) - 1
        k = DISPERSION_PRIOR_DF
        phi = max(1.0, (x2 + k * DISPERSION_PRIOR) / (df + k))
        state["phi"] = phi
        state["phi_df"] = df
        return phi

    # -- classify and combine ------------------------------------------------------------

    def classify(self, obs: Observation, state: dict[str, Any]) -> Classification:
        check = obs.check
        shortfall = traffic_shortfall(obs)
        unreachable = self._unreachable(obs, state)
        if unreachable:
            return Classification(result(obs, Status.FAIL, unreachable), decisive=True)
        if isinstance(check, LatencyCheck):
            tests = self._latency_tests(obs, state)
            if isinstance(tests, str):
                return Classification(
                    result(obs, Status.FAIL, f"{check.name}: {tests}"), decisive=True
                )
            primary_counts = tests[0] if tests else None
            text = self._latency_text(check, obs, tests)
        elif check.proportion is not None:
            tests = self._proportion_tests(obs)
            primary_counts = tests[0] if tests else None
            text = proportion_text(check, obs.canary.since_start, obs.stable.since_start)
        else:
            return self._classify_value(obs, shortfall)
        phi = self._dispersion(primary_counts, obs, state)
        logs = [t.log_e(phi) for t in tests]
        log_e = log_mean_exp(logs)
        state["log_e"] = log_e if math.isfinite(log_e) else (1e300 if log_e > 0 else -1e300)
        state["why"] = max(zip(logs, [t.why for t in tests], strict=True))[1] if tests else ""
        if phi > 1 and (tests and any(t.bad > 0 for t in tests)):
            df = int(state.get("phi_df", 0))
            basis = f"{df} degrees of freedom" if df else "no per-poll data yet"
            shown = f"{phi:.2g}" if phi >= 1.1 else f"{phi:.3g}"  # 1.02, not 1
            text += (
                f"; dispersion {shown} (bursty counts weigh 1/{shown}, {basis}, "
                f"shrunk toward {DISPERSION_PRIOR:g})"
            )
        statistic = log_e if math.isfinite(log_e) else None
        p_value = (
            min(1.0, math.exp(-log_e))
            if math.isfinite(log_e) and log_e > -700
            else (0.0 if log_e > 0 else 1.0)
        )
        evidence = f"e-value {_fmt_e(log_e)}"
        # Evidence for a regression grows the e-value above 1; the step FAILs only at its
        # threshold, so a PASS can carry some evidence that was not enough.
        checks = int(state.get("count_checks", 1))
        if log_e <= 0:
            weighed = "no evidence against the canary"
        elif checks > 1:
            weighed = (
                f"below the {checks / self.step_alpha:.4g} one check needs on its own (the "
                f"step's threshold {self.budget_text()} on the mean of {checks} checks)"
            )
        else:
            weighed = f"below the step's threshold {self.budget_text()}"
        if shortfall:
            message = f"{text}; {evidence}; {shortfall}"
            status = Status.INCONCLUSIVE
        elif not obs.bake_done:
            message = f"{text}; {evidence}, {weighed} so far, baking"
            status = Status.INCONCLUSIVE
        else:
            message = f"{text}; {evidence}, {weighed}"
            power = self._power(tests, phi, checks)
            if power:
                message += f"; {power}"
            status = Status.PASS
        return Classification(result(obs, status, message, statistic=statistic, p_value=p_value))

    def combine(
        self, results: list[Classification], states: dict[str, Any], bake_done: bool
    ) -> list[Classification]:
        counted = [
            (i, states[c.result.name])
            for i, c in enumerate(results)
            if "log_e" in states[c.result.name] and not c.decisive
        ]
        for _, st in counted:
            st["count_checks"] = len(counted)
        if not counted:
            return results
        logs = [float(st["log_e"]) for _, st in counted]
        step_log_e = log_mean_exp(logs)
        if step_log_e < self.threshold:
            return results
        out = list(results)
        top = max(logs)
        combined = (
            f"mean e-value of {len(logs)} check(s) {_fmt_e(step_log_e)} >= {self.budget_text()}"
        )
        for (i, st), log_e in zip(counted, logs, strict=True):
            if log_e < top - math.log(len(logs)) and log_e < self.threshold:
                continue  # this check barely contributed
            old = out[i].result
            why = st.get("why") or "evidence against the canary"
            message = (
                f"{old.message.split('; e-value')[0]}; {why} (e-value {_fmt_e(log_e)}; {combined})"
            )
            out[i] = Classification(
                type(old)(**{**old.__dict__, "status": Status.FAIL, "message": message}),
                decisive=True,
            )
        return out

    # -- special cases -------------------------------------------------------------------

    @staticmethod
    def _unreachable(obs: Observation, state: dict[str, Any]) -> str | None:
        """Callers get proxy 503s while the stable arm is served and the canary receives
        nothing, in ``UNREACHABLE_POLLS`` poll intervals in a row: FAIL now, not at timeout.

        The 503s carry destination labels "unknown" (istio/istio#28387): they may have been
        meant for either arm. An interval counts against the canary only when it added such
        503s while the stable arm was served in it and in the interval before (so it was up
        throughout); the canary received nothing since the step started. In an interval in
        which the stable arm was not served, or only came back (the whole service restarting:
        a node, the data plane), the 503s say nothing about the canary. ``state`` keeps the
        readings of the previous poll, the 503s counted so far and the intervals in a row.
        """
        check = obs.check
        if not isinstance(check, ErrorRateCheck):
            return None
        reading = obs.canary.extra.get("unreachable", 0.0)
        served = obs.stable.since_start.requests
        before, served_before = state.get("unreachable_reading", (0.0, 0.0))
        stable_was_up = bool(state.get("stable_up", True))  # before the first interval: unknown
        stable_up = served > served_before
        state["unreachable_reading"] = (reading, served)
        state["stable_up"] = stable_up
        added = max(0.0, reading - before) if stable_up and stable_was_up else 0.0
        state["unreachable"] = float(state.get("unreachable", 0.0)) + added
        failed = state["unreachable"]
        if added <= 0 or failed < UNREACHABLE_MIN or obs.canary.since_start.requests > 0:
            state["unreachable_polls"] = 0
            return None
        state["unreachable_polls"] = int(state.get("unreachable_polls", 0)) + 1
        if state["unreachable_polls"] < UNREACHABLE_POLLS:
            return None
        return (
            f"{check.describe()}: the canary received no requests (reporter=destination) while "
            f"callers' sidecars answered {group(failed)} requests to services in its namespace "
            "themselves with 5xx and response flags "
            "UH/UF/URX (reporter=source) and the stable arm was served: the canary is "
            "unreachable (no healthy upstream)"
        )

    def _latency_text(
        self, check: LatencyCheck, obs: Observation, tests: list[EvidenceTest]
    ) -> str:
        parts = []
        ratio = self.latency_ratio(check)
        for t in tests:
            if t.kind == "ratio":
                assert ratio is not None  # ratio tests exist only with a ratio limit
                total_c = obs.canary.since_start.requests
                total_s = obs.stable.since_start.requests
                share_c = t.bad / total_c if total_c else None
                share_s = t.other / total_s if total_s else None
                bound = t.why.rsplit("than ", 1)[-1]
                parts.append(
                    f"slower than {bound}: canary {_pct(share_c)} "
                    f"({group(t.bad)}/{group(total_c)}) vs stable {_pct(share_s)} "
                    f"({group(t.other)}/{group(total_s)}), limit {ratio:g}x stable's share"
                )
            else:
                n = t.bad + t.other
                parts.append(
                    f"slower than {t.why.split('slower than ')[-1]}: canary "
                    f"{_pct(t.bad / n if n else None)} ({group(t.bad)}/{group(n)}), "
                    f"limit {(1 - check.quantile) * 100:g}%"
                )
        if not parts:
            arms = (obs.canary.since_start.requests, obs.stable.since_start.requests)
            return (
                f"{check.name}: canary {group(arms[0])} vs stable {group(arms[1])} requests, "
                "no bucket bound chosen yet"
            )
        return f"{check.name}: " + "; ".join(parts)

    def _power(self, tests: list[EvidenceTest], phi: float, checks: int) -> str | None:
        """What a doubled limit would have shown at this traffic, for PASS verdicts.

        Draws the canary's bad count under the alternative (the null share doubled) with the
        observed number of events, and counts how often the test alone would have reached
        ``checks`` times the step threshold (enough for the mean over checks on its own).
        Only the final counts are used, so this understates the sequential test's power.
        """
        if not tests:
            return None
        test = max(tests, key=lambda t: t.bad + t.other)
        events = int(round(test.bad + test.other))
        if events <= 0:
            return None
        import numpy as np

        rng = np.random.default_rng(0)
        p1 = test.alternative()
        bad = rng.binomial(events, p1, POWER_DRAWS).astype(float)
        logs = log_mixture_lr(bad / phi, (events - bad) / phi, test.p0)
        power = float(np.mean(logs >= self.threshold + math.log(max(1, checks))))
        what = "rate" if test.kind == "rate" else "ratio"
        text = (
            f"a canary at {POWER_FACTOR:g}x this {what} limit would have been caught with "
            f"probability {power:.2f} at this traffic"
        )
        if power < LOW_POWER:
            text += " (too few events to rely on: a longer bake_time or a higher weight adds them)"
        return text

    def _classify_value(self, obs: Observation, shortfall: str | None) -> Classification:
        # Quantiles, PSI and custom values are not counts: judged once, on the whole window,
        # when the bake time is over, outside the e-value budget (judged_as says so).
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


def _pct(value: float | None) -> str:
    if value is None:
        return "no data"
    percent = value * 100
    return f"{percent:.1f}%" if percent >= 0.1 or percent == 0 else f"{percent:.3f}%"


__all__ = ["SequentialJudge", "log_mixture_lr", "canary_share_null", "log_mean_exp"]
