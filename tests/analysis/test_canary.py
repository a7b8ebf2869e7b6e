"""CanaryAnalysis driven poll by poll with crafted and simulated counters."""

from __future__ import annotations

import json
import math
from collections.abc import Callable

import numpy as np
import pytest

from airflow_canary.analysis import (
    AnalysisError,
    Arms,
    CanaryAnalysis,
    ErrorRateCheck,
    LatencyCheck,
    PredictionDriftCheck,
    PromQLCheck,
    Query,
    QueryFailure,
    Status,
    Verdict,
    make_judge,
)

ARMS = Arms("default")
POLL = 15.0


class Counters:
    """Cumulative counters of one check's arms, as Prometheus would return them."""

    def __init__(self) -> None:
        self.values: dict[str, float] = {
            "canary.total": 0,
            "stable.total": 0,
            "canary.bad": 0,
            "stable.bad": 0,
        }

    def add(self, canary: tuple[float, float], stable: tuple[float, float]) -> None:
        self.values["canary.total"] += canary[0]
        self.values["canary.bad"] += canary[1]
        self.values["stable.total"] += stable[0]
        self.values["stable.bad"] += stable[1]


def answer(
    queries: list[Query], counters: dict[str, float], extra: dict[str, object] | None = None
):
    samples: dict[str, object] = {}
    for q in queries:
        role = q.id.split("/", 1)[1]
        if extra and q.id in extra:
            samples[q.id] = extra[q.id]
        elif role in counters:
            samples[q.id] = counters[role]
        else:
            samples[q.id] = None
    return samples


def _plan_after_baseline(analysis: CanaryAnalysis) -> list[Query]:
    """The queries of the poll after the baseline (the baseline also probes every query once)."""
    analysis.observe(0, answer(analysis.plan(0), Counters().values))
    return analysis.plan(POLL)


def drive(
    analysis: CanaryAnalysis,
    step: Callable[[int, Counters], None],
    polls: int = 41,
    extra: Callable[[int], dict[str, object]] | None = None,
) -> list[Verdict]:
    counters = Counters()
    verdicts = []
    for i in range(polls):
        elapsed = i * POLL
        queries = analysis.plan(elapsed)
        verdict = analysis.observe(
            elapsed, answer(queries, counters.values, extra(i) if extra else None)
        )
        verdicts.append(verdict)
        # The state must survive JSON between polls, as it does in a deferred trigger.
        analysis = CanaryAnalysis(
            analysis.arms,
            analysis.checks,
            analysis.judge.name,
            analysis.bake_time_seconds,
            analysis.poll_interval_seconds,
            analysis.max_inconclusive_polls,
            analysis.judge.options(),
            json.loads(json.dumps(analysis.state())),
        )
        if verdict.final:
            break
        step(i, counters)
    return verdicts


def steady(
    canary: tuple[float, float], stable: tuple[float, float]
) -> Callable[[int, Counters], None]:
    return lambda i, c: c.add(canary, stable)


def error_analysis(judge: str = "sequential", **kwargs) -> CanaryAnalysis:
    return CanaryAnalysis(
        ARMS,
        [ErrorRateCheck(max_ratio=2.0, max_rate=0.05)],
        judge=judge,
        bake_time_seconds=300,
        **kwargs,
    )


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"checks": []}, "at least one check"),
        (
            {"bake_time_seconds": 10, "poll_interval_seconds": 15},
            r"bake_time_seconds \(10\) must be at least poll_interval_seconds \(15\)",
        ),
        (
            {"bake_time_seconds": -1},
            "bake_time_seconds must be a positive number of seconds, got -1",
        ),
        (
            {"checks": [ErrorRateCheck(max_rate=0.1), ErrorRateCheck(max_ratio=2)]},
            "duplicate check name 'error-rate'",
        ),
        ({"max_inconclusive_polls": 0}, "max_inconclusive_polls must be an integer >= 1, got 0"),
        (
            {"judge": "bayes"},
            "unknown judge 'bayes'; known judges: mann_whitney, sequential, threshold",
        ),
        (
            {"judge_options": {"alpah": 0.1}},
            r"unknown option\(s\) \['alpah'\] for judge 'sequential'",
        ),
        ({"judge_options": {"alpha": 2}}, "alpha must be between 0 and 0.5, got 2"),
        (
            {"checks": [LatencyCheck(max_ms=300)]},
            "max_ms, so it must be a bucket bound, got 300; bounds: 0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500",
        ),
        ({"checks": ["error-rate"]}, "checks must be Check values"),
    ],
)
def test_bad_analysis_rejected_at_construction(kwargs, match) -> None:
    params = {"arms": ARMS, "checks": [ErrorRateCheck(max_rate=0.01)], **kwargs}
    with pytest.raises(AnalysisError, match=match):
        CanaryAnalysis(**params)


