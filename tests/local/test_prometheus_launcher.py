"""The ``airflow-canary prometheus`` launcher and PrometheusServer, running the real Debian binary."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
import yaml

from airflow_canary.local.tools.prometheus import (
    INSTALL_HINT,
    PrometheusServer,
    ScrapeTarget,
    parse_duration,
    render_config,
)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.load(response)


def _loaded_config(url: str) -> dict:
    return yaml.safe_load(_get_json(f"{url}/api/v1/status/config")["data"]["yaml"])


def test_scrape_target_parsing() -> None:
    assert ScrapeTarget.parse("127.0.0.1:15020/stats/prometheus") == ScrapeTarget(
        "127.0.0.1", 15020, "/stats/prometheus"
    )
    assert ScrapeTarget.parse("localhost:8000").path == "/metrics"
    for bad in ("localhost", "host:port", ":9090", "h:70000/x"):
        with pytest.raises(ValueError, match=re.escape(repr(bad))):
            ScrapeTarget.parse(bad)


def test_durations() -> None:
    assert parse_duration("1s") == 1.0
    assert parse_duration("500ms") == 0.5
    assert parse_duration("2h") == 7200.0
    assert parse_duration("15") == 15.0
    with pytest.raises(ValueError, match="got 'soon'"):
        parse_duration("soon")


def test_render_config_has_one_job_per_target_and_a_timeout_within_the_interval() -> None:
    config = yaml.safe_load(
        render_config(
            [ScrapeTarget.parse("127.0.0.1:15020/stats/prometheus"), ScrapeTarget.parse("h:1")],
            1.0,
        )
    )
    assert config["global"]["scrape_interval"] == config["global"]["scrape_timeout"] == "1000ms"
    jobs = {
        job["metrics_path"]: job["static_configs"][0]["targets"] for job in config["scrape_configs"]
    }
    assert jobs == {"/stats/prometheus": ["127.0.0.1:15020"], "/metrics": ["h:1"]}


def test_server_starts_reloads_and_cleans_up() -> None:
    server = PrometheusServer(0, ["127.0.0.1:1/stats/prometheus"], 1.0)
    with server:
        workdir = server.config_path.parent
        assert _get_json(f"{server.url}/api/v1/status/buildinfo")["status"] == "success"
        jobs = _loaded_config(server.url)["scrape_configs"]
        assert [job["metrics_path"] for job in jobs] == ["/stats/prometheus"]

        server.add_targets(["127.0.0.1:2"])
        jobs = _loaded_config(server.url)["scrape_configs"]
        assert sorted(job["static_configs"][0]["targets"][0] for job in jobs) == [
            "127.0.0.1:1",
            "127.0.0.1:2",
        ]
        pid = server.pid
    assert not workdir.exists()
    assert pid is not None and not Path(f"/proc/{pid}").exists()


def _cli(args: list[str], env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "airflow_canary.cli", "prometheus", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def test_cli_runs_until_sigterm() -> None:
    process = _cli(["--port", "0", "--scrape", "127.0.0.1:1/stats/prometheus", "--interval", "2s"])
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        match = re.search(r"prometheus ready at (http://\S+)", line)
        assert match, (
            f"unexpected first line {line!r}; stderr: {process.stderr.read() if process.stderr else ''}"
        )
        url = match.group(1)
        config = _loaded_config(url)
        assert config["global"]["scrape_interval"] == "2s"
        assert config["scrape_configs"][0]["metrics_path"] == "/stats/prometheus"
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{url}/-/ready", timeout=2)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def test_cli_explains_how_to_install_a_missing_binary(tmp_path: Path) -> None:
    env = dict(os.environ, PATH=str(tmp_path))
    process = _cli(["--scrape", "127.0.0.1:1"], env=env)
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert INSTALL_HINT in err


def test_cli_rejects_a_bad_target_with_the_value() -> None:
    process = _cli(["--scrape", "nohost"])
    _, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "HOST:PORT[/metrics_path], got 'nohost'" in err


def _series_samples(url: str, promql: str) -> list[float]:
    query = urllib.parse.urlencode({"query": promql})
    result = _get_json(f"{url}/api/v1/query?{query}")["data"]["result"]
    return [float(t) for series in result for t, _v in series.get("values", [])]


def test_a_killed_server_restarts_on_its_port_with_its_samples() -> None:
    from airflow_canary.local.tools.prometheus import free_port

    port = free_port()
    # Prometheus scrapes itself: samples of ``up`` accumulate from the first scrape on.
    with PrometheusServer(port, [f"127.0.0.1:{port}/metrics"], 0.5) as server:
        server.wait_for_scrape()
        before = _series_samples(server.url, "up[1h]")
        assert before
        assert server.kill() == -signal.SIGKILL
        with pytest.raises(OSError):
            urllib.request.urlopen(f"{server.url}/-/ready", timeout=2)
        server.start()
        assert server.port == port
        server.wait_for_scrape()
        after = _series_samples(server.url, "up[1h]")
        # The samples scraped before the crash came back from storage, and scraping went on.
        assert set(before) <= set(after)
        assert max(after) > max(before)
