"""Field cases: telemetry shapes seen on real Istio clusters, served to a real Prometheus.

Each case in ``tests/data/field-cases/`` lists the cumulative series Prometheus holds after
a minute of traffic. The test serves nothing at the step's start (the baseline), then the
case's series, lets a real Prometheus scrape both, and runs the analysis's own PromQL at
those two instants through the product's query path.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.analysis import (
    AnalysisError,
    Arms,
    CanaryAnalysis,
    Check,
    ErrorRateCheck,
    LatencyCheck,
    PromQLRatioCheck,
    Status,
    Verdict,
)
from airflow_canary.hooks.prometheus import PrometheusHook
from airflow_canary.local.tools.prometheus import PrometheusServer, ScrapeTarget, free_port
from airflow_canary.triggers.health import run_query

CASES = Path(__file__).parent.parent / "data" / "field-cases"
POLL = 15.0


def load_series(name: str) -> list[dict[str, Any]]:
    return yaml.safe_load((CASES / name).read_text())["series"]


def exposition(series: list[dict[str, Any]]) -> str:
    """The Prometheus text format of ``series`` (untyped samples, labels as given)."""
    lines = []
    for item in series:
        labels = {k: str(v) for k, v in item.items() if k not in ("__name__", "value")}
        body = ",".join(f'{k}="{v}"' for k, v in labels.items())
        lines.append(f"{item['__name__']}{{{body}}} {float(item['value'])}")
    return "\n".join(lines) + "\n"


class TextExporter:
    """An HTTP endpoint serving whatever exposition text the test sets, and a scrape count."""

    def __init__(self) -> None:
        self.body = ""
        self.scrapes = 0
        exporter = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                data = exporter.body.encode()
                exporter.scrapes += 1
                self.send_response(200)
                self.send_header("Content-Type", "text/plain; version=0.0.4")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                return None

        self.port = free_port()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, body: str) -> float:
        """Serve ``body`` from now on; returns once Prometheus scraped it twice (its time)."""
        self.body = body
        seen = self.scrapes
        deadline = time.monotonic() + 30
        while self.scrapes < seen + 2:
            if time.monotonic() > deadline:
                raise TimeoutError("Prometheus did not scrape the field case")
            time.sleep(0.05)
        time.sleep(0.3)  # let the scrape land in the head block
        return time.time()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def field_prometheus(
    prometheus_factory, prometheus_conn_env
) -> Iterator[tuple[TextExporter, PrometheusServer]]:
    exporter = TextExporter()
    try:
        server = prometheus_factory([ScrapeTarget("127.0.0.1", exporter.port, "/metrics")])
        prometheus_conn_env(server.url)
        yield exporter, server
    finally:
        exporter.stop()


def judge_case(
    field_prometheus: tuple[TextExporter, PrometheusServer],
    series: list[dict[str, Any]],
    checks: list[Check],
    polls: int = 1,
    growing: bool = False,
) -> Verdict:
    """Baseline with every series of the case at zero, then ``series``; ``polls`` later polls
    read the same data, or with ``growing`` the series' values times the poll's number (traffic
    going on as it did). (A baseline at which every series is absent is no baseline: it reads as
    a gap in Prometheus's history; see tests/analysis/test_canary.py.)"""
    exporter, _ = field_prometheus
    hook = PrometheusHook()
    before = exporter.serve(exposition([{**item, "value": 0} for item in series]))
    after = exporter.serve(exposition(series))
    times = [after]
    for i in range(2, polls + 1 if growing else 0):
        times.append(exporter.serve(exposition([{**x, "value": x["value"] * i} for x in series])))
    analysis = CanaryAnalysis(
        Arms("team-a"), checks, bake_time_seconds=60, poll_interval_seconds=POLL
    )

    async def answer(elapsed: float, at: float) -> Verdict:
        queries = analysis.plan(elapsed)
        samples = {q.id: await run_query(hook, q, at) for q in queries}
        return analysis.observe(elapsed, samples)

    async def drive() -> Verdict:
        verdict = await answer(0, before)
        for i in range(1, polls + 1):
            verdict = await answer(i * POLL, times[min(i, len(times)) - 1])
            if verdict.final:
                break
        return verdict

    return asyncio.run(drive())


def test_grpc_failures_with_http_200_count_as_errors(field_prometheus) -> None:
    """05: gRPC UNAVAILABLE travels as HTTP 200 with grpc_response_status="14" (Istio's
    standard metric labels); 20% of the canary's calls failing must not pass as 0%."""
    verdict = judge_case(
        field_prometheus, load_series("05-grpc-errors.yaml"), [ErrorRateCheck(max_rate=0.01)]
    )
    assert verdict.status is Status.FAIL and verdict.final
    (check,) = verdict.checks
    assert check.canary_value == pytest.approx(0.2)
    assert "canary 20.0% (120/600)" in check.message
    assert "HTTP 5xx or gRPC status 2, 4, 12, 13, 14, 15" in check.message
    assert "above max_rate 1.0%" in check.message


def test_grpc_client_errors_can_be_excluded(field_prometheus) -> None:
    verdict = judge_case(
        field_prometheus,
        load_series("05-grpc-errors.yaml"),
        [ErrorRateCheck(max_rate=0.01, grpc_error_codes=(13,))],
        polls=5,
    )
    (check,) = verdict.checks
    assert check.canary_value == 0.0 and "gRPC status 13" in check.message


def _histogram_case() -> list[dict[str, Any]]:
    """06's canary (custom buckets, no 250) and a stable on Istio's default buckets spelled the
    Prometheus 3 way (``le="250.0"``): 10,000 requests, 1% slower than 100 ms."""
    series = load_series("06-histogram-buckets.yaml")
    labels = {
        "reporter": "destination",
        "destination_workload_namespace": "team-a",
        "destination_version": "v1",
    }
    below = {"0.5": 0, "1.0": 0, "5.0": 100, "10.0": 500, "25.0": 4000, "50.0": 8000}
    below |= {"100.0": 9900, "250.0": 9990, "500.0": 10000, "1000.0": 10000, "5000.0": 10000}
    below |= {"+Inf": 10000}
    for le, value in below.items():
        series.append(
            {
                "__name__": "istio_request_duration_milliseconds_bucket",
                **labels,
                "le": le,
                "value": value,
            }
        )
    series.append(
        {"__name__": "istio_request_duration_milliseconds_count", **labels, "value": 10000}
    )
    return series


def test_slo_bound_missing_from_the_histogram_is_an_error_naming_the_bounds(
    field_prometheus,
) -> None:
    """06: with custom buckets there is no le="250"; reading it as zero passed 30% slow."""
    verdict = judge_case(field_prometheus, _histogram_case(), [LatencyCheck(slo_ms=250)])
    assert verdict.status is Status.FAIL and verdict.final
    (check,) = verdict.checks
    assert "slo_ms 250 is not a bucket bound of the canary's" in check.message
    assert "its bounds are 100, 500, +Inf" in check.message


def test_latency_ratio_uses_the_bounds_the_data_has(field_prometheus) -> None:
    """06 again, judged by max_ratio alone: bounds come from the data (both spellings)."""
    verdict = judge_case(
        field_prometheus, _histogram_case(), [LatencyCheck(quantile=0.99, max_ratio=1.5)]
    )
    assert verdict.status is Status.FAIL and verdict.final
    (check,) = verdict.checks
    assert (
        "slower than 100 ms: canary 30.0% (60/200) vs stable 1.0% (100/10,000), "
        "limit 1.5x stable's share" in check.message
    )


def test_unreachable_canary_fails_fast_from_source_reported_503s(field_prometheus) -> None:
    """09: every canary pod is down; callers' sidecars answer 503 UH, seen only with
    reporter="source" and destination labels "unknown" (istio/istio#28387). It FAILs at the
    second poll that sees it so (the first after the baseline could be a restart's readiness
    lag), not at the step's timeout."""
    verdict = judge_case(
        field_prometheus,
        load_series("09-proxy-503-source-reporter.yaml"),
        [ErrorRateCheck(max_rate=0.01)],
        polls=2,
        growing=True,
    )
    assert verdict.status is Status.FAIL and verdict.final and verdict.polls == 3
    (check,) = verdict.checks
    assert "the canary received no requests (reporter=destination)" in check.message
    assert "answered 180,000 requests" in check.message and "UH/UF/URX" in check.message


def test_a_bound_that_is_not_a_default_bucket_is_refused_at_parse_time() -> None:
    with pytest.raises(AnalysisError, match="bounds: 0.5, 1, 5, 10, 25, 50, 100, 250, 500"):
        CanaryAnalysis(Arms("team-a"), [LatencyCheck(quantile=0.99, max_ms=300)])


def _retried_case(with_source: bool) -> list[dict[str, Any]]:
    """1,000 canary requests of which 50 failed after Istio's default 2 retries: the pod's
    sidecar (reporter="destination") saw 3 attempts of each, the caller's proxy
    (reporter="source") one request with flag URX. Stable: 10,000 requests, 10 such."""
    series = []
    for version, ok, failed in (("v2", 950, 50), ("v1", 9990, 10)):
        base = {
            "__name__": "istio_requests_total",
            "destination_workload_namespace": "team-a",
            "destination_version": version,
        }
        reports = [("destination", "200", "-", ok), ("destination", "503", "-", 3 * failed)]
        if with_source:
            reports += [("source", "200", "-", ok), ("source", "503", "URX", failed)]
        for reporter, code, flags, value in reports:
            series.append(
                {
                    **base,
                    "reporter": reporter,
                    "response_code": code,
                    "response_flags": flags,
                    "value": value,
                }
            )
    return series


def test_error_rate_counts_each_client_request_once_where_callers_report(
    field_prometheus,
) -> None:
    """Istio's retries: counting the pod's attempts would read 150/1,100; users saw 50/1,000."""
    verdict = judge_case(
        field_prometheus, _retried_case(with_source=True), [ErrorRateCheck(max_rate=0.01)]
    )
    (check,) = verdict.checks
    assert check.canary_value == pytest.approx(0.05)
    assert check.stable_value == pytest.approx(0.001)
    assert "canary 5.0% (50/1,000)" in check.message


def test_error_rate_falls_back_to_the_pods_report_without_callers_reports(
    field_prometheus,
) -> None:
    """Callers outside the mesh send no reporter="source" series: the pods' report is used."""
    verdict = judge_case(
        field_prometheus, _retried_case(with_source=False), [ErrorRateCheck(max_rate=0.01)]
    )
    (check,) = verdict.checks
    assert check.canary_value == pytest.approx(150 / 1100)
    assert "canary 13.6% (150/1,100)" in check.message


def _lookups(canary_timeouts: int) -> list[dict[str, Any]]:
    """Feature-store lookups by model version: 2,000 each, stable timing out 20 times."""
    series = []
    for version, timeouts in (("v2", canary_timeouts), ("v1", 20)):
        for result, value in (("ok", 2000 - timeouts), ("timeout", timeouts)):
            series.append(
                {
                    "__name__": "feature_lookups_total",
                    "namespace": "team-a",
                    "version": version,
                    "result": result,
                    "value": value,
                }
            )
    return series


LOOKUP_TIMEOUTS = PromQLRatioCheck(
    name="lookup-timeouts",
    bad_query='feature_lookups_total{namespace="{{ namespace }}",version="{{ version }}",'
    'result="timeout"}',
    total_query='feature_lookups_total{namespace="{{ namespace }}",version="{{ version }}"}',
    max_ratio=1.5,
)


def test_custom_ratio_check_is_judged_sequentially_at_every_poll(field_prometheus) -> None:
    """A custom counter ratio FAILs at the first poll that holds the evidence, as errors do."""
    verdict = judge_case(field_prometheus, _lookups(canary_timeouts=200), [LOOKUP_TIMEOUTS])
    assert verdict.status is Status.FAIL and verdict.final and verdict.polls == 2
    (check,) = verdict.checks
    assert check.canary_value == pytest.approx(0.1) and check.stable_value == pytest.approx(0.01)
    assert "canary 10.0% (200/2,000)" in check.message and "e-value" in check.message


def test_custom_ratio_check_passes_a_canary_within_its_limit(field_prometheus) -> None:
    verdict = judge_case(field_prometheus, _lookups(canary_timeouts=20), [LOOKUP_TIMEOUTS], polls=5)
    (check,) = verdict.checks
    assert check.status is Status.PASS, check.message
    assert check.canary_value == pytest.approx(0.01)