def test_make_judge_lists_known_judges() -> None:
    assert make_judge().name == "sequential"
    with pytest.raises(AnalysisError, match="known judges: mann_whitney, sequential, threshold"):
        make_judge("kayenta")


def test_state_from_another_judge_is_rejected() -> None:
    state = error_analysis().state()
    with pytest.raises(AnalysisError, match="state was saved by judge 'sequential'"):
        error_analysis("threshold", state=state)


# -- the poll loop ----------------------------------------------------------------------


def test_first_poll_takes_the_baseline_and_later_polls_measure_from_it() -> None:
    analysis = error_analysis()
    first = analysis.plan(0)
    counters = {
        "error-rate/canary.total",
        "error-rate/canary.bad",
        "error-rate/stable.total",
        "error-rate/stable.bad",
        "error-rate/canary.unreachable",
    }
    assert counters <= {q.id for q in first}
    # the rest are one-off probes: PromQL that Prometheus rejects fails the step at once
    assert all(q.id in counters or q.id.endswith((".value", ".series")) for q in first)
    # Counters already high at the step start (previous steps) must not count.
    before = {"canary.total": 5000, "canary.bad": 900, "stable.total": 10**6, "stable.bad": 10**4}
    v0 = analysis.observe(0, answer(first, before))
    assert v0.status is Status.INCONCLUSIVE and not v0.final and "baseline" in v0.reason
    after = {
        "canary.total": 5100,
        "canary.bad": 901,
        "stable.total": 10**6 + 9900,
        "stable.bad": 10**4 + 99,
    }
    v1 = analysis.observe(15, answer(analysis.plan(15), after))
    (result,) = v1.checks
    assert (result.canary_requests, result.stable_requests) == (100, 9900)
    assert result.canary_value == pytest.approx(0.01)


def test_good_canary_passes_only_after_bake_time() -> None:
    verdicts = drive(error_analysis(), steady((250, 2), (2250, 22)))
    assert [v.final for v in verdicts].index(True) == len(verdicts) - 1
    final = verdicts[-1]
    assert final.status is Status.PASS and final.elapsed_seconds >= 300
    assert all(v.status is Status.INCONCLUSIVE for v in verdicts[:-1])
    assert "no evidence against the canary" in final.checks[0].message


def test_bad_canary_fails_early_with_numbers_in_the_message() -> None:
    verdicts = drive(error_analysis(), steady((250, 25), (2250, 22)))
    final = verdicts[-1]
    assert final.status is Status.FAIL and final.final and final.elapsed_seconds < 300
    message = final.checks[0].message
    assert message.startswith(
        "error rate (HTTP 5xx or gRPC status 2, 4, 12, 13, 14, 15): canary 10.0% ("
    )
    assert "vs stable 1.0% (" in message and "exceed 2x its traffic share (e-value " in message
    assert ">= 1/(alpha 0.01) = 100" in message
    assert final.checks[0].p_value is not None and final.checks[0].p_value < 0.01


def test_canary_better_than_stable_passes() -> None:
    verdicts = drive(error_analysis(), steady((250, 0), (2250, 45)))
    assert verdicts[-1].status is Status.PASS


def test_too_little_canary_traffic_is_never_pass() -> None:
    verdicts = drive(error_analysis(), steady((1, 0), (2500, 25)))
    last = verdicts[-1]
    assert last.status is Status.INCONCLUSIVE and not last.final
    assert "canary received 40 requests, needs 100" in last.checks[0].message
    assert last.reason.startswith("bake time over, not enough evidence to pass")


