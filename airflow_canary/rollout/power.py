"""The plan's power statement: which steps of a rollout are too thin to judge their checks.

Reads each count check's events and bad share on the service from Prometheus over the last
ten minutes, or the longest window it has (before the rollout, stable serves everything) and asks
:func:`airflow_canary.analysis.power.step_power` how likely each judged step is to catch a
canary at twice each limit within its bake time. The plan logs every sentence (thin steps as
warnings) and publishes them; it never stops a rollout, and a Prometheus that cannot answer
only means no statement.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from airflow_canary.analysis import Arms, Check, make_judge
from airflow_canary.analysis.power import (
    LOOKBACKS_SECONDS,
    StepPower,
    service_rates,
    step_power,
)

log = logging.getLogger(__name__)


def plan_power(
    prometheus: Any,
    checks: Sequence[Check],
    arms: Arms,
    steps: Sequence[int],
    *,
    judge: str,
    judge_options: dict[str, Any] | None,
    bake_seconds: float,
    poll_seconds: float,
    now: float | None = None,
) -> tuple[list[StepPower], list[str]]:
    """Each judged step's power per count check, and notes on what could not be assessed.

    :param prometheus: a :class:`~airflow_canary.hooks.prometheus.PrometheusHook` (its
        ``query_scalar(promql, at)`` is used)
    :param checks: the rollout's checks; only count checks are assessed
    :param arms: the namespace and the two versions' metric labels
    :param steps: the weights in percent; 100 is not judged and is skipped
    :param judge: the judge's name; only the sequential judge has a power statement
    :param judge_options: its options, as the analysis tasks get them (``budget_share``)
    :param bake_seconds: each step's bake time, seconds
    :param poll_seconds: the analysis poll interval, seconds
    :param now: epoch seconds of the reading (default: the current time)
    :returns: (powers for every judged step and assessed check, notes on checks skipped)
    """
    from airflow_canary.analysis.judges.sequential import SequentialJudge
    from airflow_canary.hooks.prometheus import PrometheusError

    sequential = make_judge(judge, **(judge_options or {}))
    if not isinstance(sequential, SequentialJudge):
        return [], [f"no power statement for the {judge!r} judge (only 'sequential' has one)"]
    at = time.time() if now is None else now
    rates = {}
    notes = []
    for check in checks:
        try:
            found = service_rates(check, arms, prometheus.query_scalar, at)
        except PrometheusError as err:
            return [], [f"no power statement: Prometheus could not answer ({err})"]
        if found is None:
            if check.is_count:
                shortest = min(LOOKBACKS_SECONDS)
                notes.append(
                    f"{check.name}: no traffic on {arms.stable_version} in Prometheus over any "
                    f"window of {shortest:g} s to {max(LOOKBACKS_SECONDS) / 60:g} minutes "
                    "before now, so its steps' power is unknown"
                )
            continue
        rates[check.name] = found
    powers = [
        power
        for weight in steps
        if weight < 100
        for power in step_power(sequential, list(checks), rates, weight, bake_seconds, poll_seconds)
    ]
    return powers, notes


__all__ = ["plan_power"]
