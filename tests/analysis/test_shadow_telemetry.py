"""Shadow checks on v2's mirrored requests from Istio telemetry: queries, counters, verdicts."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from airflow_canary.analysis.checks import ErrorRateCheck, LatencyCheck
from airflow_canary.analysis.shadow import (
    MirroredErrorRateCheck,
    MirroredLatencyCheck,
    MirroredTelemetry,
    Prediction,
    PredictionAgreementCheck,
    PredictionRecord,
    ShadowJudge,
    TelemetryPoll,
    pair_records,
    shadow_check_from_dict,
)
from airflow_canary.analysis.values import AnalysisError, Arms, QueryFailure, Status
from tests.analysis.test_shadow import classified

ARMS = Arms("shop", "v1", "v2")
ERRORS = MirroredErrorRateCheck(max_rate=0.02)
SLOW = MirroredLatencyCheck(quantile=0.99, max_ms=300)
AGREE = PredictionAgreementCheck(max_disagreement=0.02)
JUDGE = ShadowJudge(alpha=0.01, budget_share=0.25)
T0 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


def no_pairs() -> Any:
    """v1 answered 200 mirrored requests; v2 wrote no record (it failed them)."""
    records = [
        PredictionRecord(f"r{i}", "v1", T0 + timedelta(milliseconds=i), "sha256:x", Prediction(1))
        for i in range(200)
    ]
    return pair_records(
        records,
        stable_version="v1",
        canary_version="v2",
        window_seconds=1,
        now=T0 + timedelta(minutes=1),
    )


# -- the checks -------------------------------------------------------------------------------------


def test_errors_are_counted_with_the_live_selectors_at_v2s_own_sidecar() -> None:
    queries = ERRORS.counters(ARMS)
    live = ErrorRateCheck(max_rate=0.02, reporter="destination").counters(ARMS)
    assert queries == {
        "total": live["canary.total"],
        "bad": live["canary.bad"],
        "stable": live["stable.total"],
    }
    # Istio reports a mirrored copy only at the mirror target's sidecar (istio/istio#23496).
    assert queries["total"] == (
        'sum(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="shop",destination_version="v2"})'
    )
    assert 'response_code=~"5.."' in queries["bad"]
    assert 'grpc_response_status=~"2|4|12|13|14|15"' in queries["bad"]
    assert all('reporter="source"' not in q for q in queries.values())
    http_only = MirroredErrorRateCheck(max_rate=0.02, grpc_error_codes=())
    assert "grpc_response_status" not in http_only.counters(ARMS)["bad"]


def test_latency_counts_requests_slower_than_the_smallest_bucket_bound_at_or_above_max_ms() -> None:
    assert SLOW.bound_ms == 500  # Istio's bounds: ..., 250, 500, ...
    assert MirroredLatencyCheck(max_ms=250).bound_ms == 250
    queries = SLOW.counters(ARMS)
    live = LatencyCheck(quantile=0.99, max_ms=500, reporter="destination").counters(ARMS)
    assert (queries["total"], queries["bad"]) == (live["canary.total"], live["canary.bad"])
    assert "istio_request_duration_milliseconds_bucket" in queries["bad"]
    assert 'le=~"500(\\\\.0+)?"' in queries["bad"]
    assert SLOW.max_share == pytest.approx(0.01)
    assert SLOW.headline(3, 100) == (
        "3% of v2's 100 mirrored requests slower than 500 ms, the smallest bucket bound >= "
        "max_ms 300 (p99 limit: at most 1%)"
    )


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (
            lambda: MirroredErrorRateCheck(max_rate=0),
            "max_rate must be a share between 0 and 1, got 0",
        ),
        (lambda: MirroredErrorRateCheck(max_rate=1.5), "max_rate must be a share.*got 1.5"),
        (lambda: MirroredErrorRateCheck(max_rate="1%"), "max_rate must be a share.*got '1%'"),
        (
            lambda: MirroredErrorRateCheck(min_requests=0),
            "min_requests must be a whole number >= 1, got 0",
        ),
        (
            lambda: MirroredErrorRateCheck(grpc_error_codes=(0,)),
            "grpc_error_codes must be gRPC status codes",
        ),
        (
            lambda: MirroredLatencyCheck(),
            "max_ms must be a positive number of milliseconds.*got None",
        ),
        (lambda: MirroredLatencyCheck(max_ms=-5), "max_ms must be a positive number, got -5"),
        (lambda: MirroredLatencyCheck(max_ms=250, quantile=1), "quantile must be a share.*got 1"),
        (
            lambda: MirroredLatencyCheck(max_ms=5000, buckets_ms=(100, 250)),
            "max_ms must be at most the histogram's largest bucket bound 250 ms.*got 5000",
        ),
        (lambda: MirroredLatencyCheck(max_ms=1, buckets_ms=()), "buckets_ms must be a list"),
    ],
)
def test_bad_limits_are_named_when_the_check_is_built(build: Any, message: str) -> None:
    with pytest.raises(AnalysisError, match=message):
        build()


def test_the_checks_survive_json_and_their_dict() -> None:
    for check in (
        ERRORS,
        MirroredErrorRateCheck(max_rate=0.1, min_requests=50, grpc_error_codes=(13, 14)),
        SLOW,
        MirroredLatencyCheck(quantile=0.95, max_ms=120, buckets_ms=(50, 100, 200)),
    ):
        assert shadow_check_from_dict(json.loads(json.dumps(check.to_dict()))) == check
    assert "buckets_ms" not in SLOW.to_dict()


# -- the counters -----------------------------------------------------------------------------------


def readings(
    total: float | None, bad: float | None, stable: float | None = 1000.0
) -> dict[str, Any]:
    return {
        "mirrored-error-rate/total": total,
        "mirrored-error-rate/bad": bad,
        "mirrored-error-rate/stable": stable,
    }


def test_counts_start_at_the_phases_first_poll_and_a_restart_adds_nothing() -> None:
    telemetry = MirroredTelemetry(ARMS, [AGREE, ERRORS])
    assert set(telemetry.queries()) == {
        "mirrored-error-rate/total",
        "mirrored-error-rate/bad",
        "mirrored-error-rate/stable",
    }
    # v2 served 5,000 requests (500 failed) in an earlier rollout: the baseline leaves them out.
    first = telemetry.observe(readings(5000, 500))
    assert first.baseline and first.counts["mirrored-error-rate"].requests == 0
    second = telemetry.observe(readings(5400, 510))
    assert (
        second.counts["mirrored-error-rate"].requests,
        second.counts["mirrored-error-rate"].bad,
    ) == (400, 10)
    restarted = telemetry.observe(readings(50, 0))  # a pod restarted: its counters began again
    assert restarted.counts["mirrored-error-rate"].requests == 400
    later = telemetry.observe(readings(150, 20))
    assert (
        later.counts["mirrored-error-rate"].requests,
        later.counts["mirrored-error-rate"].bad,
    ) == (500, 30)


def test_v2_series_born_in_the_phase_count_from_zero() -> None:
    telemetry = MirroredTelemetry(ARMS, [ERRORS])
    telemetry.observe(readings(None, 0))  # no mirrored request yet: no v2 series
    poll = telemetry.observe(readings(300, 300))
    assert (
        poll.counts["mirrored-error-rate"].requests,
        poll.counts["mirrored-error-rate"].bad,
    ) == (300, 300)


def test_a_bad_series_back_from_a_scrape_gap_adds_nothing_instead_of_its_history() -> None:
    """v2 failed 1,328 requests in an earlier rollout. At the phase's first poll its 5xx
    series was missing (the pod holding it not scraped then) and ``or vector(0)`` read 0;
    at the next poll it is back. Its rise (1,328) exceeds v2's requests in the interval
    (523): it is history, not 523 mirrored requests answered with 5xx."""
    telemetry = MirroredTelemetry(ARMS, [ERRORS])
    telemetry.observe(readings(9_000, 0))
    back = telemetry.observe(readings(9_523, 1_328))
    assert (
        back.counts["mirrored-error-rate"].requests,
        back.counts["mirrored-error-rate"].bad,
    ) == (523, 0)
    later = telemetry.observe(readings(9_723, 1_338))  # 10 new 5xx in 200 requests count
    assert later.counts["mirrored-error-rate"].bad == 10


def test_a_prometheus_without_any_data_is_not_the_baseline() -> None:
    telemetry = MirroredTelemetry(ARMS, [ERRORS])
    idle = telemetry.observe(readings(None, 0, None))  # `or vector(0)` still answers 0
    assert not idle.baseline and idle.counts == {}
    assert idle.note is not None and idle.note.startswith("no baseline yet")
    telemetry.observe(readings(5000, 500))
    assert telemetry.observe(readings(5100, 500)).counts["mirrored-error-rate"].requests == 100


def test_failed_polls_are_counted_and_a_success_resets_them() -> None:
    telemetry = MirroredTelemetry(ARMS, [ERRORS], max_inconclusive_polls=2)
    telemetry.observe(readings(0, 0))
    down = QueryFailure("Prometheus at http://p:9090 is unavailable after 4 attempt(s): refused")
    failed = telemetry.observe({**readings(10, 1), "mirrored-error-rate/bad": down})
    assert failed.failure is not None and "unavailable" in failed.failure
    assert (failed.failed_polls, failed.exhausted, failed.rejected) == (1, False, None)
    assert telemetry.observe(readings(20, 1)).failed_polls == 0
    telemetry.observe({**readings(30, 1), "mirrored-error-rate/total": down})
    assert telemetry.observe({"mirrored-error-rate/total": down}).exhausted
    rejected = telemetry.observe(
        {**readings(40, 1), "mirrored-error-rate/bad": QueryFailure("bad_data: parse error", True)}
    )
    assert rejected.rejected is not None and "parse error" in rejected.rejected


def test_a_histogram_without_the_bound_is_no_data_not_zero() -> None:
    telemetry = MirroredTelemetry(ARMS, [SLOW])
    ids = telemetry.queries()
    telemetry.observe({qid: (1000.0 if qid.endswith("stable") else None) for qid in ids})
    poll = telemetry.observe(
        {
            "mirrored-latency/total": 400.0,
            "mirrored-latency/bad": None,
            "mirrored-latency/stable": 2000.0,
        }
    )
    assert poll.counts["mirrored-latency"].requests == 400
    assert poll.counts["mirrored-latency"].bad is None
    out = JUDGE.judge(no_pairs(), [SLOW], elapsed_seconds=600, duration_seconds=60, telemetry=poll)
    assert out.verdict.status is Status.INCONCLUSIVE
    assert "no series for the bad ones" in out.verdict.reason


def test_max_inconclusive_polls_must_be_a_whole_number() -> None:
    with pytest.raises(
        AnalysisError, match="max_inconclusive_polls must be an integer >= 1, got 0"
    ):
        MirroredTelemetry(ARMS, [ERRORS], max_inconclusive_polls=0)


# -- the verdict ------------------------------------------------------------------------------------


def polled(requests: float, bad: float, check: Any = ERRORS) -> TelemetryPoll:
    telemetry = MirroredTelemetry(ARMS, [check])
    ids = telemetry.queries()
    base = {qid: 0.0 for qid in ids}
    telemetry.observe(base)
    role = {qid.rsplit("/", 1)[1]: qid for qid in ids}
    return telemetry.observe({role["total"]: requests, role["bad"]: bad, role["stable"]: 1e4})


def test_a_v2_failing_every_mirrored_request_fails_the_phase_early_without_any_pair() -> None:
    out = JUDGE.judge(
        no_pairs(),
        [AGREE, ERRORS],
        elapsed_seconds=4,
        duration_seconds=120,
        telemetry=polled(40, 40),
    )
    assert out.verdict.status is Status.FAIL and out.verdict.final
    # The failing check leads; the agreement check follows, as on a PASS, saying no pair
    # formed rather than "0% of 0".
    assert out.verdict.reason.startswith(
        "v2 answered 100% of 40 mirrored requests with HTTP 5xx or gRPC status 2, 4, 12, 13, "
        "14, 15 (limit 2%); v2's agreement with v1: no paired request yet (limit 2% "
        "disagreement); e-value"
    ), out.verdict.reason
    assert ">= 1/(alpha 0.01 x 0.25 of the rollout's budget) = 400" in out.verdict.reason
    agree, errors = out.verdict.checks
    assert agree.status is Status.INCONCLUSIVE and agree.canary_requests == 0
    assert errors.status is Status.FAIL and errors.canary_value == 1.0
    assert errors.canary_requests == 40 and errors.stable_requests == 0


def test_a_disagreement_fail_still_reports_the_mirrored_error_rate() -> None:
    """A FAIL leads with the check that failed and keeps every other check's line, as a PASS
    does: the reader sees v2 disagreed while answering every mirrored request."""
    out = JUDGE.judge(
        classified(2310, set(range(0, 2310, 10))),
        [AGREE, ERRORS],
        elapsed_seconds=20,
        duration_seconds=300,
        telemetry=polled(2400, 0),
    )
    assert out.verdict.status is Status.FAIL and out.verdict.final
    assert out.verdict.reason.startswith(
        "v2 disagrees with v1 on 10% of 2,310 paired requests (limit 2%); "
        "v2 answered 0% of 2,400 mirrored requests with HTTP 5xx or gRPC status 2, 4, 12, 13, "
        "14, 15 (limit 2%); e-value"
    ), out.verdict.reason


def test_no_mirrored_request_counted_yet_is_said_so_not_as_a_share() -> None:
    """A FAIL on pairs at the phase's first polls, before any mirrored request was counted,
    says none was counted since the baseline rather than "0% of 0"."""
    out = JUDGE.judge(
        classified(2310, set(range(0, 2310, 10))),
        [AGREE, ERRORS, SLOW],
        elapsed_seconds=2,
        duration_seconds=300,
        telemetry=polled(0, 0),
    )
    assert out.verdict.status is Status.FAIL
    assert "of 0 mirrored" not in out.verdict.reason
    assert (
        "v2's mirrored requests: none counted since the phase's first poll, the baseline "
        "(limit 2% with HTTP 5xx or gRPC status 2, 4, "
        "12, 13, 14, 15)" in out.verdict.reason
    ), out.verdict.reason
    assert SLOW.headline(0, 0) == (
        "v2's mirrored requests: none counted since the phase's first poll, the baseline "
        "(p99 limit: at most 1% slower than 500 ms, "
        "the smallest bucket bound >= max_ms 300)"
    )


def test_a_v2_within_the_limit_passes_with_enough_mirrored_requests_and_never_on_too_few() -> None:
    needed = JUDGE.pairs_needed(ERRORS)
    assert needed == JUDGE.pairs_needed(AGREE)  # the same test at the same limit
    ok = JUDGE.judge(
        no_pairs(), [ERRORS], elapsed_seconds=60, duration_seconds=60, telemetry=polled(needed, 0)
    )
    assert ok.verdict.status is Status.PASS, ok.verdict.reason
    assert ok.verdict.checks[0].message.endswith(f"mirrored requests needed to pass {needed:,}")
    few = JUDGE.judge(
        no_pairs(),
        [ERRORS],
        elapsed_seconds=60,
        duration_seconds=60,
        telemetry=polled(needed - 1, 0),
    )
    assert few.verdict.status is Status.INCONCLUSIVE and few.verdict.final
    assert few.verdict.reason.startswith(
        f"too little evidence to pass: mirrored-error-rate has {needed - 1:,} mirrored request(s) "
        f"of the {needed:,} needed"
    )
    unread = JUDGE.judge(no_pairs(), [ERRORS], elapsed_seconds=60, duration_seconds=60)
    assert unread.verdict.status is Status.INCONCLUSIVE


def test_a_slow_v2_fails_naming_the_bucket_bound() -> None:
    out = JUDGE.judge(
        no_pairs(), [SLOW], elapsed_seconds=5, duration_seconds=60, telemetry=polled(500, 60, SLOW)
    )
    assert out.verdict.status is Status.FAIL
    assert out.verdict.reason.startswith(
        "12% of v2's 500 mirrored requests slower than 500 ms, the smallest bucket bound >= "
        "max_ms 300 (p99 limit: at most 1%); e-value"
    )


def test_a_prometheus_failure_makes_the_poll_inconclusive_and_too_many_in_a_row_fail() -> None:
    telemetry = MirroredTelemetry(ARMS, [ERRORS], max_inconclusive_polls=2)
    telemetry.observe(readings(0, 0))
    down = QueryFailure("Prometheus at http://p:9090 is unavailable after 4 attempt(s): refused")
    judge = dict(elapsed_seconds=600, duration_seconds=60)  # even after the duration
    first = JUDGE.judge(no_pairs(), [ERRORS], telemetry=telemetry.observe({"x": 1.0}), **judge)  # type: ignore[arg-type]
    assert first.verdict.status is Status.INCONCLUSIVE and not first.verdict.final
    assert first.verdict.reason.startswith(
        "Prometheus query failed (1 of 2 allowed in a row): no sample for query"
    )
    second = telemetry.observe(dict.fromkeys(telemetry.queries(), down))
    out = JUDGE.judge(no_pairs(), [ERRORS], telemetry=second, **judge)  # type: ignore[arg-type]
    assert out.verdict.status is Status.FAIL and out.verdict.final
    assert out.verdict.reason.startswith("Prometheus failed 2 polls in a row: mirrored-error-rate/")
    rejected = MirroredTelemetry(ARMS, [ERRORS]).observe(
        dict.fromkeys(
            MirroredTelemetry(ARMS, [ERRORS]).queries(), QueryFailure("parse error", True)
        )
    )
    out = JUDGE.judge(
        no_pairs(), [ERRORS], telemetry=rejected, elapsed_seconds=1, duration_seconds=60
    )
    assert out.verdict.status is Status.FAIL
    assert out.verdict.reason.startswith("Prometheus rejected a query, asking again cannot help")


def test_evidence_on_pairs_still_fails_while_prometheus_is_down() -> None:
    records = []
    for i in range(500):
        t = T0 + timedelta(milliseconds=i)
        records.append(PredictionRecord(f"r{i}", "v1", t, "sha256:x", Prediction(1)))
        records.append(PredictionRecord(f"r{i}", "v2", t, "sha256:x", Prediction(0)))
    sample = pair_records(
        records,
        stable_version="v1",
        canary_version="v2",
        window_seconds=1,
        now=T0 + timedelta(minutes=1),
    )
    telemetry = MirroredTelemetry(ARMS, [ERRORS])
    poll = telemetry.observe({"x": 1.0})
    out = JUDGE.judge(
        sample, [AGREE, ERRORS], elapsed_seconds=5, duration_seconds=60, telemetry=poll
    )
    assert out.verdict.status is Status.FAIL
    assert out.verdict.reason.startswith("v2 disagrees with v1 on 100% of 500 paired requests")
    assert math.isfinite(out.log_e)
