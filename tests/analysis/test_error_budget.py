"""The sequential judge's error budget: e-values combined over checks, tests only where asked,
latency on bucket shares, dispersion, and what each verdict says."""

from __future__ import annotations

import math
import re

import numpy as np
import pytest

from airflow_canary.analysis import (
    Arms,
    CanaryAnalysis,
    Check,
    ErrorRateCheck,
    LatencyCheck,
    ModelAccuracyCheck,
    PredictionDriftCheck,
    Status,
    Verdict,
)
from airflow_canary.analysis.judges.sequential import SequentialJudge, log_mean_exp

ARMS = Arms("default")
POLL = 15.0
LE = ("25", "50", "100", "250", "500", "+Inf")


def run(
    checks: list[Check],
    per_poll: dict[str, object],
    polls: int = 41,
    options: dict | None = None,
    bake: float = 600,
) -> list[Verdict]:
    """Drive an analysis whose every counter grows by ``per_poll[role]`` each poll.

    Roles are ``<check>/<arm>.<what>``; bucket roles take a dict of per-``le`` increments.
    A callable value gets the poll index.
    """
    analysis = CanaryAnalysis(ARMS, checks, bake_time_seconds=bake, judge_options=options)
    totals: dict[str, object] = {}
    verdicts = []
    for i in range(polls):
        samples: dict[str, object] = {}
        for query in analysis.plan(i * POLL):
            step = per_poll.get(query.id, 0.0)
            step = step(i) if callable(step) else step
            if isinstance(step, dict):
                acc = totals.setdefault(query.id, {})
                assert isinstance(acc, dict)
                for le, v in step.items():
                    acc[le] = acc.get(le, 0.0) + v
                samples[query.id] = dict(acc)
            else:
                totals[query.id] = float(totals.get(query.id, 0.0)) + float(step)  # type: ignore[arg-type]
                samples[query.id] = totals[query.id]
        verdict = analysis.observe(i * POLL, samples)
        verdicts.append(verdict)
        if verdict.final:
            break
    return verdicts


def errors(name: str, canary: tuple[float, float], stable: tuple[float, float]) -> dict:
    return {
        f"{name}/canary.total": canary[0],
        f"{name}/canary.bad": canary[1],
        f"{name}/stable.total": stable[0],
        f"{name}/stable.bad": stable[1],
    }


def test_only_the_limits_given_are_tested() -> None:
    """max_rate alone: a canary at 1.6x stable's rate but under max_rate passes (no silent
    ratio test); a ratio limit on the same data fails."""
    data = errors("error-rate", (1000, 8), (9000, 45))
    (last,) = run([ErrorRateCheck(max_rate=0.02)], data)[-1:]
    assert last.status is Status.PASS, last.reason
    assert "exceed" not in last.reason
    failed = run([ErrorRateCheck(max_ratio=1.1)], data)[-1]
    assert failed.status is Status.FAIL and "exceed 1.1x its traffic share" in failed.reason


def test_checks_share_one_error_budget() -> None:
    """A check whose evidence passes 1/alpha FAILs alone at some poll; beside two checks with
    no evidence the step's e-value is the mean, a third of it, so that poll does not FAIL:
    three checks do not triple the false FAILs."""
    data = errors("error-rate", (250, 5), (2250, 22))
    alone = run([ErrorRateCheck(max_ratio=1.0)], data)
    assert alone[-1].status is Status.FAIL
    quiet = {
        **data,
        **errors("accuracy", (25, 2), (225, 22)),
        **errors("other", (250, 2), (2250, 22)),
    }
    checks = [
        ErrorRateCheck(max_ratio=1.0),
        ErrorRateCheck(name="other", max_ratio=1.0),
        ModelAccuracyCheck(max_drop=0.05),
    ]
    together = run(checks, quiet)
    assert len(together) > len(alone)
    at_fail = together[len(alone) - 1]
    assert at_fail.status is Status.INCONCLUSIVE
    logs = [c.statistic for c in at_fail.checks]
    assert logs[0] is not None and logs[0] >= math.log(100)
    assert log_mean_exp(logs) < math.log(100)  # type: ignore[arg-type]


