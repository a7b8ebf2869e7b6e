"""The statistics under the judges: the mixture likelihood ratio, Mann-Whitney pieces, cleaning."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_canary.analysis.judges.mann_whitney import hodges_lehmann, mann_whitney_p
from airflow_canary.analysis.judges.sequential import canary_share_null, log_mixture_lr
from airflow_canary.analysis.observations import (
    advance_counter,
    advance_counters,
    clean_number,
    clean_series,
)


def test_mixture_lr_grows_with_evidence_against_h0() -> None:
    p0 = 0.01
    weak = log_mixture_lr(3, 97, p0)
    strong = log_mixture_lr(15, 285, p0)
    assert strong > math.log(100) > weak


def test_mixture_lr_favours_h0_when_the_canary_is_better() -> None:
    assert log_mixture_lr(0, 1000, 0.05) < 0
    assert log_mixture_lr(1, 999, 0.05) < 0


def test_mixture_lr_exact_against_numerical_integration() -> None:
    bad, good, p0 = 4, 40, 0.05
    grid = np.linspace(p0, 1, 200_001)
    b = 1 / p0
    prior = (1 - grid) ** (b - 1)
    prior /= np.trapezoid(prior, grid)
    numerator = np.trapezoid(grid**bad * (1 - grid) ** good * prior, grid)
    expected = math.log(numerator / (p0**bad * (1 - p0) ** good))
    assert log_mixture_lr(bad, good, p0) == pytest.approx(expected, rel=1e-4)


def test_mixture_lr_edge_limits() -> None:
    assert log_mixture_lr(1, 10, 0.0) == math.inf
    assert log_mixture_lr(0, 10, 0.0) == 0.0
    assert log_mixture_lr(5, 5, 1.0) == -math.inf


def test_mixture_lr_is_finite_or_minus_inf_for_huge_counts() -> None:
    worse = log_mixture_lr(2e10, 1e12, canary_share_null(1e11, 9.9e12, 1.25))
    better = log_mixture_lr(1e9, 1e12, 0.0125)
    assert worse > math.log(100)
    assert better == -math.inf or better < 0


@given(st.integers(0, 10**6), st.integers(0, 10**6), st.floats(1e-6, 0.999))
def test_mixture_lr_never_nan(bad: int, good: int, p0: float) -> None:
    assert not math.isnan(log_mixture_lr(bad, good, p0))


def test_canary_share_null() -> None:
    assert canary_share_null(100, 9900, 1.0) == 0.01
    assert canary_share_null(100, 9900, 2.0) == 200 / 10100


def test_mann_whitney_ties_and_zero_variance_give_p_one() -> None:
    same = np.zeros(10)
    assert mann_whitney_p(same, same) == 1.0
    assert hodges_lehmann(same, same) == 0.0


def test_mann_whitney_detects_a_shift() -> None:
    rng = np.random.default_rng(3)
    stable, canary = rng.normal(10, 1, 20), rng.normal(14, 1, 20)
    assert mann_whitney_p(canary, stable) < 0.001
    assert 3 < hodges_lehmann(canary, stable) < 5


def test_cleaning_drops_nan_inf_negative() -> None:
    assert [clean_number(x) for x in (1, 2.5, math.nan, math.inf, -1, None, True, "3")] == [
        1.0,
        2.5,
        None,
        None,
        None,
        None,
        None,
        None,
    ]
    assert clean_series([1, math.nan, 2, math.inf, None]) == (1.0, 2.0)
    assert clean_series(None) == ()


def test_counter_reset_adds_nothing_and_rebases() -> None:
    track = advance_counter(None, 1000)
    track = advance_counter(track, 1100)
    track = advance_counter(track, 40)  # a pod restarted
    track = advance_counter(track, 90)
    assert track["total"] == 150


def test_a_rise_above_its_ceiling_adds_nothing_and_rebases() -> None:
    track = advance_counter(None, 0)
    assert advance_counter(track, 1_328, ceiling=523)["total"] == 0
    assert advance_counter(track, 523, ceiling=523)["total"] == 523
    rebased = advance_counter(track, 1_328, ceiling=523)
    assert advance_counter(rebased, 1_338, ceiling=200)["total"] == 10


def test_subset_counters_rise_no_faster_than_their_superset() -> None:
    subsets = {"bad": "total"}
    tracks = advance_counters({}, {"total": 9_000, "bad": 0}, subsets)
    tracks = advance_counters(tracks, {"total": 9_523, "bad": 1_328}, subsets)
    assert (tracks["total"]["total"], tracks["bad"]["total"]) == (523, 0)
    tracks = advance_counters(tracks, {"total": 9_723, "bad": 1_338}, subsets)
    assert (tracks["total"]["total"], tracks["bad"]["total"]) == (723, 10)
    # Without a reading of the superset this poll there is no bound.
    tracks = advance_counters(tracks, {"total": None, "bad": 1_348}, subsets)
    assert tracks["bad"]["total"] == 20


def test_counter_absent_until_created_counts_from_zero() -> None:
    track = advance_counter(None, None)
    assert track == {"last": 0.0, "total": 0.0, "seen": False}
    track = advance_counter(track, 7)
    assert track["total"] == 7 and track["seen"]
    # Later absence or garbage is no data, not a drop to zero.
    assert advance_counter(track, None) == track
    assert advance_counter(track, math.nan) == track
