"""Timestamps as Kubernetes, Airflow and the prediction logs write them."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from airflow_canary.timestamps import parse_timestamp, timestamp_or_none

UTC_10 = datetime(2026, 12, 1, 10, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    "text",
    [
        "2026-12-01T10:00:00Z",  # Kubernetes' metav1.Time
        "2026-12-01T10:00:00z",  # RFC 3339 allows a lower-case z
        "2026-12-01T10:00:00+00:00",  # Python's isoformat()
        "2026-12-01T11:00:00+01:00",
        " 2026-12-01T10:00:00Z ",
    ],
)
def test_utc_and_offsets_name_the_same_instant(text: str) -> None:
    assert parse_timestamp(text) == UTC_10


def test_fractions_and_naive_text() -> None:
    assert parse_timestamp("2026-12-01T10:00:00.125Z") == UTC_10 + timedelta(milliseconds=125)
    assert parse_timestamp("2026-12-01T10:00:00").tzinfo is None


@pytest.mark.parametrize("text", ["", "yesterday", "2026-13-01T10:00:00Z", "Z"])
def test_what_is_not_a_timestamp_raises(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_timestamp_or_none_is_aware_or_none() -> None:
    assert timestamp_or_none("2026-12-01T10:00:00") == UTC_10  # naive text is UTC
    assert timestamp_or_none("2026-12-01T10:00:00Z") == UTC_10
    for value in (None, "", "soon", 1764583200, b"2026-12-01T10:00:00Z"):
        assert timestamp_or_none(value) is None
