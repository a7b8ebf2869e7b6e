"""Holding a trigger's final event until the task's deferral has settled in the scheduler.

When a task defers, its worker process exits and the executor reports that exit as a success
of the same try. If the trigger fires before the scheduler has processed that report, and the
scheduler has meanwhile queued (or started) the resumed task, Airflow takes the stale report
for an external state change and fails the try ("Executor ... reported that the task instance
... finished with state success, but the task instance's state attribute is queued"):
apache/airflow#67287 (queued) and #72716 (running); the guard of #66431 covers only a task still
``scheduled`` (Airflow 3.3.2, ``SchedulerJobRunner._process_executor_events``). With no retries
left the analysis fails and a healthy canary is rolled back.

A trigger here that decides within seconds of deferring (a FAIL at the first polls, a replay
of overdue polls by a late triggerer, pods already ready) therefore keeps its final event until
``[canary] trigger_settle_seconds`` (default 10) have passed since it started. Anything urgent
is done before the wait: the in-trigger rollback moves traffic first, then the event waits.
The fault suite saw the stale report processed up to 6.3 s after the deferral on a loaded
2-core machine. It is a mitigation of an Airflow race with a margin, not a guarantee.
"""

from __future__ import annotations

import asyncio
import time

#: seconds a trigger keeps its final event after it started (``[canary] trigger_settle_seconds``)
DEFAULT_SETTLE_SECONDS = 10.0


def settle_seconds() -> float:
    """``[canary] trigger_settle_seconds``: a number >= 0 (0 turns the wait off)."""
    from airflow.sdk import conf

    raw = conf.get("canary", "trigger_settle_seconds", fallback=str(DEFAULT_SETTLE_SECONDS))
    try:
        seconds = float(raw)
    except (TypeError, ValueError):
        raise ValueError(
            f"[canary] trigger_settle_seconds must be a number of seconds >= 0, got {raw!r}"
        ) from None
    if not seconds >= 0:  # NaN too
        raise ValueError(
            f"[canary] trigger_settle_seconds must be a number of seconds >= 0, got {raw!r}"
        )
    return seconds


async def settle(started: float, seconds: float | None = None) -> float:
    """Sleep until ``seconds`` (default: the configured ones) have passed since ``started``
    (a ``time.monotonic()`` reading); returns the seconds slept."""
    wait = (settle_seconds() if seconds is None else seconds) - (time.monotonic() - started)
    if wait <= 0:
        return 0.0
    await asyncio.sleep(wait)
    return wait


__all__ = ["DEFAULT_SETTLE_SECONDS", "settle", "settle_seconds"]
