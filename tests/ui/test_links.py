"""Extra links of the analysis tasks: URL building, and the links a real task run records."""

from __future__ import annotations

import math
from datetime import datetime, timedelta, timezone
from urllib.parse import parse_qs, quote, urlsplit

import pytest

from airflow_canary.analysis.checks import ErrorRateCheck, LatencyCheck
from airflow_canary.operators.links import (
    CheckQueries,
    Window,
    dashboard_url,
    prometheus_graph_url,
    queries_from_analysis,
    queries_from_verdict,
    validate_dashboard_template,
)
from airflow_canary.triggers.health import HealthAnalysisConfig
from tests.fixtures.stack import RolloutStack
from tests.ui.conftest import ApiServer, UiRuns

DASHBOARD_TEMPLATE = (
    "https://grafana.example/d/canary?var-ns={namespace}&var-stable={stable_version}"
    "&var-canary={canary_version}&from={start_ms}&to={end_ms}"
)

END = datetime(2026, 11, 26, 4, 50, 0, tzinfo=timezone.utc)
WINDOW = Window(END - timedelta(seconds=61.5), END)


def test_graph_url_puts_canary_then_stable_per_check_over_the_window() -> None:
    queries = [
        CheckQueries("error-rate", "canary_q", "stable_q"),
        CheckQueries("latency", "c2", "s2"),
    ]
    url = urlsplit(prometheus_graph_url("http://prom:9090/", queries, WINDOW))
    params = parse_qs(url.query)
    assert (url.netloc, url.path) == ("prom:9090", "/graph")
    assert [params[f"g{i}.expr"][0] for i in range(4)] == ["canary_q", "stable_q", "c2", "s2"]
    assert params["g0.range_input"] == ["62s"]
    assert params["g3.end_input"] == ["2026-11-26 04:50:00"]


def test_graph_url_needs_queries() -> None:
    with pytest.raises(ValueError, match="at least one check"):
        prometheus_graph_url("http://prom:9090", [], WINDOW)


def test_queries_from_the_operators_checks_select_each_arm() -> None:
    config = HealthAnalysisConfig.from_params(
        namespace="models", checks=[ErrorRateCheck(max_rate=0.05), LatencyCheck(max_ms=500)]
    )
    queries = queries_from_analysis(config, 60.0)
    assert [q.check for q in queries] == ["error-rate", "latency"]
    for query in queries:
        assert (
            'destination_version="v2"' in query.canary
            and 'destination_version="v1"' in query.stable
        )
        assert 'destination_workload_namespace="models"' in query.canary


def test_queries_recorded_in_the_verdict_win_and_bad_entries_are_dropped() -> None:
    verdict = {"queries": [{"check": "x", "canary": "a", "stable": "b"}, {"check": "y"}, "junk"]}
    assert queries_from_verdict(verdict) == [CheckQueries("x", "a", "b")]
    assert queries_from_verdict({"queries": "nope"}) == []


def test_window_from_verdict_rejects_missing_or_reversed_times() -> None:
    good = {"window": {"start": "2026-11-26T04:49:00+00:00", "end": "2026-11-26T04:50:00Z"}}
    assert Window.from_verdict(good) == Window(END - timedelta(minutes=1), END)
    assert (
        Window.from_verdict(
            {"window": {"start": good["window"]["end"], "end": good["window"]["start"]}}
        )
        is None
    )
    assert Window.from_verdict({"window": "yesterday"}) is None


def test_dashboard_template_is_checked_and_filled() -> None:
    assert validate_dashboard_template(DASHBOARD_TEMPLATE) == DASHBOARD_TEMPLATE
    with pytest.raises(ValueError, match=r"unknown placeholder\(s\) dag_id, start"):
        validate_dashboard_template("https://g/?a={start}&b={dag_id}")
    with pytest.raises(ValueError, match="non-empty URL"):
        validate_dashboard_template(" ")
    url = dashboard_url(
        "https://g/?ns={namespace}&from={start_ms}&to={end_ms}&c={canary_version}&s={stable_version}",
        namespace="models",
        stable_version="v1",
        canary_version="v2",
        window=WINDOW,
    )
    end_ms = int(END.timestamp()) * 1000
    assert url == f"https://g/?ns=models&from={end_ms - 61_500}&to={end_ms}&c=v2&s=v1"


def test_a_real_analysis_step_records_its_prometheus_link(
    api_server: ApiServer, rollout_runs: UiRuns, rollout_stack: RolloutStack
) -> None:
    run = rollout_runs.healthy
    with api_server.client("viewer") as client:
        links = client.get(
            f"/api/v2/dags/canary_rollout/dagRuns/{quote(run.run_id, safe='')}"
            "/taskInstances/canary.step_1.analyze/links"
        )
        rollouts = client.get("/canary-rollouts/rollouts", params={"dag_id": "canary_rollout"})
    assert links.status_code == 200, links.text
    extra = links.json()["extra_links"]
    prometheus = urlsplit(extra["Prometheus"])
    # The stack's Prometheus connection has no ui_url: the link uses its API address.
    assert prometheus.netloc == f"127.0.0.1:{rollout_stack.stack.prometheus_port}"
    params = parse_qs(prometheus.query)
    # One canary and one stable panel per check of the example DAG, in the rendered namespace.
    verdict = run.xcom("canary.step_1.analyze", "verdict")
    panels = sorted(key for key in params if key.endswith(".expr"))
    assert len(panels) == 2 * len(verdict["checks"])
    assert 'destination_version="v2"' in params["g0.expr"][0]
    assert 'destination_version="v1"' in params["g1.expr"][0]
    assert 'destination_workload_namespace="default"' in params["g0.expr"][0]
    window = Window.from_verdict(verdict)
    assert window is not None
    seconds = math.ceil((window.end - window.start).total_seconds())
    assert params["g0.range_input"] == [f"{seconds}s"]
    assert params["g0.end_input"] == [window.end.strftime("%Y-%m-%d %H:%M:%S")]
    # canary_rollout() sets no dashboard template, so that link is empty.
    assert not extra.get("Dashboard")

    [rollout] = [r for r in rollouts.json()["rollouts"] if r["run_id"] == run.run_id]
    assert rollout["steps"][0]["prometheus_url"] == extra["Prometheus"]
    assert rollout["steps"][0]["dashboard_url"] is None