def test_missing_canary_series_is_never_pass() -> None:
    analysis = CanaryAnalysis(ARMS, [ErrorRateCheck(max_rate=0.05)], bake_time_seconds=60)
    for i in range(8):
        samples = {
            q.id: (None if "canary" in q.id else 1000.0 * i) for q in analysis.plan(i * POLL)
        }
        verdict = analysis.observe(i * POLL, samples)
    assert verdict.status is Status.INCONCLUSIVE and not verdict.final
    assert "no data for canary requests" in verdict.checks[0].message


def test_query_failures_in_a_row_give_a_final_fail() -> None:
    analysis = error_analysis(max_inconclusive_polls=3)
    analysis.observe(0, answer(analysis.plan(0), Counters().values))
    verdicts = []
    for i in range(1, 4):
        samples = {q.id: QueryFailure("HTTP 503 from Prometheus") for q in analysis.plan(i * POLL)}
        verdicts.append(analysis.observe(i * POLL, samples))
    assert [v.status for v in verdicts] == [Status.INCONCLUSIVE, Status.INCONCLUSIVE, Status.FAIL]
    assert not verdicts[0].final and verdicts[-1].final
    assert verdicts[-1].reason.startswith("Prometheus failed 3 polls in a row: ")
    assert "HTTP 503 from Prometheus" in verdicts[-1].reason
    assert analysis.plan(100) == []


def test_a_successful_poll_resets_the_failure_streak() -> None:
    analysis = error_analysis(max_inconclusive_polls=2)
    counters = Counters()
    analysis.observe(0, answer(analysis.plan(0), counters.values))
    fail = {q.id: QueryFailure("timeout") for q in analysis.plan(15)}
    assert analysis.observe(15, fail).status is Status.INCONCLUSIVE
    assert (
        analysis.observe(30, answer(analysis.plan(30), counters.values)).status
        is Status.INCONCLUSIVE
    )
    assert not analysis.observe(45, fail).final


def test_missing_sample_counts_as_failure() -> None:
    analysis = error_analysis(max_inconclusive_polls=1)
    verdict = analysis.observe(0, {})
    assert verdict.final and "no sample for query error-rate/" in verdict.reason


def test_nan_and_negative_samples_are_no_data_not_pass() -> None:
    analysis = CanaryAnalysis(ARMS, [ErrorRateCheck(max_rate=0.05)], bake_time_seconds=30)
    analysis.observe(0, {q.id: 0.0 for q in analysis.plan(0)})
    for i in range(1, 5):
        verdict = analysis.observe(
            i * POLL,
            {q.id: (math.nan if "canary" in q.id else -5.0) for q in analysis.plan(i * POLL)},
        )
    assert verdict.status is Status.INCONCLUSIVE


def test_counter_reset_does_not_invent_traffic() -> None:
    def step(i: int, c: Counters) -> None:
        c.add((250, 2), (2250, 22))
        if i == 5:  # a canary pod restarted: its counters started again
            c.values["canary.total"] = 30
            c.values["canary.bad"] = 0

    verdicts = drive(error_analysis(), step)
    final = verdicts[-1]
    assert final.status is Status.PASS
    assert final.checks[0].canary_requests < 20 * 250


def test_callers_503s_while_neither_arm_is_served_say_nothing_about_the_canary() -> None:
    """The whole service restarting (a node, the data plane): callers' sidecars answer 503 UH
    for every request, whose destination labels are "unknown" (istio/istio#28387), while
    neither arm receives any. Those 503s are no evidence against the canary; once the stable
    arm is served again and the canary still receives nothing, they are."""
    analysis = error_analysis()
    values = {"canary.total": 0.0, "canary.bad": 0.0, "stable.total": 900.0, "stable.bad": 0.0}
    values["canary.unreachable"] = 0.0
    analysis.observe(0, answer(analysis.plan(0), values))
    for i in range(1, 4):  # both arms down: 1,000 503s per poll, nothing served
        values["canary.unreachable"] += 1_000
        down = analysis.observe(i * POLL, answer(analysis.plan(i * POLL), values))
        assert down.status is Status.INCONCLUSIVE and not down.final, down.reason
    # The stable pods are back; the canary's are not. The interval they came back in also
    # holds the outage's 503s: it does not count, nor does the next one alone (a readiness lag).
    for i in (4, 5):
        values["stable.total"] += 800
        values["canary.unreachable"] += 200
        lag = analysis.observe(i * POLL, answer(analysis.plan(i * POLL), values))
        assert lag.status is Status.INCONCLUSIVE, lag.reason
    values["stable.total"] += 800
    values["canary.unreachable"] += 200
    up = analysis.observe(6 * POLL, answer(analysis.plan(6 * POLL), values))
    assert up.status is Status.FAIL and up.final
    assert "answered 400 requests" in up.reason, up.reason
    assert "the stable arm was served: the canary is unreachable" in up.reason


