"""The weight-hold statistics: a one-sided binomial bound on the canary's share, and the wording."""

from __future__ import annotations

import numpy as np
import pytest

from airflow_canary.analysis.values import AnalysisError
from airflow_canary.analysis.weight_hold import WeightHold, describe_change, describe_deficit


def test_a_reverted_weight_shows_as_a_deficit_at_once() -> None:
    # 45 s at 10% then nothing more to the canary: 1.5% of 8,000 requests at a 10% weight.
    test = WeightHold(10, max_polls=40).share_test(canary_requests=120, stable_requests=7880)
    assert test.deficit and test.p_value < 1e-30
    assert describe_deficit(test, 45).startswith(
        "canary received 1.50% of requests (120 of 8,000) at a 10% weight after 45 s: fewer "
        "than the weight allows (binomial P(X<=120) ="
    )


def test_header_routed_requests_on_top_of_the_weight_are_never_a_deficit() -> None:
    hold = WeightHold(10, max_polls=40)
    assert not hold.share_test(canary_requests=4000, stable_requests=6000).deficit
    assert not hold.share_test(canary_requests=0, stable_requests=0).deficit
    # Few requests cannot show a deficit, however lopsided.
    assert not hold.share_test(canary_requests=0, stable_requests=20).deficit


def test_requests_no_pod_could_take_count_as_the_canarys() -> None:
    # 20 s at 10% of 200 requests/s, 6 s of them with every canary pod down: the callers'
    # sidecars answered the canary's ~120 requests themselves (503 UH, destination unknown).
    hold = WeightHold(10, max_polls=40)
    assert hold.share_test(canary_requests=280, stable_requests=3600).deficit
    test = hold.share_test(canary_requests=280, stable_requests=3600, unreachable_requests=120)
    assert not test.deficit
    assert (test.canary_requests, test.total_requests) == (400, 4000)
    # They never hide a weight that really moved: 0 received and 0 unreachable is a deficit.
    assert hold.share_test(0, 3600, unreachable_requests=0).deficit


def test_counts_extrapolated_by_increase_are_rounded() -> None:
    test = WeightHold(50).share_test(canary_requests=10.4, stable_requests=9.6)
    assert (test.canary_requests, test.total_requests) == (10, 20)


def test_false_alarms_stay_within_alpha_over_every_poll_of_a_step() -> None:
    # An unchanged 10% weight, 20 polls of 200 requests, cumulative counters tested each poll.
    rng = np.random.default_rng(7)
    hold = WeightHold(10, alpha=0.02, max_polls=20)
    steps, alarms = 500, 0
    for _ in range(steps):
        per_poll = rng.binomial(200, 0.10, size=20)
        canary = np.cumsum(per_poll)
        total = 200 * np.arange(1, 21)
        if any(hold.share_test(c, t - c).deficit for c, t in zip(canary, total, strict=True)):
            alarms += 1
    assert alarms / steps <= 0.02


def test_a_modest_real_deficit_is_found_with_enough_requests() -> None:
    hold = WeightHold(10, alpha=0.001, max_polls=40)
    assert hold.share_test(canary_requests=700, stable_requests=9300).deficit  # 7% at 10%
    assert not hold.share_test(canary_requests=95, stable_requests=905).deficit  # 9.5% of 1,000


def test_changed_routes_and_the_message() -> None:
    hold = WeightHold(10)
    assert hold.changed_routes({"primary": 10, "tcp[0]": 10.0}) == {}
    changed = hold.changed_routes({"primary": 0, "tcp[0]": 10})
    assert changed == {"primary": 0}
    assert describe_change(10, changed, 45.2) == (
        "canary weight changed from 10% to 0% by another writer after 45 s (route primary)"
    )
    both = hold.changed_routes({"primary": 0, "tcp[0]": 50})
    assert describe_change(10, both, 45) == (
        "canary weight changed from 10% to 0% by another writer after 45 s "
        "(primary: 0%; tcp[0]: 50%)"
    )


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"weight_percent": 150}, "canary_weight must be a percentage 0..100, got 150"),
        ({"weight_percent": 10, "alpha": 0}, "alpha must be in (0, 1), got 0"),
        ({"weight_percent": 10, "max_polls": 0}, "max_polls must be at least 1, got 0"),
    ],
)
def test_bad_parameters_are_refused(kwargs: dict[str, float], fragment: str) -> None:
    with pytest.raises(AnalysisError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        WeightHold(**kwargs)  # type: ignore[arg-type]
