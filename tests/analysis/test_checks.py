"""Checks: parameter validation, queries, and the to_dict / check_from_dict round-trip."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_canary.analysis import (
    AnalysisError,
    Arms,
    ErrorRateCheck,
    LatencyCheck,
    ModelAccuracyCheck,
    PredictionDriftCheck,
    PromQLCheck,
    PromQLRatioCheck,
    check_from_dict,
    make_judge,
)
from airflow_canary.analysis.checks import require_serializable

ARMS = Arms("default")

ALL_CHECKS = [
    ErrorRateCheck(max_rate=0.01),
    ErrorRateCheck(max_increase=0.005, max_ratio=1.5, min_requests=50, name="errors-strict"),
    LatencyCheck(max_ms=500),
    LatencyCheck(quantile=0.95, max_ratio=1.3, slo_ms=250, name="p95"),
    ModelAccuracyCheck(min_accuracy=0.9, max_drop=0.02, namespace_label="namespace"),
    PredictionDriftCheck(),
    PredictionDriftCheck(max_psi=0.1, min_predictions=500, name="drift-tight", epsilon=1e-6),
    PromQLCheck(name="custom", query='sum(up{version="{{ version }}"})', min_value=1, max_ratio=2),
    PromQLRatioCheck(
        name="fallbacks",
        bad_query='model_fallbacks_total{version="{{ version }}"}',
        total_query='model_predictions_total{version="{{ version }}"}',
        max_increase=0.01,
        min_events=20,
    ),
]


@pytest.mark.parametrize("check", ALL_CHECKS, ids=lambda c: c.name)
def test_round_trip_through_json(check) -> None:
    data = json.loads(json.dumps(check.to_dict()))
    assert check_from_dict(data) == check
    assert check_from_dict(data).to_dict() == check.to_dict()


@given(
    max_rate=st.none() | st.floats(0, 1),
    max_increase=st.none() | st.floats(0, 1),
    max_ratio=st.none() | st.floats(1, 100),
    min_requests=st.integers(0, 10**6),
)
def test_error_rate_round_trip_property(max_rate, max_increase, max_ratio, min_requests) -> None:
    if max_rate is None and max_increase is None and max_ratio is None:
        max_rate = 0.01
    check = ErrorRateCheck(max_rate, max_increase, max_ratio, min_requests)
    assert check_from_dict(json.loads(json.dumps(check.to_dict()))) == check


@pytest.mark.parametrize(
    ("build", "match"),
    [
        (lambda: ErrorRateCheck(), "give at least one limit"),
        (
            lambda: ErrorRateCheck(max_rate=-0.1),
            r"max_rate must be a fraction between 0 and 1, got -0.1",
        ),
        (lambda: ErrorRateCheck(max_rate=1.5), "got 1.5"),
        (lambda: ErrorRateCheck(max_ratio=0.5), r"max_ratio must be a number >= 1.*got 0.5"),
        (
            lambda: ErrorRateCheck(max_rate=0.01, min_requests=-1),
            "min_requests must be an integer >= 0, got -1",
        ),
        (lambda: ErrorRateCheck(max_rate=0.01, name="a/b"), "check name"),
        (
            lambda: LatencyCheck(quantile=1.0, max_ms=5),
            r"quantile must be strictly between 0 and 1.*got 1.0",
        ),
        (lambda: LatencyCheck(quantile=0, max_ms=5), "got 0"),
        (lambda: LatencyCheck(max_ms=-5), "max_ms must be a positive number, got -5"),
        (lambda: LatencyCheck(slo_ms=300), r"slo_ms must be a bucket bound.*got 300.*250, 500"),
        (lambda: LatencyCheck(), "give at least one limit"),
        (lambda: ModelAccuracyCheck(), "min_accuracy"),
        (lambda: ModelAccuracyCheck(min_accuracy=2), "got 2"),
        (
            lambda: ModelAccuracyCheck(max_drop=0.1, version_label="bad-label"),
            "version_label must be a Prometheus label name",
        ),
        (lambda: PredictionDriftCheck(max_psi=0), "max_psi must be a positive number, got 0"),
        (lambda: PredictionDriftCheck(epsilon=0.5), "epsilon"),
        (lambda: PromQLCheck(name="x", query="up"), "give at least one limit"),
        (lambda: PromQLCheck(name="x", query="", max_value=1), "query must be non-empty"),
        (
            lambda: PromQLCheck(name="x", query="up", min_value=2, max_value=1),
            "min_value 2 is above max_value 1",
        ),
        (
            lambda: PromQLCheck(name="x", query="up", max_ratio=2),
            r"needs a \{\{ version \}\} placeholder",
        ),
    ],
)
def test_bad_parameters_name_the_value(build, match) -> None:
    with pytest.raises(AnalysisError, match=match):
        build()


def test_check_from_dict_rejects_unknown_type_and_fields() -> None:
    with pytest.raises(AnalysisError, match=r"unknown check type 'bogus'; known: \['error_rate'"):
        check_from_dict({"type": "bogus"})
    with pytest.raises(AnalysisError, match=r"unknown field\(s\) \['max_rte'\]"):
        check_from_dict({"type": "error_rate", "max_rte": 0.1})


def test_latency_share_slower_than_slo_uses_the_bucket_bound() -> None:
    counters = LatencyCheck(slo_ms=250, reporter="destination").counters(ARMS)
    assert counters["canary.bad"].startswith("(sum(istio_request_duration_milliseconds_count{")
    # Accepts both "250" (Envoy) and "250.0" (Python clients).
    assert 'le=~"250(\\\\.0+)?"' in counters["canary.bad"]


def test_latency_max_ms_on_a_bound_is_the_slo_and_caps_the_slow_share() -> None:
    check = LatencyCheck(quantile=0.99, max_ms=500)
    assert check.effective_slo_ms == 500
    assert check.proportion is not None and check.proportion.max_rate == pytest.approx(0.01)
    assert LatencyCheck(max_ms=300).proportion is None


def test_latency_quantile_uses_histogram_quantile_over_the_window() -> None:
    check = LatencyCheck(max_ms=500, quantile=0.95, reporter="destination")
    value = check.values(ARMS, 120)["canary.value"]
    assert value.startswith(
        "histogram_quantile(0.95, sum by (le) (increase(istio_request_duration_milliseconds_bucket{"
    )
    assert value.endswith("[120s])))")
    auto = LatencyCheck(max_ms=500, quantile=0.95).values(ARMS, 120)["canary.value"]
    assert auto.startswith("histogram_quantile(0.95, ((sum by (le) (increase(")
    assert 'reporter="source"' in auto and ") or on() (sum by (le)" in auto


def test_model_checks_use_the_version_label() -> None:
    counters = ModelAccuracyCheck(min_accuracy=0.9).counters(ARMS)
    assert counters["canary.total"] == 'sum(model_feedback_total{version="v2"})'
    assert 'model_feedback_correct_total{version="v2"}' in counters["canary.bad"]
    psi = PredictionDriftCheck().values(ARMS, 60)["canary.value"]
    assert (
        "sum by (prediction)" in psi
        and 'model_predictions_total{version="v1"}' in psi
        and "ln(" in psi
    )


def test_promql_ratio_check_reads_two_cumulative_counters_per_arm() -> None:
    check = PromQLRatioCheck(
        name="lookup-timeouts",
        bad_query='feature_lookups_total{version="{{ version }}",result="timeout"}',
        total_query='feature_lookups_total{version="{{ version }}"}',
        max_ratio=1.5,
    )
    counters = check.counters(ARMS)
    assert counters["canary.total"] == 'sum(feature_lookups_total{version="v2"})'
    assert counters["stable.bad"] == (
        '(sum(feature_lookups_total{version="v1",result="timeout"}) or vector(0))'
    )
    assert check.is_count and check.proportion.max_ratio == 1.5
    assert require_serializable(check)["type"] == "promql_ratio"
    assert "sequential on counts of bad events" in make_judge("sequential").judged_as(check)


@pytest.mark.parametrize(
    ("fields", "match"),
    [
        ({"bad_query": "x_total", "total_query": 'y{v="{{ version }}"}'}, "bad_query counts one"),
        (
            {
                "bad_query": 'x{v="{{ version }}"}',
                "total_query": 'rate(y{v="{{ version }}"}[{{ interval }}])',
            },
            "total_query must read cumulative counters",
        ),
        ({"bad_query": "", "total_query": 'y{v="{{ version }}"}'}, "bad_query must be non-empty"),
    ],
)
def test_promql_ratio_check_refuses_queries_it_cannot_count(
    fields: dict[str, str], match: str
) -> None:
    with pytest.raises(AnalysisError, match=match):
        PromQLRatioCheck(name="custom", max_rate=0.01, **fields)


def test_promql_ratio_check_needs_a_limit() -> None:
    with pytest.raises(AnalysisError, match="give at least one limit"):
        PromQLRatioCheck(
            name="custom", bad_query='x{v="{{ version }}"}', total_query='y{v="{{ version }}"}'
        )