def test_a_canary_that_comes_back_a_poll_after_the_stable_arm_is_not_unreachable() -> None:
    """Both arms restart together and the stable pods are ready a poll before the canary's:
    the 503s of the outage are not counted, the lag is one poll, and the step goes on to judge
    the canary on what both arms serve afterwards."""
    analysis = error_analysis()
    values = {"canary.total": 0.0, "canary.bad": 0.0, "stable.total": 900.0, "stable.bad": 0.0}
    values["canary.unreachable"] = 0.0
    analysis.observe(0, answer(analysis.plan(0), values))
    values["canary.unreachable"] += 5_000  # both arms down
    analysis.observe(POLL, answer(analysis.plan(POLL), values))
    values["canary.unreachable"] += 250  # the stable arm is back, the canary a poll later
    values["stable.total"] += 2_250
    lag = analysis.observe(2 * POLL, answer(analysis.plan(2 * POLL), values))
    assert lag.status is Status.INCONCLUSIVE, lag.reason
    verdict = None
    for i in range(3, 30):
        values["canary.total"] += 250
        values["stable.total"] += 2_250
        verdict = analysis.observe(i * POLL, answer(analysis.plan(i * POLL), values))
        assert verdict.status is not Status.FAIL, verdict.reason
        if verdict.final:
            break
    assert verdict is not None and verdict.status is Status.PASS, verdict.reason


def test_a_poll_without_new_503s_is_no_evidence_of_an_unreachable_canary() -> None:
    """A canary at 1% may get no request in a poll by chance: without new callers' 503s in that
    interval, the 503s of earlier polls do not make it unreachable; with them at two polls in a
    row while the stable arm is served, it is."""
    analysis = error_analysis()
    values = {"canary.total": 0.0, "canary.bad": 0.0, "stable.total": 900.0, "stable.bad": 0.0}
    values["canary.unreachable"] = 0.0
    analysis.observe(0, answer(analysis.plan(0), values))
    values["stable.total"] += 2_000
    values["canary.unreachable"] += 20  # counted: the stable arm was up throughout
    one = analysis.observe(POLL, answer(analysis.plan(POLL), values))
    assert one.status is Status.INCONCLUSIVE, one.reason
    values["stable.total"] += 2_000  # no new 503s, and the canary got nothing by chance
    quiet = analysis.observe(2 * POLL, answer(analysis.plan(2 * POLL), values))
    assert quiet.status is Status.INCONCLUSIVE, quiet.reason
    for i in (3, 4):
        values["stable.total"] += 2_000
        values["canary.unreachable"] += 20
        verdict = analysis.observe(i * POLL, answer(analysis.plan(i * POLL), values))
    assert verdict.status is Status.FAIL and "answered 60 requests" in verdict.reason


def test_a_baseline_in_a_prometheus_gap_waits_for_data_instead_of_counting_history() -> None:
    """Pins Prometheus's answers in a gap of its history (e.g. while it restarted): a plain
    ``sum(...)`` has no series and is absent, ``sum(...) or vector(0)`` reads 0. Such a poll is
    no baseline; the first poll with data is, so the stable arm's 29,800 requests from before
    the step never enter the comparison."""
    analysis = error_analysis()

    def in_the_gap(queries: list[Query]) -> dict[str, object]:
        return {q.id: (0.0 if "vector(0)" in q.promql else None) for q in queries}

    first = analysis.observe(0, in_the_gap(analysis.plan(0)))
    assert first.status is Status.INCONCLUSIVE and not first.final
    assert first.reason.startswith("no baseline yet: Prometheus has no sample above zero")
    history = {
        "canary.total": 0.0,
        "canary.bad": 0.0,
        "stable.total": 29_800.0,
        "stable.bad": 298.0,
    }
    second = analysis.observe(POLL, answer(analysis.plan(POLL), history))
    assert second.reason == "took the baseline readings of the step; the comparison starts now"
    step = dict(history, **{"canary.total": 250.0, "stable.total": 29_800.0 + 2_250.0})
    third = analysis.observe(2 * POLL, answer(analysis.plan(2 * POLL), step))
    assert third.checks[0].canary_requests == 250
    assert "vs stable 0.0% (0/2,250)" in third.checks[0].message, third.checks[0].message


