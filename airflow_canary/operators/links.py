"""Extra links of the analysis tasks: the step's Prometheus graph and an optional dashboard."""

from __future__ import annotations

import logging
import math
import string
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlencode

from airflow.sdk import BaseHook, BaseOperatorLink
from airflow.sdk.execution_time.xcom import XCom

from airflow_canary.timestamps import timestamp_or_none

log = logging.getLogger(__name__)

#: Placeholders a ``dashboard_url_template`` may use.
DASHBOARD_FIELDS = ("namespace", "stable_version", "canary_version", "start_ms", "end_ms")

# The per-step rate window of the graphed series: at least a few scrapes wide.
_MIN_SERIES_STEP_SECONDS = 30.0


@dataclass(frozen=True)
class CheckQueries:
    """The PromQL that shows one check for both arms."""

    check: str
    canary: str
    stable: str


@dataclass(frozen=True)
class Window:
    """The time span an analysis judged."""

    start: datetime
    end: datetime

    @classmethod
    def from_verdict(cls, verdict: Mapping[str, Any]) -> Window | None:
        window = verdict.get("window")
        if not isinstance(window, Mapping):
            return None
        start, end = timestamp_or_none(window.get("start")), timestamp_or_none(window.get("end"))
        if start is None or end is None or end < start:
            return None
        return cls(start, end)


def prometheus_graph_url(base_url: str, queries: Sequence[CheckQueries], window: Window) -> str:
    """Prometheus's ``/graph`` page with, per check, the canary then the stable query over ``window``.

    Panels are ``g0`` (first check, canary), ``g1`` (first check, stable), ``g2``... The
    range is the window rounded up to a whole second, ending at the window's end (UTC).
    """
    if not queries:
        raise ValueError("prometheus_graph_url needs at least one check's queries, got none")
    seconds = max(1, math.ceil((window.end - window.start).total_seconds()))
    end_input = window.end.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    params: list[tuple[str, str]] = []
    exprs = [expr for check in queries for expr in (check.canary, check.stable)]
    for index, expr in enumerate(exprs):
        panel = f"g{index}"
        params += [
            (f"{panel}.expr", expr),
            (f"{panel}.tab", "0"),
            (f"{panel}.range_input", f"{seconds}s"),
            (f"{panel}.end_input", end_input),
        ]
    return f"{base_url.rstrip('/')}/graph?{urlencode(params)}"


def queries_from_verdict(verdict: Mapping[str, Any]) -> list[CheckQueries]:
    """Queries recorded in the verdict (``"queries": [{"check", "canary", "stable"}, ...]``)."""
    raw = verdict.get("queries")
    if not isinstance(raw, list):
        return []
    return [
        CheckQueries(item["check"], item["canary"], item["stable"])
        for item in raw
        if isinstance(item, Mapping)
        and all(
            isinstance(item.get(key), str) and item.get(key)
            for key in ("check", "canary", "stable")
        )
    ]


def queries_from_analysis(analysis: Any, window_seconds: float) -> list[CheckQueries]:
    """The graphable queries of an analysis config's checks (``analysis.checks``, ``analysis.arms``).

    Per-step series show a check best; checks without one fall back to their windowed
    value, then to their raw counters.
    """
    arms = analysis.arms
    step = max(float(getattr(analysis, "poll_interval_seconds", 0.0)), _MIN_SERIES_STEP_SECONDS)
    found: list[CheckQueries] = []
    for check in analysis.checks:
        for by_role, suffix in (
            (check.series(arms, step), "series"),
            (check.values(arms, max(window_seconds, 1.0)), "value"),
            (check.counters(arms), "total"),
        ):
            canary, stable = by_role.get(f"canary.{suffix}"), by_role.get(f"stable.{suffix}")
            if canary and stable:
                found.append(CheckQueries(check.name, canary, stable))
                break
    return found


def prometheus_ui_base(conn_id: str) -> str:
    """The Prometheus UI address of a connection: its ``ui_url`` extra, else its API address."""
    from airflow_canary.hooks.prometheus import PrometheusEndpoint

    endpoint = PrometheusEndpoint.from_connection(BaseHook.get_connection(conn_id))
    return endpoint.ui_url or endpoint.base_url


def read_verdict(ti_key: Any) -> Mapping[str, Any] | None:
    """The task's verdict: XCom ``verdict``, else a ``return_value`` that is a verdict."""
    for key in ("verdict", "return_value"):
        value = XCom.get_value(ti_key=ti_key, key=key)
        if isinstance(value, Mapping) and isinstance(value.get("verdict"), str):
            return value
    return None


