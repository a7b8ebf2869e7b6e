"""Safe PromQL building: label matchers with escaped values, and ``{{ placeholder }}`` templates."""

from __future__ import annotations

import re
from collections.abc import Mapping

from airflow_canary import names
from airflow_canary.analysis.values import AnalysisError

# Istio's default buckets for istio_request_duration_milliseconds (proxy stats config).
ISTIO_DURATION_BUCKETS_MS: tuple[float, ...] = (
    0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
    300000, 600000, 1800000, 3600000,
)  # fmt: skip

TEMPLATE_PLACEHOLDERS = frozenset({"namespace", "version", "interval"})
_PLACEHOLDER = re.compile(r"\{\{\s*([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")


def escape_label_value(value: str) -> str:
    """Escape ``value`` for use inside a double-quoted PromQL string."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def require_label_name(what: str, value: object) -> str:
    return names.prometheus_label_name(what, value, AnalysisError)


def selector(metric: str, labels: Mapping[str, str], extra: str = "") -> str:
    """``metric{a="x",b="y"<extra>}`` with every value escaped; ``extra`` is trusted PromQL."""
    parts = [f'{name}="{escape_label_value(value)}"' for name, value in labels.items()]
    if extra:
        parts.append(extra)
    return f"{metric}{{{','.join(parts)}}}"


def template_placeholders(template: str) -> set[str]:
    """The placeholder names used in ``template``; unknown ones raise AnalysisError."""
    names = set(_PLACEHOLDER.findall(template))
    unknown = names - TEMPLATE_PLACEHOLDERS
    if unknown:
        raise AnalysisError(
            f"unknown placeholder(s) {sorted(unknown)} in query {template!r}; "
            f"known: {sorted(TEMPLATE_PLACEHOLDERS)}"
        )
    leftover = _PLACEHOLDER.sub("", template)
    if "{{" in leftover or "}}" in leftover:
        raise AnalysisError(
            f"malformed placeholder in query {template!r}; write {{{{ name }}}} with a name "
            f"from {sorted(TEMPLATE_PLACEHOLDERS)}"
        )
    return names


def render_template(template: str, values: Mapping[str, str]) -> str:
    """Substitute ``{{ name }}`` placeholders, escaping each value for a quoted label matcher.

    Values are escaped (backslash, double quote, newline) because placeholders are meant to
    sit inside ``label="{{ version }}"``; a value can then never close the string early.
    """
    template_placeholders(template)

    def substitute(match: re.Match[str]) -> str:
        return escape_label_value(values[match.group(1)])

    return _PLACEHOLDER.sub(substitute, template)


def duration(seconds: float) -> str:
    """A PromQL range duration of whole seconds (at least 1s)."""
    return f"{max(1, round(seconds))}s"


def bucket_bound(le: float) -> str:
    """A matcher for one histogram bucket bound, whichever way the exporter formatted it.

    Envoy writes ``le="500"`` and Python clients ``le="500.0"``; the regex accepts both.
    """
    text = format(le, "g") if le != int(le) else str(int(le))
    return f'le=~"{re.escape(text)}(\\\\.0+)?"' if "." not in text else f'le="{text}"'
