"""PromQL built from values: a label value can never end its string early or add a matcher.

Prometheus lexes a double-quoted string up to the first unescaped ``"`` and refuses a raw
newline in it (promql/parser/lex.go ``lexString``), then unquotes it with Go's
``strconv.Unquote``. ``unquote`` below follows those rules for the escapes our escaper writes.
"""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.analysis import (
    ErrorRateCheck,
    LatencyCheck,
    ModelAccuracyCheck,
    PredictionDriftCheck,
    PromQLCheck,
)
from airflow_canary.analysis.promql import escape_label_value, render_template, selector
from airflow_canary.analysis.values import Arms
from tests.hostile.values import INJECTIONS

HOSTILE = settings(max_examples=200, deadline=None)
_ESCAPES = {"\\": "\\", '"': '"', "n": "\n", "r": "\r", "t": "\t"}


def lex_string(text: str, start: int) -> tuple[str, int]:
    """The string literal opening at ``text[start]`` (a ``"``), unquoted, and the index after it."""
    assert text[start] == '"'
    out, i = [], start + 1
    while True:
        c = text[i]
        if c == "\n":
            raise AssertionError(f"raw newline inside a PromQL string: {text!r}")
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            out.append(_ESCAPES[text[i + 1]])
            i += 2
            continue
        out.append(c)
        i += 1


@HOSTILE
@given(value=st.one_of(st.sampled_from(INJECTIONS), st.text()))
def test_an_escaped_label_value_is_exactly_one_string(value: str) -> None:
    query = selector("istio_requests_total", {"destination_version": value}, 'reporter="source"')
    opening = query.index('"')
    unquoted, end = lex_string(query, opening)
    assert unquoted == value
    assert query[end:] == ',reporter="source"}'


@HOSTILE
@given(value=st.one_of(st.sampled_from(INJECTIONS), st.text()))
def test_a_template_placeholder_is_filled_inside_its_quotes_only(value: str) -> None:
    query = render_template('sum(up{version="{{ version }}"}) by (job)', {"version": value})
    unquoted, end = lex_string(query, query.index('"'))
    assert unquoted == value and query[end:] == "}) by (job)"
    assert escape_label_value(value).count('"') == escape_label_value(value).count('\\"')


_VERSION = st.from_regex(r"[A-Za-z0-9]([-A-Za-z0-9_.]{0,20}[A-Za-z0-9])?", fullmatch=True)
_NAMESPACE = st.from_regex(r"[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?", fullmatch=True)


@HOSTILE
@given(namespace=_NAMESPACE, stable=_VERSION, canary=_VERSION)
def test_every_check_quotes_the_arms_values_it_selects_on(
    namespace: str, stable: str, canary: str
) -> None:
    """For any valid arms, every label matcher of every query is one whole string literal."""
    if stable == canary:
        return
    arms = Arms(namespace, stable, canary)
    checks = [
        ErrorRateCheck(max_rate=0.01),
        LatencyCheck(max_ms=500, slo_ms=250),
        ModelAccuracyCheck(min_accuracy=0.9, namespace_label="namespace"),
        PredictionDriftCheck(max_psi=0.2),
        PromQLCheck(name="q", query='x{ns="{{ namespace }}",v="{{ version }}"}', max_ratio=2),
    ]
    for check in checks:
        queries = [*check.counters(arms).values(), *check.values(arms, 60).values()]
        for query in queries:
            for match in re.finditer(r'(\w+)(=|!=|=~|!~)"', query):
                value, _ = lex_string(query, match.end() - 1)
                if match.group(1) in ("destination_version", "version", "v"):
                    assert value in (stable, canary), query
                if match.group(1) in ("destination_workload_namespace", "namespace", "ns"):
                    assert value == namespace, query
