"""Jinja-templated operator parameters: which values can only be checked after rendering."""

from __future__ import annotations

from collections.abc import Mapping


def is_template(value: object) -> bool:
    """True when ``value`` still holds Jinja markup, so it can only be checked after rendering."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    if isinstance(value, Mapping):
        return any(is_template(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(is_template(v) for v in value)
    return False
