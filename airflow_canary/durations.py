"""Durations given to the provider: a ``timedelta`` or a number of seconds, read by one parser."""

from __future__ import annotations

import math
from datetime import timedelta

#: What a duration parameter accepts: a timedelta, seconds as a number, or seconds as rendered
#: template text (``"{{ params.bake_time_seconds }}"`` renders to ``"120"``).
Duration = timedelta | float | int | str


#: The longest duration accepted: a year. Deadlines are computed from durations as datetimes and
#: timedeltas, whose range a larger value could leave.
MAX_SECONDS = 365 * 24 * 3600.0


class DurationError(ValueError):
    """A duration parameter is not a positive number of seconds; the message names it."""


def to_seconds(what: str, value: object, *, allow_zero: bool = False) -> float:
    """Return ``value`` as seconds (float), finite and positive (or zero with ``allow_zero``).

    :param what: the parameter's name, used in the error message (e.g. ``"bake_time"``)
    :param value: a ``timedelta``, an int or float number of seconds, or a numeric string
    :param allow_zero: accept 0 as well
    :raises DurationError: naming ``what`` and the value, when it is a bool, not a number, not
        finite, negative, zero without ``allow_zero``, or above ``MAX_SECONDS`` (a year)
    """
    try:
        if isinstance(value, timedelta):
            seconds = value.total_seconds()
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            seconds = float(value)
        elif isinstance(value, str) and _is_number(value):
            seconds = float(value)
        else:
            raise DurationError(f"{what} must be a timedelta or a number of seconds, got {value!r}")
    except OverflowError:  # an int beyond float's range
        seconds = math.inf
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        expected = "zero or positive" if allow_zero else "positive"
        raise DurationError(f"{what} must be {expected}, got {value!r}")
    if seconds > MAX_SECONDS:
        raise DurationError(
            f"{what} must be at most {MAX_SECONDS:,.0f} seconds (365 days), got {value!r}"
        )
    return seconds


def literal_seconds(value: object, default: float) -> float:
    """``value`` in seconds when it is a literal duration, else ``default`` (e.g. a template)."""
    try:
        return to_seconds("duration", value)
    except DurationError:
        return default


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


__all__ = ["MAX_SECONDS", "Duration", "DurationError", "literal_seconds", "to_seconds"]
