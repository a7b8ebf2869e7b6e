"""A trigger's final event waits ``[canary] trigger_settle_seconds`` after the trigger started
(airflow_canary/triggers/settle.py: Airflow fails a resumed task on the stale executor report
of its deferral, apache/airflow#67287 and #72716)."""

from __future__ import annotations

import asyncio
import time

import pytest

from airflow_canary.triggers.settle import DEFAULT_SETTLE_SECONDS, settle, settle_seconds


def test_the_default_is_ten_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__CANARY__TRIGGER_SETTLE_SECONDS", raising=False)
    assert settle_seconds() == DEFAULT_SETTLE_SECONDS == 10.0


@pytest.mark.parametrize("raw", ["soon", "-1", "nan"])
def test_a_setting_that_is_not_a_number_of_seconds_names_the_value(
    monkeypatch: pytest.MonkeyPatch, raw: str
) -> None:
    monkeypatch.setenv("AIRFLOW__CANARY__TRIGGER_SETTLE_SECONDS", raw)
    with pytest.raises(ValueError) as err:
        settle_seconds()
    assert str(err.value) == (
        f"[canary] trigger_settle_seconds must be a number of seconds >= 0, got {raw!r}"
    )


def test_an_event_decided_early_waits_out_the_rest_of_the_settle_time() -> None:
    started = time.monotonic()
    held = asyncio.run(settle(started, 0.5))
    assert held > 0
    assert time.monotonic() - started >= 0.5


def test_an_event_decided_after_the_settle_time_does_not_wait(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AIRFLOW__CANARY__TRIGGER_SETTLE_SECONDS", "5")
    assert asyncio.run(settle(time.monotonic() - 6)) == 0.0
    monkeypatch.setenv("AIRFLOW__CANARY__TRIGGER_SETTLE_SECONDS", "0")
    assert asyncio.run(settle(time.monotonic())) == 0.0
