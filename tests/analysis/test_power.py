"""Plan-time power of a step: the sequential judge's own tests on a doubled limit."""

from __future__ import annotations

import pytest

from airflow_canary.analysis import (
    AnalysisError,
    Arms,
    ErrorRateCheck,
    LatencyCheck,
    PredictionDriftCheck,
    make_judge,
)
from airflow_canary.analysis.power import THIN_POWER, ServiceRates, service_rates, step_power

#: the benchmark's seed load: 10,000 requests a minute, 1% errors, 1% slower than p99's bound
SEED = ServiceRates(events_per_second=10_000 / 60, bad_rate=0.01)
JUDGE = make_judge("sequential", alpha=0.01, budget_share=1 / 3)
CHECKS = [
    ErrorRateCheck(max_ratio=1.5),
    LatencyCheck(quantile=0.99, max_ratio=1.5),
    PredictionDriftCheck(),
]
RATES = {"error-rate": SEED, "latency": SEED, "prediction-drift": SEED}


def powers(weight: int, bake: float) -> dict[str, float]:
    return {p.check: p.power for p in step_power(JUDGE, CHECKS, RATES, weight, bake, 15)}


def test_a_one_minute_bake_at_one_percent_is_thin_and_says_what_helps() -> None:
    (errors, latency) = step_power(JUDGE, CHECKS, RATES, 1, 60, 15)
    assert errors.check == "error-rate" and latency.check == "latency"
    assert errors.thin and errors.power < THIN_POWER
    assert errors.canary_events == pytest.approx(100)
    sentence = errors.sentence()
    assert sentence.startswith("step 1%: error-rate: about 100 canary events in the 60-second")
    assert "2x the max_ratio 1.5 limit" in sentence and "raise the bake time" in sentence


def test_power_grows_with_bake_time_and_weight_and_values_are_left_out() -> None:
    short, long = powers(10, 60), powers(10, 600)
    assert set(short) == {"error-rate", "latency"}  # PSI is a value, judged once
    assert long["error-rate"] > short["error-rate"] and long["error-rate"] > 0.95
    assert powers(50, 60)["error-rate"] > short["error-rate"]
    assert not any(p.thin for p in step_power(JUDGE, CHECKS, RATES, 50, 600, 15))


def test_no_events_means_no_power() -> None:
    rates = {"error-rate": ServiceRates(0, 0.01)}
    (power,) = step_power(JUDGE, [ErrorRateCheck(max_rate=0.02)], rates, 10, 600, 15)
    assert power.power == 0 and power.thin


@pytest.mark.parametrize(("weight", "bake"), [(0, 60), (100, 60), (10, 0)])
def test_bad_step_is_refused(weight: int, bake: float) -> None:
    with pytest.raises(AnalysisError):
        step_power(JUDGE, CHECKS, RATES, weight, bake, 15)


def test_service_rates_come_from_the_checks_own_stable_counters() -> None:
    """Readings 10 minutes apart: 100,000 requests, 1,000 of them failed."""
    readings = {0.0: (50_000.0, 400.0), 600.0: (150_000.0, 1_400.0)}
    check = ErrorRateCheck(max_ratio=1.5)
    counters = check.counters(Arms("default"))
    asked: list[str] = []

    def query(promql: str, at: float) -> float | None:
        asked.append(promql)
        total, bad = readings[at]
        return total if promql == counters["stable.total"] else bad

    rates = service_rates(check, Arms("default"), query, now=600.0, lookbacks_seconds=(600.0,))
    assert rates == ServiceRates(events_per_second=pytest.approx(100_000 / 600), bad_rate=0.01)
    assert set(asked) == {counters["stable.total"], counters["stable.bad"]}
    tail = service_rates(LatencyCheck(max_ratio=1.5), Arms("default"), query, 600.0, (600.0,))
    assert tail is not None and tail.bad_rate == pytest.approx(0.01)


def test_no_history_gives_no_rates() -> None:
    check = ErrorRateCheck(max_rate=0.01)
    assert service_rates(check, Arms("default"), lambda q, at: None, 600.0) is None
    assert service_rates(check, Arms("default"), lambda q, at: 5.0, 600.0) is None


def test_a_young_prometheus_gives_the_rates_of_the_longest_window_it_has() -> None:
    """Data only for the last two minutes: the 10- and 5-minute readings are missing."""
    readings = {600.0: (12_000.0, 120.0), 480.0: (0.0, 0.0)}
    check = ErrorRateCheck(max_rate=0.02)
    total_q = check.counters(Arms("default"))["stable.total"]

    def query(promql: str, at: float) -> float | None:
        if at not in readings:
            return None
        total, bad = readings[at]
        return total if promql == total_q else bad

    rates = service_rates(check, Arms("default"), query, now=600.0)
    assert rates == ServiceRates(events_per_second=100.0, bad_rate=0.01)
