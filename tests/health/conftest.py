"""Fixtures for health analysis tests: Istio metrics driven by the test, scraped by a real Prometheus."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from airflow_canary.hooks.prometheus import PrometheusHook
from airflow_canary.local.tools.prometheus import PrometheusServer
from tests.fixtures.prometheus import IstioExporter, scraping


@pytest.fixture(scope="session")
def shared_istio_prometheus() -> Iterator[tuple[IstioExporter, PrometheusServer]]:
    """One exporter and one Prometheus for the health tests (a new target takes ~5 s to scrape).

    Sharing works because every analysis takes a baseline at its first poll and judges only
    the requests recorded after it (``istio_prometheus`` waits for earlier traffic to land).
    """
    exporter = IstioExporter().start()
    with scraping(exporter) as server:
        yield exporter, server


@pytest.fixture
def istio_prometheus(
    shared_istio_prometheus: tuple[IstioExporter, PrometheusServer], prometheus_conn_env
) -> tuple[IstioExporter, PrometheusServer]:
    """(exporter, prometheus) scraping every second, with ``prometheus_default`` pointing at it."""
    exporter, server = shared_istio_prometheus
    prometheus_conn_env(server.url)
    # Wait until Prometheus has scraped every request an earlier test recorded; otherwise the
    # tail of its traffic would land after this test's baseline and count as this test's.
    hook = PrometheusHook()
    expected = exporter.total_requests()
    deadline = time.monotonic() + 30
    while (hook.query_scalar("sum(istio_requests_total)") or 0.0) != expected:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Prometheus did not catch up with {expected} recorded requests")
        time.sleep(0.2)
    return exporter, server
