"""The ``serve-model`` model server as a real subprocess over real HTTP: predictions, validation, feedback, metrics, faults."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from scipy.stats import binom

from airflow_canary.local.model import server as modelserver
from airflow_canary.local.model.training import holdout_split, train_model

CLI = [str(Path(sys.executable).parent / "airflow-canary")]
START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    process: subprocess.Popen[str]
    url: str
    log: Path

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=5)
        return self.process.returncode


def launch(args: list[str], log: Path, env: Mapping[str, str] | None = None) -> Server:
    """Start ``airflow-canary serve-model`` on a free port given through ``PORT`` (not yet waited for)."""
    port = free_port()
    full_env = {**os.environ, **(env or {}), "PORT": str(port)}
    process = subprocess.Popen(
        [*CLI, "serve-model", *args],
        env=full_env,
        stdout=subprocess.DEVNULL,
        stderr=log.open("w"),
        text=True,
    )
    return Server(process, f"http://127.0.0.1:{port}", log)


def wait_ready(server: Server) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise AssertionError(
                f"model server exited with {server.process.returncode}: {server.log.read_text()}"
            )
        try:
            if httpx.get(f"{server.url}/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    server.stop()
    raise AssertionError(
        f"model server not ready within {START_TIMEOUT} s: {server.log.read_text()}"
    )


def metric_samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``/metrics`` parsed with prometheus_client: (sample name, sorted labels) -> value."""
    text = httpx.get(f"{url}/metrics", timeout=5).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_model(tmp_path_factory.mktemp("models") / "good.joblib", "good").path


@pytest.fixture(scope="module")
def servers(
    model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    """Three servers started together: healthy (configured from env only), always failing + slow, 30% failing."""
    logs = tmp_path_factory.mktemp("logs")
    started = {
        "healthy": launch(
            [],
            logs / "healthy.log",
            env={"MODEL_PATH": str(model_path), "MODEL_VERSION": "v1", "MODEL_ERROR_RATE": "0"},
        ),
        "failing": launch(
            [
                "--model",
                str(model_path),
                "--version",
                "v2",
                "--error-rate",
                "1.0",
                "--extra-latency-ms",
                "120",
            ],
            logs / "failing.log",
        ),
        "flaky": launch(
            ["--model", str(model_path), "--version", "v3"],
            logs / "flaky.log",
            env={"MODEL_ERROR_RATE": "0.3"},
        ),
    }
    try:
        for server in started.values():
            wait_ready(server)
        yield started
    finally:
        for server in started.values():
            server.stop()


@pytest.fixture(scope="module")
def healthy(servers: dict[str, Server]) -> Server:
    return servers["healthy"]


def test_healthz_reports_version(healthy: Server) -> None:
    response = httpx.get(f"{healthy.url}/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": "v1"}


def test_predict_single_instance(healthy: Server) -> None:
    split = holdout_split()
    response = httpx.post(f"{healthy.url}/predict", json={"features": split.X_holdout[0].tolist()})
    assert response.status_code == 200
    body = response.json()
    assert body["version"] == "v1"
    assert body["predictions"] == [int(split.y_holdout[0])]
    assert body["request_id"]
    assert response.headers["x-model-version"] == "v1"


def test_predict_batch_matches_ground_truth(healthy: Server) -> None:
    split = holdout_split()
    response = httpx.post(
        f"{healthy.url}/predict", json={"instances": split.X_holdout[:40].tolist()}
    )
    assert response.status_code == 200
    predictions = response.json()["predictions"]
    assert len(predictions) == 40
    assert (
        sum(p == t for p, t in zip(predictions, split.y_holdout[:40].tolist(), strict=True)) >= 36
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"instances": [[1.0, 2.0]]}, "instance 0 has 2 features, expected 30"),
        (
            {"features": ["big"] + [1.0] * 29},
            'instance 0 feature 0 (mean radius) must be a finite number, got "big"',
        ),
        (
            {"instances": [[1.0] * 30, [True] + [1.0] * 29]},
            "instance 1 feature 0 (mean radius) must be a finite number",
        ),
        ({"instances": []}, "'instances' must be a non-empty list"),
        ({"rows": [[1.0] * 30]}, "request body needs 'instances'"),
        ([1, 2], "request body must be a JSON object, got list"),
        (
            {"instances": [[1.0] * 30], "labels": [1, 0]},
            "'labels' must be a list with one label per instance (1)",
        ),
    ],
)
def test_predict_rejects_bad_input_with_400(healthy: Server, body: object, message: str) -> None:
    response = httpx.post(f"{healthy.url}/predict", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]


