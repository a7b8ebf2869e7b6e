"""Shapes of DAG-author parameters (lists, mappings, flags, numbers), checked before anything uses them.

A list parameter given a string would be read character by character, a flag given ``"false"``
would be true, a mapping given a list fails deep inside with a ``TypeError``: these functions
refuse such values up front with ``error`` (the caller layer's ``ValueError`` subclass) naming
the parameter, the value and what is expected.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any


def sequence(
    what: str, value: object, error: type[ValueError] = ValueError, *, example: str = ""
) -> tuple[Any, ...]:
    """``value``'s items as a tuple when it is a list, tuple or other non-text iterable.

    Strings, bytes, mappings and scalars are refused (a string is not a list of its characters).
    ``example`` (e.g. ``"[1, 10, 50, 100]"``) is shown in the message.
    """
    if isinstance(value, (str, bytes, bytearray, Mapping)) or not isinstance(value, Iterable):
        hint = f" such as {example}" if example else ""
        raise error(f"{what} must be a list{hint}, got {value!r}")
    return tuple(value)


def mapping(
    what: str, value: object, error: type[ValueError] = ValueError
) -> dict[str, Any] | None:
    """``value`` as a dict with string keys, or None for None; anything else raises."""
    if value is None:
        return None
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise error(f"{what} must be a mapping of option names to values or None, got {value!r}")
    return dict(value)


def flag(what: str, value: object, error: type[ValueError] = ValueError) -> bool:
    """``value`` when it is True or False; ``"false"``, 0 or None are refused, not coerced."""
    if not isinstance(value, bool):
        raise error(f"{what} must be True or False, got {value!r}")
    return value


def optional_flag(what: str, value: object, error: type[ValueError] = ValueError) -> bool | None:
    """``value`` when it is True, False or None (None: the configured default)."""
    return None if value is None else flag(what, value, error)


def is_finite_number(value: object) -> bool:
    """True for an int or float (not a bool) that is finite; an int beyond float's range is not."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


__all__ = ["flag", "is_finite_number", "mapping", "optional_flag", "sequence"]