def test_a_counter_absent_at_the_baseline_beside_one_with_data_counts_from_zero() -> None:
    """The canary's counters are born with its first request (Istio creates a series on its
    first increment), so an absent canary series next to a stable one with data is zero."""
    analysis = error_analysis()
    baseline = {"stable.total": 29_800.0, "stable.bad": 298.0}
    first = analysis.observe(0, answer(analysis.plan(0), baseline))
    assert first.reason == "took the baseline readings of the step; the comparison starts now"
    step = dict(baseline, **{"canary.total": 250.0, "stable.total": 29_800.0 + 2_250.0})
    second = analysis.observe(POLL, answer(analysis.plan(POLL), step))
    assert second.checks[0].canary_requests == 250


def test_a_bad_series_back_from_a_scrape_gap_is_not_counted_as_new_errors() -> None:
    """The canary failed 1,328 requests in an earlier rollout. Its 5xx series was missing at
    the step's baseline (its pod not scraped at that instant), and ``or vector(0)`` read 0. A
    poll later it is back, while the canary served 250 requests: a rise above the requests'
    rise is a series back with its history, and adds nothing; later errors count."""
    analysis = error_analysis()
    values = {"canary.total": 9_000.0, "stable.total": 80_000.0, "stable.bad": 80.0}
    analysis.observe(0, answer(analysis.plan(0), {**values, "canary.bad": 0.0}))
    values.update({"canary.total": 9_250.0, "stable.total": 82_250.0, "stable.bad": 82.0})
    back = analysis.observe(POLL, answer(analysis.plan(POLL), {**values, "canary.bad": 1_328.0}))
    assert back.status is not Status.FAIL, back.reason
    assert "canary 0.0% (0/250)" in back.checks[0].message, back.checks[0].message
    values.update({"canary.total": 9_500.0, "stable.total": 84_500.0, "stable.bad": 84.0})
    later = analysis.observe(
        2 * POLL, answer(analysis.plan(2 * POLL), {**values, "canary.bad": 1_331.0})
    )
    assert "canary 0.6% (3/500)" in later.checks[0].message, later.checks[0].message


def test_huge_counts_do_not_break_the_judge() -> None:
    verdicts = drive(error_analysis(), steady((1e10, 1e8), (9e11, 9e9)))
    assert verdicts[-1].status is Status.PASS
    verdicts = drive(error_analysis(), steady((1e10, 3e8), (9e11, 9e9)))
    assert verdicts[-1].status is Status.FAIL and verdicts[-1].elapsed_seconds == 15


def test_verdict_round_trips_through_json() -> None:
    final = drive(error_analysis(), steady((250, 25), (2250, 22)))[-1]
    data = json.loads(json.dumps(final.to_dict()))
    assert data["verdict"] == "FAIL" and data["judge"] == "sequential"
    assert set(data["checks"][0]) == {
        "name", "status", "canary_value", "stable_value", "canary_requests",
        "stable_requests", "statistic", "p_value", "message", "unreachable_requests",
    }  # fmt: skip
    assert Verdict.from_dict(data) == final


def test_final_verdict_is_sticky_across_a_resume() -> None:
    analysis = error_analysis()
    counters = Counters()
    for i in range(41):
        verdict = analysis.observe(i * POLL, answer(analysis.plan(i * POLL), counters.values))
        if verdict.final:
            break
        counters.add((250, 25), (2250, 22))
    assert verdict.status is Status.FAIL
    state = json.loads(json.dumps(analysis.state()))
    resumed = CanaryAnalysis(ARMS, analysis.checks, state=state)
    assert resumed.plan(999) == []
    assert resumed.observe(999, {}) == verdict


# -- threshold and Mann-Whitney ---------------------------------------------------------