def read_evidence(ti_key: Any) -> Mapping[str, Any] | None:
    """What the links show: the verdict once there is one, else the record the analysis wrote
    when it started (XCom ``analysis``: its window runs from the start to the deadline)."""
    verdict = read_verdict(ti_key)
    if verdict is not None:
        return verdict
    record = XCom.get_value(ti_key=ti_key, key="analysis")
    return record if isinstance(record, Mapping) else None


def validate_dashboard_template(template: str | None) -> str | None:
    """Check a ``dashboard_url_template`` at DAG parse time; returns it unchanged."""
    if template is None:
        return None
    if not isinstance(template, str) or not template.strip():
        raise ValueError(f"dashboard_url_template must be a non-empty URL string, got {template!r}")
    if any(c.isspace() or not c.isprintable() for c in template):
        raise ValueError(
            f"dashboard_url_template must be a URL without spaces or control characters "
            f"(percent-encode them), got {template!r}"
        )
    if not template.lower().startswith(("http://", "https://")):
        # The UI shows it as a link: a javascript: or data: URL would run in the viewer's page.
        raise ValueError(
            f"dashboard_url_template must be an http:// or https:// URL, got {template!r}"
        )
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as err:
        raise ValueError(
            f"dashboard_url_template {template!r} is not a valid template: {err}"
        ) from None
    unknown = sorted(names - set(DASHBOARD_FIELDS))
    if unknown:
        raise ValueError(
            f"dashboard_url_template uses unknown placeholder(s) {', '.join(unknown)}; "
            f"expected only {', '.join('{' + f + '}' for f in DASHBOARD_FIELDS)}"
        )
    return template


def dashboard_url(
    template: str, *, namespace: str, stable_version: str, canary_version: str, window: Window
) -> str:
    return template.format(
        namespace=namespace,
        stable_version=stable_version,
        canary_version=canary_version,
        start_ms=int(window.start.timestamp() * 1000),
        end_ms=math.ceil(window.end.timestamp() * 1000),
    )


def analysis_of(operator: Any) -> Any:
    """The operator's analysis config, rebuilt from its rendered parameters when templated.

    ``canary_rollout()`` passes templates (``namespace="{{ params.namespace }}"``, ...): until
    they are rendered the config holds parse-time stand-ins, and a task resumed from the
    triggerer has rendered parameters but has not rebuilt its config yet.
    """
    resolve = getattr(operator, "resolve_analysis", None)
    if callable(resolve):
        try:
            return resolve()
        except (
            Exception
        ) as err:  # a link must never fail the task; fall back to the parse-time config
            log.warning("could not rebuild the analysis for its links: %s", err)
    return getattr(operator, "analysis", None)


class PrometheusLink(BaseOperatorLink):
    """ "Prometheus": the canary and stable queries of each check over the step's window.

    While the analysis runs, the window is its start to its deadline; once judged, the
    verdict's window.
    """

    name = "Prometheus"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        verdict = read_evidence(ti_key)
        window = Window.from_verdict(verdict) if verdict is not None else None
        if verdict is None or window is None:
            return ""
        analysis = analysis_of(operator)
        queries = queries_from_verdict(verdict)
        if not queries and analysis is not None:
            queries = queries_from_analysis(analysis, (window.end - window.start).total_seconds())
        conn_id = getattr(analysis, "prometheus_conn_id", None) or "prometheus_default"
        if not queries:
            return ""
        return prometheus_graph_url(prometheus_ui_base(conn_id), queries, window)


class DashboardLink(BaseOperatorLink):
    """ "Dashboard": the operator's ``dashboard_url_template`` filled in for the step's window."""

    name = "Dashboard"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        template = getattr(operator, "dashboard_url_template", None)
        if not template:
            return ""
        verdict = read_evidence(ti_key)
        window = Window.from_verdict(verdict) if verdict is not None else None
        if verdict is None or window is None:
            return ""
        analysis = analysis_of(operator)

        def field(name: str) -> str | None:
            # The verdict names what was judged; the config is the fallback for older verdicts.
            value = verdict.get(name)
            if isinstance(value, str) and value:
                return value
            return getattr(analysis, name, None)

        namespace, stable, canary = (
            field(name) for name in ("namespace", "stable_version", "canary_version")
        )
        if namespace is None or stable is None or canary is None:
            return ""
        return dashboard_url(
            template,
            namespace=namespace,
            stable_version=stable,
            canary_version=canary,
            window=window,
        )