def test_predict_rejects_invalid_json(healthy: Server) -> None:
    response = httpx.post(
        f"{healthy.url}/predict", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["error"]


def test_feedback_counts_accuracy_per_version(healthy: Server) -> None:
    split = holdout_split()
    before = metric_samples(healthy.url)
    version = (("version", "v1"),)

    # Three predictions answered later through /feedback: two true labels, one deliberately wrong.
    answered = []
    for row in range(3):
        response = httpx.post(
            f"{healthy.url}/predict", json={"features": split.X_holdout[row].tolist()}
        )
        answered.append((response.json()["request_id"], response.json()["predictions"][0]))
    labels = [answered[0][1], answered[1][1], 1 - answered[2][1]]
    for (request_id, _), label in zip(answered, labels, strict=True):
        response = httpx.post(
            f"{healthy.url}/feedback", json={"request_id": request_id, "label": label}
        )
        assert response.status_code == 200
        assert response.json()["version"] == "v1"

    # A batch with ground truth in the request itself: 10 labels, all true.
    batch = httpx.post(
        f"{healthy.url}/predict",
        json={
            "instances": split.X_holdout[10:20].tolist(),
            "labels": split.y_holdout[10:20].tolist(),
        },
    ).json()
    truth_correct = sum(
        p == t for p, t in zip(batch["predictions"], split.y_holdout[10:20].tolist(), strict=True)
    )
    assert batch["correct"] == truth_correct

    after = metric_samples(healthy.url)
    assert (
        after[("model_feedback_total", version)] - before.get(("model_feedback_total", version), 0)
        == 13
    )
    correct_delta = after[("model_feedback_correct_total", version)] - before.get(
        ("model_feedback_correct_total", version), 0
    )
    assert correct_delta == 2 + truth_correct

    # Each prediction takes one feedback; a repeat is unknown.
    again = httpx.post(f"{healthy.url}/feedback", json={"request_id": answered[0][0], "label": 1})
    assert again.status_code == 404


def test_feedback_for_unknown_request_is_404(healthy: Server) -> None:
    response = httpx.post(
        f"{healthy.url}/feedback", json={"request_id": "no-such-request", "label": 1}
    )
    assert response.status_code == 404
    assert "unknown request_id 'no-such-request'" in response.json()["error"]


def test_feedback_needs_a_label(healthy: Server) -> None:
    response = httpx.post(f"{healthy.url}/feedback", json={"request_id": "abc"})
    assert response.status_code == 400
    assert "needs 'label'" in response.json()["error"]


def test_metrics_expose_predictions_requests_and_latency(healthy: Server) -> None:
    split = holdout_split()
    httpx.post(f"{healthy.url}/predict", json={"instances": split.X_holdout[:5].tolist()})
    samples = metric_samples(healthy.url)
    predicted = {
        labels: v for (name, labels), v in samples.items() if name == "model_predictions_total"
    }
    assert {dict(labels)["prediction"] for labels in predicted} <= {"0", "1"}
    assert all(dict(labels)["version"] == "v1" for labels in predicted)
    assert sum(predicted.values()) >= 5
    assert samples[("model_request_duration_seconds_count", (("version", "v1"),))] >= 1
    assert samples[("model_requests_total", (("code", "200"), ("version", "v1")))] >= 1
    assert not any(name.endswith("_created") for name, _ in samples)


def test_error_rate_zero_never_fails(healthy: Server) -> None:
    split = holdout_split()
    with httpx.Client(base_url=healthy.url) as client:
        codes = [
            client.post(
                "/predict", json={"features": split.X_holdout[i % 143].tolist()}
            ).status_code
            for i in range(200)
        ]
    assert set(codes) == {200}


def test_error_rate_one_always_fails_after_the_extra_latency(servers: dict[str, Server]) -> None:
    url = servers["failing"].url
    split = holdout_split()
    with httpx.Client(base_url=url) as client:
        responses = [
            client.post("/predict", json={"features": split.X_holdout[i].tolist()})
            for i in range(10)
        ]
    assert {r.status_code for r in responses} == {500}
    assert all(r.json()["version"] == "v2" for r in responses)
    assert "injected failure" in responses[0].json()["error"]
    # The server measured every answer above the injected 120 ms: nothing in the <=100 ms buckets.
    samples = metric_samples(url)
    assert (
        samples[("model_request_duration_seconds_bucket", (("le", "0.1"), ("version", "v2")))] == 0
    )
    assert samples[("model_request_duration_seconds_count", (("version", "v2"),))] == 10
    assert samples[("model_requests_total", (("code", "500"), ("version", "v2")))] == 10


def test_error_rate_share_is_within_binomial_bounds(servers: dict[str, Server]) -> None:
    n, rate = 300, 0.3
    split = holdout_split()
    with httpx.Client(base_url=servers["flaky"].url) as client:
        codes = [
            client.post(
                "/predict", json={"features": split.X_holdout[i % 143].tolist()}
            ).status_code
            for i in range(n)
        ]
    failures = codes.count(500)
    assert codes.count(200) + failures == n
    # Two-sided 1e-6 interval: a correct server fails this about once in a million runs.
    low, high = binom.ppf(5e-7, n, rate), binom.isf(5e-7, n, rate)
    assert low <= failures <= high, (
        f"{failures} failures out of {n} at rate {rate}, expected {low:.0f}..{high:.0f}"
    )


def test_missing_model_without_training_exits_with_message(tmp_path: Path) -> None:
    server = launch(
        ["--model", str(tmp_path / "absent.joblib"), "--version", "v9"], tmp_path / "absent.log"
    )
    try:
        assert server.process.wait(timeout=START_TIMEOUT) == 1
    finally:
        server.stop()
    assert "absent.joblib does not exist" in server.log.read_text()


def test_train_if_missing_then_sigterm_stops_cleanly(tmp_path: Path) -> None:
    path = tmp_path / "trained" / "bad.joblib"
    server = launch(
        ["--model", str(path), "--version", "v2"],
        tmp_path / "train.log",
        env={"MODEL_TRAIN_IF_MISSING": "bad"},
    )
    try:
        wait_ready(server)
        assert path.exists()
        assert "trained a bad model" in server.log.read_text()
        # The feedback series exist at zero before any traffic, so accuracy queries have a baseline.
        samples = metric_samples(server.url)
        assert samples[("model_feedback_total", (("version", "v2"),))] == 0
        assert samples[("model_feedback_correct_total", (("version", "v2"),))] == 0
    finally:
        code = server.stop()
    assert code == 0


@pytest.mark.parametrize(
    ("argv", "env", "message"),
    [
        (["--version", "v1"], {}, "no model path: pass --model PATH or set MODEL_PATH"),
        (
            ["--model", "m.joblib"],
            {},
            "no model version: pass --version LABEL or set MODEL_VERSION",
        ),
        (
            ["--model", "m", "--version", "v1", "--error-rate", "1.5"],
            {},
            "error rate must be a number in [0, 1], got 1.5",
        ),
        (
            ["--model", "m", "--version", "v1"],
            {"MODEL_ERROR_RATE": "lots"},
            "MODEL_ERROR_RATE must be a number, got 'lots'",
        ),
        (
            ["--model", "m", "--version", "v1", "--extra-latency-ms", "-5"],
            {},
            "extra latency must be a number of milliseconds >= 0, got -5.0",
        ),
        (
            ["--model", "m", "--version", "v1"],
            {"PORT": "http"},
            "PORT must be an integer, got 'http'",
        ),
        (
            ["--model", "m", "--version", "v1", "--port", "70000"],
            {},
            "port must be an integer 0..65535, got 70000",
        ),
        (
            ["--model", "m", "--version", "v1"],
            {"MODEL_TRAIN_IF_MISSING": "great"},
            "quality must be one of good, bad, got 'great'",
        ),
        (
            ["--model", "m", "--version", "v1", "--crash-after-requests", "-1"],
            {},
            "crash-after-requests must be an integer >= 0 (0: never), got -1",
        ),
        (
            ["--model", "m", "--version", "v1"],
            {"MODEL_CRASH_AFTER_REQUESTS": "soon"},
            "MODEL_CRASH_AFTER_REQUESTS must be an integer, got 'soon'",
        ),
        (
            ["--model", "m", "--version", "v1"],
            {"MODEL_CRASH_MODE": "explode"},
            "MODEL_CRASH_MODE must be one of exit, fail, got 'explode'",
        ),
    ],
)
def test_invalid_configuration_is_named(argv: list[str], env: dict[str, str], message: str) -> None:
    with pytest.raises(modelserver.ConfigError) as excinfo:
        modelserver.parse_config(argv, env)
    assert message in str(excinfo.value)


def test_flags_win_over_environment() -> None:
    config = modelserver.parse_config(
        ["--model", "/m/flag.joblib", "--error-rate", "0.25"],
        {
            "MODEL_PATH": "/m/env.joblib",
            "MODEL_VERSION": "v7",
            "MODEL_ERROR_RATE": "0.9",
            "MODEL_EXTRA_LATENCY_MS": "50",
            "PORT": "9001",
        },
    )
    assert config.model_path == Path("/m/flag.joblib")
    assert config.version == "v7"
    assert config.error_rate == 0.25
    assert config.extra_latency_ms == 50.0
    assert config.port == 9001


def test_cli_exits_2_on_bad_flags() -> None:
    out = subprocess.run(
        [*CLI, "serve-model", "--model", "m", "--version", "v1", "--error-rate", "2"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 2
    assert "serve-model: error rate must be a number in [0, 1], got 2.0" in out.stderr


def _predict(url: str) -> httpx.Response:
    return httpx.post(f"{url}/predict", json={"instances": [[0.1] * 30]}, timeout=5)


def test_crash_mode_exit_kills_the_process_after_n_requests(
    model_path: Path, tmp_path: Path
) -> None:
    server = launch(
        [],
        tmp_path / "crash.log",
        env={
            "MODEL_PATH": str(model_path),
            "MODEL_VERSION": "v2",
            "MODEL_CRASH_AFTER_REQUESTS": "3",
        },
    )
    try:
        wait_ready(server)
        assert [_predict(server.url).status_code for _ in range(3)] == [200, 200, 200]
        # The fourth request finds the process gone, as an OOM kill under load leaves it.
        with pytest.raises(httpx.TransportError):
            _predict(server.url)
        assert server.process.wait(timeout=10) == -signal.SIGKILL
    finally:
        server.stop()


def test_crash_mode_fail_answers_500_and_stays_healthy(model_path: Path, tmp_path: Path) -> None:
    server = launch(
        ["--model", str(model_path), "--version", "v2", "--crash-after-requests", "2"],
        tmp_path / "fail.log",
        env={"MODEL_CRASH_MODE": "fail"},
    )
    try:
        wait_ready(server)
        codes = [_predict(server.url).status_code for _ in range(5)]
        assert codes == [200, 200, 500, 500, 500]
        assert "model runtime broken after 2 requests" in _predict(server.url).json()["error"]
        assert httpx.get(f"{server.url}/healthz", timeout=5).status_code == 200
        assert server.process.poll() is None
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("crash_on", "counted", "uncounted"),
    [
        ("live", "model-service", "model-service-shadow"),
        ("mirrored", "model-service-shadow", "model-service"),
    ],
)
def test_crash_on_counts_only_live_or_only_mirrored_requests(
    model_path: Path, tmp_path: Path, crash_on: str, counted: str, uncounted: str
) -> None:
    # Istio (Envoy) suffixes a mirrored copy's authority with -shadow (port kept).
    server = launch(
        ["--model", str(model_path), "--version", "v2", "--crash-after-requests", "2"],
        tmp_path / "crash-on.log",
        env={"MODEL_CRASH_MODE": "fail", "MODEL_CRASH_ON": crash_on},
    )

    def predict(host: str) -> int:
        return httpx.post(
            f"{server.url}/predict",
            json={"instances": [[0.1] * 30]},
            headers={"Host": f"{host}:8080"},
            timeout=5,
        ).status_code

    try:
        wait_ready(server)
        assert [predict(uncounted) for _ in range(5)] == [200] * 5
        assert [predict(counted) for _ in range(3)] == [200, 200, 500]
        # once broken, the runtime is broken for every request
        assert predict(uncounted) == 500
    finally:
        server.stop()


def test_crash_on_outside_its_choices_names_the_value() -> None:
    with pytest.raises(
        modelserver.ConfigError,
        match="MODEL_CRASH_ON must be one of all, live, mirrored, got 'some'",
    ):
        modelserver.parse_config(["--model", "m", "--version", "v2"], {"MODEL_CRASH_ON": "some"})
