"""Plan-time power: could a step's bake catch a real regression at the traffic it will get?

Before traffic moves, the rollout knows each step's weight and bake time, and Prometheus
knows how many events each check sees per second on the service and how many of them are
bad. From those, this module simulates the sequential judge's own tests, poll by poll, on a
canary whose limit is doubled (the same alternative a PASS verdict's power statement uses),
and reports the probability that the step FAILs it in time. A step below
``THIN_POWER`` is *thin*: its PASS would say little, and the plan says so, naming the
step, the check, the expected canary events and what would help.

Counts are simulated as Poisson per poll for the ratio test (bad events of both arms) and
binomial for the rate tests (the canary's bad among its events), with the judge's
threshold for a step of ``checks`` count checks: one check alone must reach
``checks`` x 1/(alpha x budget_share), so the figure is a slight underestimate when several
checks move together.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from airflow_canary.analysis.checks import Check, LatencyCheck, role
from airflow_canary.analysis.judges.sequential import (
    POWER_FACTOR,
    EvidenceTest,
    SequentialJudge,
    canary_share_null,
    log_mixture_lr,
)
from airflow_canary.analysis.values import AnalysisError, Arm, Arms

#: Below this probability of catching a doubled limit, a step's traffic is called thin.
THIN_POWER = 0.5
DRAWS = 400


@dataclass(frozen=True)
class ServiceRates:
    """What one check sees on the whole service before the rollout (stable takes it all).

    :param events_per_second: the check's events per second (requests; feedback for
        model-quality checks), >= 0
    :param bad_rate: the share of them that are bad (errors, slow, wrong), 0..1
    """

    events_per_second: float
    bad_rate: float


@dataclass(frozen=True)
class StepPower:
    """The probability that one step catches one test's doubled limit within its bake."""

    weight: int
    check: str
    test: str
    canary_events: float
    power: float
    bake_seconds: float

    @property
    def thin(self) -> bool:
        return self.power < THIN_POWER

    def sentence(self) -> str:
        bake = (
            f"{self.bake_seconds:.0f}-second"
            if self.bake_seconds < 120
            else f"{self.bake_seconds / 60:.3g}-minute"
        )
        text = (
            f"step {self.weight}%: {self.check}: about {self.canary_events:,.0f} canary events "
            f"in the {bake} bake; a canary at {POWER_FACTOR:g}x {self.test} would "
            f"be caught with probability {self.power:.2f}"
        )
        if self.thin:
            text += (
                " - too thin to judge this limit: raise the bake time or the step's weight, "
                "or loosen the limit"
            )
        return text


def _tests(
    judge: SequentialJudge, check: Check, rates: ServiceRates, canary: float, stable: float
) -> list[tuple[str, EvidenceTest, float]]:
    """(what, null test at these events, canary bad rate under the doubled limit)."""
    out: list[tuple[str, EvidenceTest, float]] = []
    r = rates.bad_rate
    if isinstance(check, LatencyCheck):
        tail = 1 - check.quantile
        if check.max_ms is not None:
            out.append(
                (
                    f"more than {tail * 100:g}% slower than {check.max_ms:g} ms",
                    EvidenceTest("", 0, canary, tail, "rate"),
                    min(1.0, POWER_FACTOR * tail),
                )
            )
        ratio = judge.latency_ratio(check)
        if ratio is not None:
            p0 = canary_share_null(canary, stable, ratio)
            out.append(
                (
                    f"its latency max_ratio {ratio:g}",
                    EvidenceTest("", 0, 0, p0, "ratio"),
                    min(1.0, POWER_FACTOR * ratio * (r or tail)),
                )
            )
        return out
    limits = check.proportion
    if limits is None:
        return out
    if limits.max_ratio is not None:
        p0 = canary_share_null(canary, stable, limits.max_ratio)
        out.append(
            (
                f"the max_ratio {limits.max_ratio:g} limit",
                EvidenceTest("", 0, 0, p0, "ratio"),
                min(1.0, POWER_FACTOR * limits.max_ratio * r),
            )
        )
    if limits.max_rate is not None:
        out.append(
            (
                f"the max_rate {check.format_rate(limits.max_rate)} limit",
                EvidenceTest("", 0, canary, limits.max_rate, "rate"),
                min(1.0, POWER_FACTOR * limits.max_rate),
            )
        )
    if limits.max_increase is not None:
        p0 = min(1.0, r + limits.max_increase)
        out.append(
            (
                # Model-quality checks call their increase of wrong predictions max_drop.
                f"the {'max_drop' if hasattr(check, 'max_drop') else 'max_increase'} "
                f"{check.format_rate(limits.max_increase)} limit",
                EvidenceTest("", 0, canary, p0, "rate"),
                min(1.0, POWER_FACTOR * p0),
            )
        )
    return out


