"""Timestamps read by the provider and the local mesh: ISO 8601 / RFC 3339 text as datetimes."""

from __future__ import annotations

from datetime import datetime, timezone


def parse_timestamp(text: str) -> datetime:
    """``text`` as a datetime: ISO 8601, such as ``2026-12-01T10:00:00.125Z`` or
    ``2026-12-01T11:00:00+01:00``.

    A trailing ``Z`` or ``z`` (UTC, as Kubernetes and RFC 3339 write it) is read on every
    supported Python: 3.10's ``datetime.fromisoformat`` reads numeric offsets only. Text
    without an offset gives a naive datetime; callers that need an instant check ``tzinfo``.

    :raises ValueError: when ``text`` is not an ISO 8601 date-time
    """
    text = text.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    return datetime.fromisoformat(text)


def timestamp_or_none(value: object) -> datetime | None:
    """``value`` as a timezone-aware datetime (text without an offset is taken as UTC); None
    when it is not a string or not ISO 8601 (``parse_timestamp``)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = parse_timestamp(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
