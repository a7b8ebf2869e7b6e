"""Safe PromQL building: label matchers with escaped values, and ``{{ placeholder }}`` templates."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

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


#: The label :func:`union` tags each expression's series with (the expression's index).
UNION_LABEL = "canary_query"


def union(expressions: Sequence[str]) -> str:
    """One expression whose instant vector holds the series of every one of ``expressions``,
    each tagged with :data:`UNION_LABEL` = its index in ``expressions`` ("0", "1", ...).

    ``label_replace(v, dst, replacement, "", "")`` sets ``dst`` on every series of ``v`` (the
    empty regex matches the absent source label), and ``a or b`` keeps every series of ``a``
    plus those of ``b`` whose label set ``a`` lacks, which after tagging is all of them. So
    several queries of one poll cost one HTTP request and are evaluated at the same instant,
    each series' value as if it were asked alone (Prometheus docs: "Functions" and "Logical/set
    binary operators"). An expression that is a scalar, not a vector, makes the union fail.
    """
    if not expressions:
        raise AnalysisError("union needs at least one PromQL expression")
    return " or ".join(
        f'label_replace({expression}, "{UNION_LABEL}", "{index}", "", "")'
        for index, expression in enumerate(expressions)
    )
