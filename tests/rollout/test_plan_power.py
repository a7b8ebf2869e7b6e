"""The plan's power statement when Prometheus cannot say what the service sees."""

from __future__ import annotations

from airflow_canary.analysis import Arms, ErrorRateCheck, LatencyCheck
from airflow_canary.rollout.power import plan_power


class _History:
    """``query_scalar`` over a stable arm's counters that exist only since ``since`` (epoch s)."""

    def __init__(self, since: float, rate: float) -> None:
        self.since, self.rate = since, rate

    def query_scalar(self, promql: str, at: float) -> float | None:
        if at < self.since:
            return None
        served = (at - self.since) * self.rate
        return 0.0 if "response_code" in promql else served


def _plan(prometheus: _History, now: float) -> tuple[list, list[str]]:
    return plan_power(
        prometheus,
        [ErrorRateCheck(max_rate=0.01), LatencyCheck(quantile=0.99, max_ms=250)],
        Arms("default"),
        [1, 10, 100],
        judge="sequential",
        judge_options=None,
        bake_seconds=30,
        poll_seconds=2,
        now=now,
    )


def test_less_history_than_the_shortest_window_says_which_windows_were_tried() -> None:
    # 25 s of v1 at 200 requests/s: too little for a rate, and the note says why.
    powers, notes = _plan(_History(since=1_000.0, rate=200.0), now=1_025.0)
    assert powers == []
    assert notes[0] == (
        "error-rate: no traffic on v1 in Prometheus over any window of 30 s to 10 minutes "
        "before now, so its steps' power is unknown"
    )


def test_with_a_minute_of_history_every_judged_step_gets_a_statement() -> None:
    powers, notes = _plan(_History(since=1_000.0, rate=200.0), now=1_060.0)
    assert notes == []
    assert {p.weight for p in powers} == {1, 10}