def test_threshold_fails_after_consecutive_failing_polls() -> None:
    analysis = error_analysis(
        "threshold", judge_options={"failure_threshold": 3, "window_seconds": 60}
    )
    verdicts = drive(analysis, steady((250, 25), (2250, 22)))
    final = verdicts[-1]
    assert final.status is Status.FAIL
    assert len(verdicts) == 4  # baseline poll + 3 failing polls
    assert "(3 of 3 failing polls in a row)" in final.checks[0].message


def test_threshold_passes_a_good_canary_after_bake() -> None:
    verdicts = drive(error_analysis("threshold"), steady((250, 2), (2250, 22)))
    assert verdicts[-1].status is Status.PASS and verdicts[-1].elapsed_seconds >= 300


def test_threshold_window_forgets_an_early_burst() -> None:
    def step(i: int, c: Counters) -> None:
        c.add((250, 100 if i < 1 else 2), (2250, 22))  # 4 polls see it, 5 would fail

    verdicts = drive(error_analysis("threshold"), step)
    assert verdicts[-1].status is Status.PASS


def mw_extra(
    canary_rate: float, stable_rate: float, seed: int = 1
) -> Callable[[int], dict[str, object]]:
    rng = np.random.default_rng(seed)

    def extra(i: int) -> dict[str, object]:
        return {
            "error-rate/canary.series": list(rng.normal(canary_rate, canary_rate / 10, 5)),
            "error-rate/stable.series": list(rng.normal(stable_rate, stable_rate / 10, 5)),
        }

    return extra


def test_mann_whitney_decides_only_at_the_end_and_fails_a_worse_canary() -> None:
    analysis = error_analysis("mann_whitney")
    assert not any(q.kind == "range" for q in _plan_after_baseline(error_analysis("mann_whitney")))
    verdicts = drive(analysis, steady((250, 7), (2250, 22)), extra=mw_extra(0.03, 0.01))
    final = verdicts[-1]
    assert final.status is Status.FAIL and final.elapsed_seconds >= 300
    assert all(not v.final for v in verdicts[:-1])
    assert "significantly worse" in final.checks[0].message


def test_mann_whitney_plans_range_queries_over_the_window() -> None:
    analysis = error_analysis("mann_whitney")
    analysis.observe(0, answer(analysis.plan(0), Counters().values))
    ranges = [q for q in analysis.plan(300) if q.kind == "range"]
    assert {q.id for q in ranges} == {"error-rate/canary.series", "error-rate/stable.series"}
    assert all(q.step_seconds == 60 and q.range_seconds == 300 for q in ranges)


def test_mann_whitney_passes_equal_arms_and_a_better_canary() -> None:
    for canary_rate in (0.01, 0.002):
        verdicts = drive(
            error_analysis("mann_whitney"),
            steady((250, 2), (2250, 22)),
            extra=mw_extra(canary_rate, 0.01),
        )
        assert verdicts[-1].status is Status.PASS, verdicts[-1].reason


def test_mann_whitney_with_empty_series_is_inconclusive() -> None:
    verdicts = drive(
        error_analysis("mann_whitney"),
        steady((250, 2), (2250, 22)),
        extra=lambda i: {"error-rate/canary.series": []},
    )
    assert verdicts[-1].status is Status.INCONCLUSIVE
    assert "0 canary and 0 stable intervals with data, needs 3" in verdicts[-1].checks[0].message


def test_value_checks_are_judged_at_the_end() -> None:
    checks = [
        ErrorRateCheck(max_rate=0.05),
        PredictionDriftCheck(max_psi=0.2),
        PromQLCheck(name="gpu", query="max(gpu_util)", max_value=0.9, min_requests=0),
    ]
    analysis = CanaryAnalysis(ARMS, checks, bake_time_seconds=60)
    probe = CanaryAnalysis(ARMS, checks, bake_time_seconds=60)
    assert not [q for q in _plan_after_baseline(probe) if q.id.endswith(".value")]

    def extra(i: int) -> dict[str, object]:
        return {"prediction-drift/canary.value": 0.35, "gpu/canary.value": 0.5}

    verdicts = drive(analysis, steady((250, 2), (2250, 22)), extra=extra)
    final = verdicts[-1]
    assert final.status is Status.FAIL
    drift = next(c for c in final.checks if c.name == "prediction-drift")
    assert (
        drift.status is Status.FAIL
        and "PSI 0.350 between canary and stable exceeds max_psi 0.2" in drift.message
    )


