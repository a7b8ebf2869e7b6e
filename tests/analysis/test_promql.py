"""PromQL building: escaping, label validation and placeholder templates."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from airflow_canary.analysis import (
    AnalysisError,
    Arms,
    ErrorRateCheck,
    LatencyCheck,
    PromQLCheck,
    escape_label_value,
)
from airflow_canary.analysis.promql import UNION_LABEL, render_template, selector, union

INJECTION = 'v2"} or vector(1) #'


def unquoted_parts(promql: str) -> str:
    """The PromQL text outside double-quoted strings, honouring backslash escapes."""
    out, in_string, escaped = [], False, False
    for ch in promql:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        else:
            out.append(ch)
    assert not in_string, f"unterminated string in {promql!r}"
    return "".join(out)


def test_escape_label_value_escapes_backslash_quote_newline() -> None:
    assert escape_label_value('a\\b"c\nd') == 'a\\\\b\\"c\\nd'


@given(st.text())
def test_escaped_values_never_leave_their_string(value: str) -> None:
    promql = selector("m", {"version": value})
    assert unquoted_parts(promql) == "m{version=}"


def test_injection_in_version_is_rejected_naming_the_value() -> None:
    with pytest.raises(
        AnalysisError, match=r"canary_version must be a Kubernetes label value.*vector\(1\)"
    ):
        Arms("default", canary_version=INJECTION)


def test_bad_namespace_is_rejected_naming_the_value() -> None:
    with pytest.raises(
        AnalysisError, match="namespace must be a Kubernetes namespace name.*'Prod_NS'"
    ):
        Arms("Prod_NS")


def test_same_versions_rejected() -> None:
    with pytest.raises(AnalysisError, match="must differ"):
        Arms("default", "v1", "v1")


def test_template_values_are_escaped_even_if_not_label_safe() -> None:
    rendered = render_template('m{version="{{ version }}"}', {"version": INJECTION})
    assert unquoted_parts(rendered) == "m{version=}"


def test_promql_check_renders_each_arm_and_interval() -> None:
    check = PromQLCheck(
        name="queue",
        query='sum(rate(jobs_failed{ns="{{namespace}}",version="{{ version }}"}[{{ interval }}]))',
        max_ratio=2,
    )
    values = check.values(Arms("models", "v1", "v2"), 90)
    assert values == {
        "canary.value": 'sum(rate(jobs_failed{ns="models",version="v2"}[90s]))',
        "stable.value": 'sum(rate(jobs_failed{ns="models",version="v1"}[90s]))',
    }


def test_promql_check_without_version_runs_once() -> None:
    check = PromQLCheck(name="gpu", query="max(gpu_util)", max_value=0.95)
    assert list(check.values(Arms("default"), 60)) == ["canary.value"]


@pytest.mark.parametrize(
    ("query", "match"),
    [
        ("sum(x{a='{{ pod }}'})", r"unknown placeholder\(s\) \['pod'\]"),
        ("sum(x{a='{{ version'})", "malformed placeholder"),
        ("sum(x{a='{{ 1 }}'})", "malformed placeholder"),
    ],
)
def test_promql_check_rejects_bad_placeholders(query: str, match: str) -> None:
    with pytest.raises(AnalysisError, match=match):
        PromQLCheck(name="custom", query=query, max_value=1)


def test_istio_queries_use_standard_labels() -> None:
    counters = ErrorRateCheck(max_rate=0.01, reporter="destination").counters(
        Arms("shop", "v1", "v2")
    )
    assert counters["canary.total"] == (
        'sum(istio_requests_total{reporter="destination",'
        'destination_workload_namespace="shop",destination_version="v2"})'
    )
    assert (
        'response_code=~"5.."' in counters["stable.bad"]
        and 'destination_version="v1"' in counters["stable.bad"]
    )


def test_auto_reporter_prefers_the_callers_report_and_falls_back_to_the_pods() -> None:
    """Istio's caller-side proxy (reporter="source") counts each client request once; the
    serving pod's (reporter="destination") counts every retry attempt."""
    counters = ErrorRateCheck(max_rate=0.01).counters(Arms("shop", "v1", "v2"))
    total = counters["canary.total"]
    source, _, destination = total.partition(" or on() ")
    assert 'reporter="source"' in source and 'reporter="destination"' not in source
    assert 'reporter="destination"' in destination and 'reporter="source"' not in destination
    assert " and on() " in source
    bad = counters["canary.bad"]
    assert bad.count(" or on() ") == 1 and 'response_code=~"5.."' in bad


@pytest.mark.parametrize("reporter", ["", "client", "waypoint", None])
def test_reporter_must_be_one_istio_reports(reporter: object) -> None:
    with pytest.raises(AnalysisError, match="reporter must be one of auto, source, destination"):
        ErrorRateCheck(max_rate=0.01, reporter=reporter)  # type: ignore[arg-type]
    with pytest.raises(AnalysisError, match="reporter must be one of"):
        LatencyCheck(max_ms=500, reporter=reporter)  # type: ignore[arg-type]


def test_union_tags_each_expression_with_its_index() -> None:
    text = union(['sum(a{x="1"})', "b or c"])
    assert text == (
        f'label_replace(sum(a{{x="1"}}), "{UNION_LABEL}", "0", "", "") or '
        f'label_replace(b or c, "{UNION_LABEL}", "1", "", "")'
    )
    with pytest.raises(AnalysisError, match="at least one"):
        union([])
