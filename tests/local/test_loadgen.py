"""The load generator against a real model server subprocess: request counts, per-version table, feedback."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from airflow_canary.local.tools.loadgen import (
    LoadConfig,
    LoadReport,
    main,
    parse_header,
    percentile,
    run_load,
)

CLI = [str(Path(sys.executable).parent / "airflow-canary")]
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def feedback_counts(url: str, version: str) -> tuple[float, float]:
    """(model_feedback_total, model_feedback_correct_total) for ``version`` from the server's /metrics."""
    values = {"model_feedback_total": 0.0, "model_feedback_correct_total": 0.0}
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name in values and sample.labels.get("version") == version:
                values[sample.name] = sample.value
    return values["model_feedback_total"], values["model_feedback_correct_total"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A bad v2 model server (trained on start), 10% injected errors, on a free ``PORT``."""
    tmp = tmp_path_factory.mktemp("loadgen-server")
    port = free_port()
    log = (tmp / "server.log").open("w")
    env = {**os.environ, "PORT": str(port), "MODEL_ERROR_RATE": "0.1"}
    process = subprocess.Popen(
        [
            *CLI,
            "serve-model",
            "--model",
            str(tmp / "bad.joblib"),
            "--version",
            "v2",
            "--train-if-missing",
            "bad",
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=log,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert process.poll() is None, (tmp / "server.log").read_text()
            assert time.monotonic() < deadline, (
                f"server not ready: {(tmp / 'server.log').read_text()}"
            )
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()


def test_cli_sends_rps_times_duration_and_feedback_matches(server: str) -> None:
    before_total, before_correct = feedback_counts(server, "v2")
    out = subprocess.run(
        [
            *CLI,
            "loadgen",
            "--target",
            server,
            "--host",
            "model-service",
            "--rps",
            "100",
            "--duration",
            "2",
            "--feedback",
            "--header",
            "x-team=ml",
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)

    assert report["planned"] == report["sent"] == report["completed"] == 200
    assert report["feedback"] is True
    assert set(report["per_version"]) == {"v2"}
    v2 = report["per_version"]["v2"]
    assert v2["requests"] == 200
    assert set(v2["by_status"]) <= {"200", "500"}
    assert sum(v2["by_status"].values()) == 200
    assert 0 < v2["by_status"].get("500", 0) < 60  # 10% injected errors
    assert v2["p50_ms"] <= v2["p90_ms"] <= v2["p99_ms"]
    # Every successful prediction carried its label; the server counted exactly those.
    assert v2["scored"] == v2["by_status"]["200"]
    after_total, after_correct = feedback_counts(server, "v2")
    assert after_total - before_total == v2["scored"]
    assert after_correct - before_correct == v2["correct"]
    assert v2["accuracy"] <= 0.7  # the bad model


def test_run_load_in_process_without_feedback_prints_a_table(server: str) -> None:
    before = feedback_counts(server, "v2")
    progress: list[LoadReport] = []
    config = LoadConfig(
        target=server, host="anything", rps=50, duration=1.5, headers=(("x-canary-version", "v2"),)
    )
    report = asyncio.run(run_load(config, on_progress=progress.append, progress_interval=0.5))

    assert report.sent == report.completed == config.planned == 75
    assert not report.interrupted
    stats = report.per_version["v2"]
    assert stats.requests == 75 and stats.ok + stats.failed == 75
    assert stats.scored == stats.ok  # the client scores answers itself even without feedback
    assert feedback_counts(server, "v2") == before  # no labels were sent
    assert progress and all(p.sent <= 75 for p in progress)

    table = report.table().splitlines()
    assert table[0].split()[:2] == ["version", "requests"]
    assert "p50" in table[0] and "p99" in table[0]
    assert table[1].split()[:2] == ["v2", "75"]
    assert table[-1].startswith("sent 75 of 75 planned")


def test_stop_event_ends_the_schedule_early(server: str) -> None:
    async def scenario() -> LoadReport:
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(1.0, stop.set)
        return await run_load(LoadConfig(target=server, rps=20, duration=60), stop)

    report = asyncio.run(scenario())
    assert report.interrupted
    assert 0 < report.sent < report.planned == 1200
    assert report.completed == report.sent


def test_sigint_stops_the_cli_and_still_prints_the_summary(server: str) -> None:
    process = subprocess.Popen(
        [*CLI, "loadgen", "--target", server, "--rps", "20", "--duration", "120", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        # Wait until requests are flowing (the server counts them), then interrupt.
        deadline = time.monotonic() + START_TIMEOUT
        start = _requests_served(server)
        while _requests_served(server) < start + 5:
            assert time.monotonic() < deadline and process.poll() is None, (
                "load generator sent nothing"
            )
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["interrupted"] is True
    assert 5 <= report["sent"] < 2400


def _requests_served(url: str) -> float:
    total = 0.0
    for family in text_string_to_metric_families(httpx.get(f"{url}/metrics", timeout=5).text):
        for sample in family.samples:
            if sample.name == "model_requests_total":
                total += sample.value
    return total


def test_unreachable_target_is_counted_as_errors_and_exits_1(
    capsys: pytest.CaptureFixture[str],
) -> None:
    target = f"http://127.0.0.1:{free_port()}"
    assert main(["--target", target, "--rps", "20", "--duration", "0.5", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["sent"] == 10
    assert report["per_version"]["unknown"]["by_status"] == {"error": 10}


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--target", "http://h", "--rps", "0"], "rps must be a number > 0, got 0.0"),
        (
            ["--target", "http://h", "--duration", "-1"],
            "duration must be a number of seconds > 0, got -1.0",
        ),
        (
            ["--target", "http://h", "--header", "x-canary-version"],
            "header must be NAME=VALUE, got 'x-canary-version'",
        ),
        (
            ["--target", "http://h", "--header", "bad name=1"],
            "header name 'bad name' has characters not allowed",
        ),
        (["--target", "model-service:80"], "target must be an http(s) URL"),
        (
            ["--target", "http://h", "--concurrency", "0"],
            "concurrency must be an integer >= 1, got 0",
        ),
        (
            ["--target", "http://h", "--progress", "0"],
            "--progress must be a number of seconds > 0, got 0.0",
        ),
    ],
)
def test_invalid_arguments_are_named(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_parse_header_keeps_equals_in_the_value() -> None:
    assert parse_header("x-canary-version=v2") == ("x-canary-version", "v2")
    assert parse_header("authorization=Bearer a=b") == ("authorization", "Bearer a=b")


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 99) == 99.0
    assert percentile(values, 100) == 100.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) is None