def test_budget_share_raises_the_threshold_and_the_verdict_says_so() -> None:
    data = errors("error-rate", (250, 25), (2250, 22))
    whole = run([ErrorRateCheck(max_ratio=1.5)], data)[-1]
    third = run([ErrorRateCheck(max_ratio=1.5)], data, options={"budget_share": 1 / 3})[-1]
    assert whole.status is third.status is Status.FAIL
    assert third.polls >= whole.polls
    assert ">= 1/(alpha 0.01 x 0.333 of the rollout's budget) = 300" in third.reason
    assert SequentialJudge(budget_share=0.25).threshold == pytest.approx(math.log(400))


def buckets(total: float, slower: dict[str, float]) -> dict[str, float]:
    """Per-le increments for ``total`` requests with ``slower[le]`` of them above each bound."""
    return {le: total - slower.get(le, 0.0) for le in LE}


def latency(canary: dict[str, float], stable: dict[str, float], n=(250, 2250)) -> dict:
    return {
        "latency/canary.total": n[0],
        "latency/stable.total": n[1],
        "latency/canary.buckets": buckets(n[0], canary),
        "latency/stable.buckets": buckets(n[1], stable),
    }


STABLE_TAIL = {"25": 1200, "50": 1100, "100": 250, "250": 20, "500": 2}


def test_quantile_ratio_works_with_the_default_judge() -> None:
    """LatencyCheck(quantile=0.99, max_ratio=1.5): judged on shares slower than the bounds near
    stable's p99, read from the data; a 1.5x slower canary FAILs, an equal one PASSes."""
    check = LatencyCheck(quantile=0.99, max_ratio=1.5)
    same = {k: v / 9 for k, v in STABLE_TAIL.items()}
    ok = run([check], latency(same, STABLE_TAIL))[-1]
    assert ok.status is Status.PASS, ok.reason
    assert "slower than 100 ms" in ok.reason and "slower than 250 ms" in ok.reason
    # Each line can be read against the check's own limit.
    (line,) = ok.checks
    assert line.message.count(", limit 1.5x stable's share") == 2, line.message
    slow = run([check], latency({"25": 200, "50": 180, "100": 80, "250": 6}, STABLE_TAIL))[-1]
    assert slow.status is Status.FAIL and slow.elapsed_seconds < 300
    assert "1.5x stable's share of requests slower than" in slow.reason


def test_slo_with_other_limits_tests_all_of_them() -> None:
    """slo_ms with max_ms: the absolute limit is tested too, not silently dropped."""
    check = LatencyCheck(quantile=0.99, max_ms=250, slo_ms=250)
    tail = {"25": 150, "50": 120, "100": 30, "250": 5}  # 2% slower than 250 ms
    verdict = run([check], latency(tail, {k: v for k, v in STABLE_TAIL.items()}))[-1]
    assert verdict.status is Status.FAIL
    assert "more than 1% of canary requests slower than 250 ms" in verdict.reason
    (line,) = verdict.checks
    assert "slower than 250 ms: canary 2.0% (30/1,500), limit 1%" in line.message, line.message


def test_no_data_is_never_pass_even_without_a_traffic_minimum() -> None:
    verdict = run([ErrorRateCheck(max_rate=0.05, min_requests=0)], {})[-1]
    assert verdict.status is Status.INCONCLUSIVE and not verdict.final
    assert "canary received no requests" in verdict.reason


def test_bursty_errors_are_weighed_by_their_dispersion() -> None:
    """Errors in clusters: the verdict reports the dispersion it divided the counts by."""
    rng = np.random.default_rng(5)
    c_bursts = rng.poisson(250 * 0.01 / 4, 41) * 4
    s_bursts = rng.poisson(2250 * 0.01 / 4, 41) * 4
    data = {
        **errors("error-rate", (250, 0), (2250, 0)),
        "error-rate/canary.bad": lambda i: c_bursts[i],
        "error-rate/stable.bad": lambda i: s_bursts[i],
    }
    verdict = run([ErrorRateCheck(max_ratio=1.5)], data)[-1]
    assert "dispersion" in verdict.reason
    off = run([ErrorRateCheck(max_ratio=1.5)], data, options={"dispersion": False})[-1]
    assert "dispersion" not in off.reason