# -- false alarms under H0 --------------------------------------------------------------


def test_sequential_false_fail_rate_under_h0_is_at_most_alpha() -> None:
    """Identical 1% error rates, 1% canary weight, polled every 15 s for 10 minutes."""
    rng = np.random.default_rng(20261126)
    runs, alpha = 400, 0.01
    per_poll = 10_000 / 4
    false_fails = 0
    for _ in range(runs):
        analysis = CanaryAnalysis(
            ARMS,
            [ErrorRateCheck(max_ratio=1.0)],
            bake_time_seconds=600,
            judge_options={"alpha": alpha, "tolerance": 0.0},
        )
        n_c = rng.poisson(per_poll * 0.01, 41)
        n_s = rng.poisson(per_poll * 0.99, 41)
        k_c, k_s = rng.binomial(n_c, 0.01), rng.binomial(n_s, 0.01)
        cum = np.cumsum(np.stack([n_c, k_c, n_s, k_s]), axis=1)
        for i in range(41):
            values = {
                "canary.total": cum[0, i],
                "canary.bad": cum[1, i],
                "stable.total": cum[2, i],
                "stable.bad": cum[3, i],
            }
            verdict = analysis.observe(i * POLL, answer(analysis.plan(i * POLL), values))
            if verdict.final:
                break
        false_fails += verdict.status is Status.FAIL
    # Ville's bound is alpha; allow three binomial standard errors of 400 runs on top.
    assert false_fails / runs <= alpha + 3 * math.sqrt(alpha * (1 - alpha) / runs)


def test_a_rejected_query_fails_the_step_at_once():
    from airflow_canary.analysis import Arms, CanaryAnalysis, ErrorRateCheck, QueryFailure, Status

    analysis = CanaryAnalysis(
        Arms("default"),
        [ErrorRateCheck(max_increase=0.02)],
        bake_time_seconds=60,
        poll_interval_seconds=5,
    )
    queries = analysis.plan(0)
    samples = {q.id: 0.0 for q in queries}
    samples[queries[0].id] = QueryFailure(
        "bad_data: parse error at char 5; query: sum(", permanent=True
    )
    verdict = analysis.observe(0, samples)
    assert verdict.status is Status.FAIL and verdict.final
    assert "rejected a query" in verdict.reason and "parse error" in verdict.reason


def test_a_pass_with_some_evidence_says_it_stayed_below_the_threshold() -> None:
    """A canary at 2.45x stable's rate against max_ratio 2: evidence grows, but not to 100."""
    analysis = CanaryAnalysis(ARMS, [ErrorRateCheck(max_ratio=2.0)], bake_time_seconds=300)
    final = drive(analysis, steady((250, 6), (2250, 22)))[-1]
    (check,) = final.checks
    assert final.status is Status.PASS and check.statistic is not None and check.statistic > 0
    assert "below the step's threshold 1/(alpha 0.01) = 100" in check.message
    assert "no evidence against" not in check.message


@pytest.mark.parametrize("stable_errors", [0, 2])
def test_a_canary_that_breaks_mid_step_fails_and_its_jump_is_weighed_as_burstiness(
    stable_errors: int,
) -> None:
    """Counts per poll as the fault suite's 10% step saw them (about 17 canary and 130 stable
    requests a second, model-v2 broken after its 40th live request). The jump from 0% to 100%
    errors is read as overdispersion (the canary's increments enter the estimate, which is what
    keeps a shared burst the canary's scrape shows a poll early from failing an identical
    canary: docs/decision-quality.md), so the canary FAILs some polls after its errors appear,
    not at the first; the verdict says by how much its counts were weighed down."""

    def step(i: int, c: Counters) -> None:
        c.add((17, 17 if i >= 4 else 0), (130, stable_errors))

    analysis = CanaryAnalysis(ARMS, [ErrorRateCheck(max_increase=0.02)], bake_time_seconds=300)
    verdicts = drive(analysis, step)
    first_errors = 5  # the first poll whose counts hold canary errors (after step(4))
    final = verdicts[-1]
    assert final.status is Status.FAIL, final.reason
    assert 1 <= len(verdicts) - 1 - first_errors <= 12, [v.reason for v in verdicts]
    assert "dispersion" in final.reason and "bursty counts weigh 1/" in final.reason