#: How far back the service's rates are read: the longest window Prometheus has data for.
LOOKBACKS_SECONDS: tuple[float, ...] = (600.0, 300.0, 120.0, 60.0, 30.0)


def service_rates(
    check: Check,
    arms: Arms,
    query: Callable[[str, float], float | None],
    now: float,
    lookbacks_seconds: Sequence[float] = LOOKBACKS_SECONDS,
) -> ServiceRates | None:
    """What ``check`` saw on the stable arm (all of the service, before a rollout) over the
    longest of ``lookbacks_seconds`` that Prometheus has data for, from the check's own
    counters read at ``now - lookback`` and ``now``.

    ``query(promql, at)`` evaluates an instant query at epoch seconds ``at`` (None: no data).
    A latency check judged at the histogram's tail bounds takes ``1 - quantile`` as its bad
    share. Returns None when the counters have no data or did not grow.
    """
    counters = check.counters(arms)
    total_q, bad_q = counters.get(role(Arm.STABLE, "total")), counters.get(role(Arm.STABLE, "bad"))
    if total_q is None:
        return None
    after = query(total_q, now)
    if after is None:
        return None
    for lookback in lookbacks_seconds:
        before = query(total_q, now - lookback)
        if before is None or after <= before:
            continue
        events = after - before
        if bad_q is None:
            if not isinstance(check, LatencyCheck):
                return None
            return ServiceRates(events / lookback, 1 - check.quantile)
        bad_before, bad_after = query(bad_q, now - lookback), query(bad_q, now)
        if bad_before is None or bad_after is None:
            continue
        bad = min(events, max(0.0, bad_after - bad_before))
        return ServiceRates(events / lookback, bad / events)
    return None


def step_power(
    judge: SequentialJudge,
    checks: list[Check],
    rates: dict[str, ServiceRates],
    weight: int,
    bake_seconds: float,
    poll_seconds: float,
    seed: int = 0,
) -> list[StepPower]:
    """Each count check's power at one step: weight in percent (1..100), times in seconds.

    ``rates`` maps a check's name to what it sees on the service; checks without an entry,
    or that are not counts, are left out. Raises AnalysisError for a weight outside 1..99
    (at 100% there is no stable to compare with) or non-positive times.
    """
    import numpy as np

    if not 1 <= weight <= 99:
        raise AnalysisError(f"weight must be 1..99 for a comparison, got {weight!r}")
    if bake_seconds <= 0 or poll_seconds <= 0:
        raise AnalysisError(
            f"bake and poll times must be positive, got {bake_seconds!r} and {poll_seconds!r}"
        )
    counted = [c for c in checks if (c.is_count or isinstance(c, LatencyCheck)) and c.name in rates]
    threshold = judge.threshold + math.log(max(1, len(counted)))
    polls = max(1, int(bake_seconds // poll_seconds))
    rng = np.random.default_rng(seed)
    out = []
    for check in counted:
        service = rates[check.name]
        per_poll = service.events_per_second * poll_seconds
        canary_poll, stable_poll = per_poll * weight / 100, per_poll * (100 - weight) / 100
        canary, stable = canary_poll * polls, stable_poll * polls
        tests = _tests(judge, check, service, canary, stable)
        for what, test, bad_rate in tests:
            if test.kind == "ratio" and bad_rate <= 0:
                continue  # stable shows no bad events: a ratio of them has nothing to scale
            if canary_poll <= 0:
                power = 0.0
            elif test.kind == "ratio":
                kc = rng.poisson(canary_poll * bad_rate, (DRAWS, polls)).cumsum(axis=1)
                ks = rng.poisson(stable_poll * service.bad_rate, (DRAWS, polls)).cumsum(axis=1)
                logs = log_mixture_lr(kc.astype(float), ks.astype(float), test.p0)
                power = float(np.mean(logs.max(axis=1) >= threshold + math.log(len(tests))))
            else:
                n = np.maximum(0, rng.poisson(canary_poll, (DRAWS, polls)))
                k = rng.binomial(n, bad_rate)
                kc, nc = k.cumsum(axis=1).astype(float), n.cumsum(axis=1).astype(float)
                logs = log_mixture_lr(kc, nc - kc, test.p0)
                power = float(np.mean(logs.max(axis=1) >= threshold + math.log(len(tests))))
            out.append(StepPower(weight, check.name, what, canary, power, bake_seconds))
    return out


__all__ = [
    "LOOKBACKS_SECONDS",
    "THIN_POWER",
    "ServiceRates",
    "StepPower",
    "service_rates",
    "step_power",
]