def test_a_burst_in_the_first_poll_is_not_judged_as_independent_errors() -> None:
    """A/A at 10% weight: one cluster of 15 errors lands in the canary's first interval.

    Before any per-poll increments exist, phi cannot be estimated; judged as independent
    errors (phi = 1) this first poll reached an e-value of 4.95e4 (a false FAIL); the
    dispersion prior weighs it as bursty until the step's own increments say otherwise.
    """
    data = {
        **errors("error-rate", (250, 0), (2250, 22)),
        "error-rate/canary.bad": lambda i: 15 if i == 1 else (0 if i % 3 else 6),
        "error-rate/stable.bad": lambda i: 9 if i == 1 else (15 if i % 3 else 30),
    }
    verdicts = run([ErrorRateCheck(max_ratio=1.5)], data, polls=3)
    first = verdicts[1]
    assert first.status is Status.INCONCLUSIVE, first.reason
    assert "dispersion 5 (bursty counts weigh 1/5, no per-poll data yet, shrunk toward 5)" in (
        first.reason
    )
    off = run([ErrorRateCheck(max_ratio=1.5)], data, polls=3, options={"dispersion": False})
    assert off[1].status is Status.FAIL


def test_the_dispersion_prior_gives_way_to_independent_data() -> None:
    """Independent errors: the estimate moves from the prior toward 1 as increments accrue."""
    rng = np.random.default_rng(3)
    c_bad = rng.binomial(2500, 0.01, 41)
    s_bad = rng.binomial(22500, 0.01, 41)
    data = {
        **errors("error-rate", (2500, 0), (22500, 0)),
        "error-rate/canary.bad": lambda i: c_bad[i],
        "error-rate/stable.bad": lambda i: s_bad[i],
    }
    verdicts = run([ErrorRateCheck(max_ratio=1.5)], data)
    assert verdicts[-1].status is Status.PASS
    early = [v.reason for v in verdicts[1:3]]
    assert all("dispersion" in reason for reason in early), early
    final = re.search(r"dispersion ([0-9.]+)", verdicts[-1].reason)
    assert final is None or float(final[1]) < 1.3, verdicts[-1].reason


def test_pass_states_what_it_could_have_caught() -> None:
    verdict = run([ErrorRateCheck(max_ratio=1.5)], errors("error-rate", (250, 2), (2250, 22)))[-1]
    assert verdict.status is Status.PASS
    assert (
        "a canary at 2x this ratio limit would have been caught with probability" in verdict.reason
    )


def test_a_pass_on_too_few_events_says_so_and_what_adds_them() -> None:
    # A thin arm: 3 canary requests a poll cannot tell 2x the limit apart.
    thin = run([ErrorRateCheck(max_ratio=1.5)], errors("error-rate", (3, 0), (300, 3)))[-1]
    assert thin.status is Status.PASS
    assert re.search(
        r"caught with probability 0\.[0-4]\d at this traffic \(too few events to "
        r"rely on: a longer bake_time or a higher weight adds them\)",
        thin.reason,
    )
    rich = run([ErrorRateCheck(max_ratio=1.5)], errors("error-rate", (5000, 50), (45000, 450)))[-1]
    assert rich.status is Status.PASS and "too few events" not in rich.reason, rich.reason


def test_every_check_says_how_it_is_judged() -> None:
    judge = SequentialJudge()
    assert "sequential on counts" in judge.judged_as(ErrorRateCheck(max_rate=0.01))
    assert "at most 1.5x stable's share of requests slower" in judge.judged_as(
        LatencyCheck(quantile=0.99, max_ratio=1.5)
    )
    assert "not a count, so judged once on its value" in judge.judged_as(PredictionDriftCheck())


def test_max_increase_does_not_trust_a_low_early_stable_estimate() -> None:
    """Identical 10% wrong predictions; the first poll's stable feedback happens to show 4.6%
    (5/109) and the canary's 18.3% (21/115). Taking 4.6% + max_drop as the null FAILed an
    identical canary at once; stable's upper bound keeps it open."""
    data = {
        **errors("accuracy", (115, 21), (109, 5)),
        "accuracy/canary.bad": lambda i: 21 if i == 1 else 11,
        "accuracy/stable.bad": lambda i: 5 if i == 1 else 11,
    }
    verdicts = run([ModelAccuracyCheck(max_drop=0.02)], data, polls=3)
    assert all(v.status is not Status.FAIL for v in verdicts)
