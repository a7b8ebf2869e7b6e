"""Fixtures for health analysis tests: Istio metrics driven by the test, scraped by a real Prometheus."""

from __future__ import annotations

import pytest

from airflow_canary.local.prometheus import PrometheusServer
from tests.fixtures.prometheus import IstioExporter


@pytest.fixture
def istio_prometheus(istio_exporter: IstioExporter, prometheus_factory, prometheus_conn_env):
    """(exporter, prometheus): Istio request metrics the test drives, scraped every second."""
    server: PrometheusServer = prometheus_factory([istio_exporter.target])
    prometheus_conn_env(server.url)
    return istio_exporter, server
