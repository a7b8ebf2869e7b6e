"""``airflow-canary serve-model``: serve a joblib scikit-learn model over HTTP with Prometheus metrics and fault flags."""

from __future__ import annotations

import argparse
import asyncio
import enum
import json
import math
import os
import random
import signal
import sys
import time
import uuid
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from airflow_canary.analysis.shadow.records import (
    Prediction,
    PredictionRecord,
    input_hash,
)
from airflow_canary.local.model.training import ModelQuality

DEFAULT_PORT = 8080
#: How many recent request_id -> predictions the server remembers for ``POST /feedback``.
DEFAULT_FEEDBACK_CAPACITY = 10_000
#: Larger batches are refused: the demo sends one instance per request.
MAX_BATCH = 1_000
#: Seconds; spans the fast local predictions and the injected latencies.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

ENV_PORT = "PORT"
ENV_MODEL_PATH = "MODEL_PATH"
ENV_MODEL_VERSION = "MODEL_VERSION"
ENV_ERROR_RATE = "MODEL_ERROR_RATE"
ENV_EXTRA_LATENCY_MS = "MODEL_EXTRA_LATENCY_MS"
ENV_TRAIN_IF_MISSING = "MODEL_TRAIN_IF_MISSING"
ENV_PREDICTION_LOG = "MODEL_PREDICTION_LOG"
ENV_CRASH_AFTER_REQUESTS = "MODEL_CRASH_AFTER_REQUESTS"
ENV_CRASH_MODE = "MODEL_CRASH_MODE"
ENV_CRASH_ON = "MODEL_CRASH_ON"


class CrashMode(enum.Enum):
    """How a server crashes after ``--crash-after-requests`` predictions (a fault to inject).

    ``exit``: the process kills itself with SIGKILL, as the kernel's OOM killer ends a server
    that ran out of memory under load; in-flight requests lose their connection, and the
    process runner restarts it with back-off (CrashLoopBackOff), as the kubelet does.
    ``fail``: the process stays up and ``/healthz`` keeps answering 200 (it does not look at
    the model), but every ``/predict`` answers 500, as a server whose model runtime broke.
    """

    EXIT = "exit"
    FAIL = "fail"


class CrashOn(enum.Enum):
    """Which ``/predict`` requests count toward ``--crash-after-requests``.

    ``all``: every one; ``live``: those a caller is waiting for (a fault under live load that
    the shadow phase's mirrored copies must not trigger first); ``mirrored``: the copies Istio
    mirrors, whose Host ends in ``-shadow`` (a model that breaks on shadow traffic).
    """

    ALL = "all"
    LIVE = "live"
    MIRRORED = "mirrored"


class ConfigError(ValueError):
    """A flag or environment variable has a value the server cannot use."""


@dataclass(frozen=True)
class ServerConfig:
    """Everything ``serve-model`` needs; flags win over environment variables."""

    model_path: Path
    version: str
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    error_rate: float = 0.0
    extra_latency_ms: float = 0.0
    train_if_missing: ModelQuality | None = None
    feedback_capacity: int = DEFAULT_FEEDBACK_CAPACITY
    prediction_log: Path | None = None
    #: crash after this many /predict requests (0: never); how, says ``crash_mode``
    crash_after_requests: int = 0
    crash_mode: CrashMode = CrashMode.EXIT
    #: which requests count toward ``crash_after_requests``
    crash_on: CrashOn = CrashOn.ALL

    def __post_init__(self) -> None:
        if not self.version:
            raise ConfigError("model version must be a non-empty string")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be an integer 0..65535, got {self.port}")
        if not (0.0 <= self.error_rate <= 1.0):
            raise ConfigError(f"error rate must be a number in [0, 1], got {self.error_rate}")
        if not (self.extra_latency_ms >= 0.0 and math.isfinite(self.extra_latency_ms)):
            raise ConfigError(
                f"extra latency must be a number of milliseconds >= 0, got {self.extra_latency_ms}"
            )
        if self.feedback_capacity < 1:
            raise ConfigError(f"feedback capacity must be >= 1, got {self.feedback_capacity}")
        if self.crash_after_requests < 0:
            raise ConfigError(
                "crash-after-requests must be an integer >= 0 (0: never), "
                f"got {self.crash_after_requests}"
            )


class RequestError(Exception):
    """A client sent a request the server refuses (HTTP 400/404), with a message naming the problem."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _number(source: str, raw: str, kind: type[float] | type[int]) -> float:
    try:
        return kind(raw)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ConfigError(f"{source} must be {what}, got {raw!r}") from None


_E = TypeVar("_E", bound=enum.Enum)


def _choice(kind: type[_E], raw: str | None, source: str) -> _E:
    """The member of ``kind`` whose value is ``raw`` (None or empty: the first member);
    ConfigError naming ``source``, the choices and the value otherwise."""
    members = list(kind)
    if not raw:
        return members[0]
    try:
        return kind(raw)
    except ValueError:
        choices = ", ".join(str(m.value) for m in members)
        raise ConfigError(f"{source} must be one of {choices}, got {raw!r}") from None


def parse_config(argv: Sequence[str], env: Mapping[str, str]) -> ServerConfig:
    """Build a ``ServerConfig`` from command-line flags, falling back to environment variables."""
    parser = argparse.ArgumentParser(
        prog="airflow-canary serve-model",
        description="Serve a joblib scikit-learn model: POST /predict, POST /feedback, GET /healthz, GET /metrics.",
    )
    parser.add_argument("--model", help=f"path of the joblib model (env {ENV_MODEL_PATH})")
    parser.add_argument(
        "--version", dest="model_version", help=f"version label, e.g. v2 (env {ENV_MODEL_VERSION})"
    )
    parser.add_argument(
        "--port",
        help=f"port to listen on (env {ENV_PORT}, else {DEFAULT_PORT}; 0 picks a free one)",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--error-rate",
        help=f"share of /predict requests answered with HTTP 500, 0..1 (env {ENV_ERROR_RATE})",
    )
    parser.add_argument(
        "--extra-latency-ms",
        help=f"milliseconds to wait before answering /predict (env {ENV_EXTRA_LATENCY_MS})",
    )
    parser.add_argument(
        "--train-if-missing",
        choices=[q.value for q in ModelQuality],
        help=f"train a model of this quality at --model if the file does not exist (env {ENV_TRAIN_IF_MISSING})",
    )
    parser.add_argument(
        "--feedback-capacity",
        type=int,
        default=DEFAULT_FEEDBACK_CAPACITY,
        help="how many recent predictions /feedback can refer to",
    )
    parser.add_argument(
        "--prediction-log",
        help="append a prediction record per answered instance to this JSON Lines file, live and "
        f"mirrored requests alike (docs/prediction-logs.md; a path or file:// URL; env {ENV_PREDICTION_LOG})",
    )
    parser.add_argument(
        "--crash-after-requests",
        help="crash after this many /predict requests, a fault to inject (0: never; "
        f"env {ENV_CRASH_AFTER_REQUESTS})",
    )
    parser.add_argument(
        "--crash-mode",
        choices=[m.value for m in CrashMode],
        help=f"exit: SIGKILL itself (an OOM kill); fail: stay up answering 500 (env {ENV_CRASH_MODE})",
    )
    parser.add_argument(
        "--crash-on",
        choices=[c.value for c in CrashOn],
        help="which /predict requests count toward --crash-after-requests: all (default), live "
        f"or mirrored (Host ending in -shadow) (env {ENV_CRASH_ON})",
    )
    args = parser.parse_args(list(argv))

    model = args.model or env.get(ENV_MODEL_PATH)
    if not model:
        raise ConfigError(f"no model path: pass --model PATH or set {ENV_MODEL_PATH}")
    version = args.model_version or env.get(ENV_MODEL_VERSION)
    if not version:
        raise ConfigError(f"no model version: pass --version LABEL or set {ENV_MODEL_VERSION}")

    if args.port is not None:
        port = int(_number("--port", args.port, int))
    elif env.get(ENV_PORT):
        port = int(_number(ENV_PORT, env[ENV_PORT], int))
    else:
        port = DEFAULT_PORT

    def flag_or_env(flag: str | None, flag_name: str, env_name: str) -> float:
        if flag is not None:
            return _number(flag_name, flag, float)
        if env.get(env_name):
            return _number(env_name, env[env_name], float)
        return 0.0

    error_rate = flag_or_env(args.error_rate, "--error-rate", ENV_ERROR_RATE)
    latency = flag_or_env(args.extra_latency_ms, "--extra-latency-ms", ENV_EXTRA_LATENCY_MS)
    train_raw = args.train_if_missing or env.get(ENV_TRAIN_IF_MISSING) or None
    try:
        train_if_missing = ModelQuality.parse(train_raw) if train_raw else None
    except ValueError as exc:
        raise ConfigError(f"{ENV_TRAIN_IF_MISSING}: {exc}") from None
    log = args.prediction_log or env.get(ENV_PREDICTION_LOG) or None
    if log is not None and log.startswith("file://"):
        log = log[len("file://") :]
    if log is not None and "://" in log:
        raise ConfigError(
            f"--prediction-log must be a local path or file:// URL (the server appends to it), got {log!r}"
        )
    crash_raw = args.crash_after_requests
    crash_source = "--crash-after-requests"
    if crash_raw is None:
        crash_raw, crash_source = env.get(ENV_CRASH_AFTER_REQUESTS) or "0", ENV_CRASH_AFTER_REQUESTS
    crash_after = int(_number(crash_source, crash_raw, int))
    crash_mode = _choice(CrashMode, args.crash_mode or env.get(ENV_CRASH_MODE), ENV_CRASH_MODE)
    crash_on = _choice(CrashOn, args.crash_on or env.get(ENV_CRASH_ON), ENV_CRASH_ON)
    return ServerConfig(
        model_path=Path(model),
        crash_after_requests=crash_after,
        crash_mode=crash_mode,
        crash_on=crash_on,
        prediction_log=Path(log) if log else None,
        version=version,
        host=args.host,
        port=port,
        error_rate=error_rate,
        extra_latency_ms=latency,
        train_if_missing=train_if_missing,
        feedback_capacity=args.feedback_capacity,
    )


class ModelMetrics:
    """The server's Prometheus metrics, in a registry of their own (no process/platform noise)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.predictions = Counter(
            "model_predictions",
            "Predictions returned, by model version and predicted class.",
            ["version", "prediction"],
            registry=self.registry,
        )
        self.feedback = Counter(
            "model_feedback",
            "Ground-truth labels received for earlier predictions.",
            ["version"],
            registry=self.registry,
        )
        self.feedback_correct = Counter(
            "model_feedback_correct",
            "Ground-truth labels that matched the prediction.",
            ["version"],
            registry=self.registry,
        )
        self.requests = Counter(
            "model_requests",
            "Requests to /predict, by version and HTTP status code.",
            ["version", "code"],
            registry=self.registry,
        )
        self.duration = Histogram(
            "model_request_duration_seconds",
            "Time to answer /predict, injected latency included.",
            ["version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )


class PredictionLog:
    """Appends one JSON line per prediction to a file (docs/prediction-logs.md), flushed per request."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - lives as long as the server

    def write(self, records: Sequence[PredictionRecord]) -> None:
        self._file.write("".join(record.to_json_line() + "\n" for record in records))
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _is_mirrored(authority: str) -> bool:
    """Istio (Envoy) gives a mirrored request the authority with ``-shadow`` appended."""
    return authority.rsplit(":", 1)[0].endswith("-shadow")


def _same_label(prediction: Any, label: Any) -> bool:
    # JSON gives 1 or 1.0 or "1"; the model gives numpy integers (already converted by tolist()).
    if (
        isinstance(prediction, (int, float))
        and isinstance(label, (int, float))
        and not isinstance(label, bool)
    ):
        return float(prediction) == float(label)
    return str(prediction) == str(label)


class ModelServer:
    """HTTP handlers around one loaded model; the model arrives after start-up (see ``/healthz``)."""

    def __init__(self, config: ServerConfig, rng: random.Random | None = None) -> None:
        self.config = config
        self.metrics = ModelMetrics()
        self.model: Any = None
        self.n_features: int | None = None
        self.feature_names: tuple[str, ...] = ()
        self.load_error: str | None = None
        self._rng = rng or random.Random()
        self._recent: OrderedDict[str, list[Any]] = OrderedDict()
        self._predict_requests = 0
        self.prediction_log = (
            PredictionLog(config.prediction_log) if config.prediction_log is not None else None
        )
        # Export the feedback series at 0 from the start, so rate() over them has a baseline
        # and accuracy queries see "no feedback yet" rather than a missing series.
        self.metrics.feedback.labels(version=config.version)
        self.metrics.feedback_correct.labels(version=config.version)

    # -- model loading ---------------------------------------------------------------------

    def load_model(self) -> None:
        """Load (training first if asked and missing) the model; runs in a worker thread."""
        path = self.config.model_path
        if not path.exists():
            if self.config.train_if_missing is None:
                raise FileNotFoundError(
                    f"model file {path} does not exist; train one first or pass --train-if-missing good|bad"
                )
            from airflow_canary.local.model.training import train_model

            result = train_model(path, self.config.train_if_missing)
            print(
                f"trained a {result.quality.value} model at {path} (holdout accuracy {result.holdout_accuracy:.3f})",
                file=sys.stderr,
                flush=True,
            )
        import joblib

        model = joblib.load(path)
        if not hasattr(model, "predict"):
            raise TypeError(
                f"{path} holds a {type(model).__name__}, which has no predict(); expected a scikit-learn estimator"
            )
        n_features = getattr(model, "n_features_in_", None)
        self.feature_names = tuple(getattr(model, "feature_names_", ()) or ())
        self.n_features = int(n_features) if n_features is not None else None
        self.model = model

    # -- request parsing -------------------------------------------------------------------

    def _instances(self, body: Any) -> tuple[list[list[float]], list[Any] | None]:
        if not isinstance(body, dict):
            raise RequestError(
                400, f"request body must be a JSON object, got {type(body).__name__}"
            )
        if "instances" in body:
            instances = body["instances"]
            labels = body.get("labels")
            if not isinstance(instances, list) or not instances:
                raise RequestError(400, "'instances' must be a non-empty list of feature lists")
            if labels is not None and (
                not isinstance(labels, list) or len(labels) != len(instances)
            ):
                raise RequestError(
                    400,
                    f"'labels' must be a list with one label per instance ({len(instances)}), got {json.dumps(labels)[:80]}",
                )
        elif "features" in body:
            instances = [body["features"]]
            labels = [body["label"]] if "label" in body else None
        else:
            raise RequestError(
                400,
                "request body needs 'instances' (list of feature lists) or 'features' (one feature list)",
            )
        if len(instances) > MAX_BATCH:
            raise RequestError(
                400, f"at most {MAX_BATCH} instances per request, got {len(instances)}"
            )
        rows: list[list[float]] = []
        for i, row in enumerate(instances):
            if not isinstance(row, list):
                raise RequestError(
                    400, f"instance {i} must be a list of numbers, got {type(row).__name__}"
                )
            if self.n_features is not None and len(row) != self.n_features:
                raise RequestError(
                    400, f"instance {i} has {len(row)} features, expected {self.n_features}"
                )
            for j, value in enumerate(row):
                if (
                    isinstance(value, bool)
                    or not isinstance(value, (int, float))
                    or not math.isfinite(value)
                ):
                    name = f" ({self.feature_names[j]})" if j < len(self.feature_names) else ""
                    raise RequestError(
                        400,
                        f"instance {i} feature {j}{name} must be a finite number, got {json.dumps(value)}",
                    )
            rows.append([float(v) for v in row])
        return rows, labels

    def _records(
        self, request_id: str, rows: list[list[float]], predictions: list[Any], authority: str
    ) -> list[PredictionRecord]:
        """One prediction record per instance: the class and class scores of a classifier,
        the value of a regressor."""
        now = datetime.now(timezone.utc)
        classes = getattr(self.model, "classes_", None)
        scores: list[Any] = [None] * len(rows)
        if classes is not None and hasattr(self.model, "predict_proba"):
            labels = [str(c) for c in classes.tolist()]
            scores = [
                tuple(zip(labels, (round(float(p), 6) for p in row), strict=True))
                for row in self.model.predict_proba(rows).tolist()
            ]
        mirrored = _is_mirrored(authority)
        records = []
        for index, (row, predicted, score) in enumerate(
            zip(rows, predictions, scores, strict=True)
        ):
            if classes is not None:
                label = predicted if isinstance(predicted, (int, str)) else str(predicted)
                prediction = Prediction(class_=label, scores=score)
            else:
                prediction = Prediction(value=float(predicted))
            records.append(
                PredictionRecord(
                    request_id=request_id,
                    version=self.config.version,
                    time=now,
                    input_hash=input_hash(row),
                    prediction=prediction,
                    instance=index,
                    mirrored=mirrored,
                )
            )
        return records

    @staticmethod
    async def _json_body(request: web.Request) -> Any:
        try:
            return await request.json()
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RequestError(400, f"request body is not valid JSON: {exc}") from None

    # -- feedback --------------------------------------------------------------------------

    def _record_feedback(self, predictions: Sequence[Any], labels: Sequence[Any]) -> int:
        version = self.config.version
        correct = sum(
            1 for p, label in zip(predictions, labels, strict=True) if _same_label(p, label)
        )
        self.metrics.feedback.labels(version=version).inc(len(labels))
        self.metrics.feedback_correct.labels(version=version).inc(correct)
        return correct

    def _remember(self, request_id: str, predictions: list[Any]) -> None:
        self._recent[request_id] = predictions
        while len(self._recent) > self.config.feedback_capacity:
            self._recent.popitem(last=False)

    # -- handlers --------------------------------------------------------------------------

    def _json(self, status: int, payload: dict[str, Any]) -> web.Response:
        return web.json_response(
            payload, status=status, headers={"x-model-version": self.config.version}
        )

    async def healthz(self, request: web.Request) -> web.Response:
        if self.model is None:
            return self._json(503, {"status": "loading", "version": self.config.version})
        return self._json(200, {"status": "ok", "version": self.config.version})

    async def metrics_handler(self, request: web.Request) -> web.Response:
        body = generate_latest(self.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    def _counts_toward_crash(self, authority: str) -> bool:
        """Whether a /predict request with this Host counts toward ``crash_after_requests``."""
        crash_on = self.config.crash_on
        if crash_on is CrashOn.ALL:
            return True
        return _is_mirrored(authority) == (crash_on is CrashOn.MIRRORED)

    async def predict(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        version = self.config.version
        request_id = request.headers.get("x-request-id") or uuid.uuid4().hex
        status = 200
        try:
            if self.model is None:
                status = 503
                return self._json(
                    503,
                    {
                        "error": "model is still loading",
                        "version": version,
                        "request_id": request_id,
                    },
                )
            if self._counts_toward_crash(request.headers.get("Host", "")):
                self._predict_requests += 1
            crash_after = self.config.crash_after_requests
            if crash_after and self._predict_requests > crash_after:
                if self.config.crash_mode is CrashMode.EXIT:
                    print(
                        f"serve-model: crashing after {crash_after} requests (SIGKILL)",
                        file=sys.stderr,
                        flush=True,
                    )
                    os.kill(os.getpid(), signal.SIGKILL)
                status = 500
                return self._json(
                    500,
                    {
                        "error": f"model runtime broken after {crash_after} requests "
                        "(--crash-after-requests)",
                        "version": version,
                        "request_id": request_id,
                    },
                )
            body = await self._json_body(request)
            rows, labels = self._instances(body)
            if self.config.extra_latency_ms:
                await asyncio.sleep(self.config.extra_latency_ms / 1000.0)
            if self.config.error_rate and self._rng.random() < self.config.error_rate:
                status = 500
                return self._json(
                    500,
                    {
                        "error": "injected failure (--error-rate)",
                        "version": version,
                        "request_id": request_id,
                    },
                )
            predictions = self.model.predict(rows).tolist()
            if self.prediction_log is not None:
                self.prediction_log.write(
                    self._records(request_id, rows, predictions, request.headers.get("Host", ""))
                )
            for prediction in predictions:
                self.metrics.predictions.labels(version=version, prediction=str(prediction)).inc()
            payload: dict[str, Any] = {
                "predictions": predictions,
                "version": version,
                "request_id": request_id,
            }
            if labels is not None:
                payload["correct"] = self._record_feedback(predictions, labels)
            else:
                self._remember(request_id, predictions)
            return self._json(200, payload)
        except RequestError as exc:
            status = exc.status
            return self._json(
                exc.status, {"error": exc.message, "version": version, "request_id": request_id}
            )
        finally:
            self.metrics.requests.labels(version=version, code=str(status)).inc()
            self.metrics.duration.labels(version=version).observe(time.perf_counter() - started)

    async def feedback(self, request: web.Request) -> web.Response:
        version = self.config.version
        try:
            body = await self._json_body(request)
            if not isinstance(body, dict) or not isinstance(body.get("request_id"), str):
                raise RequestError(
                    400,
                    "feedback needs {'request_id': '<id from /predict>', 'label': <true label>}",
                )
            request_id = body["request_id"]
            if "labels" in body:
                labels = body["labels"]
                if not isinstance(labels, list):
                    raise RequestError(
                        400, f"'labels' must be a list, got {json.dumps(labels)[:80]}"
                    )
            elif "label" in body:
                labels = [body["label"]]
            else:
                raise RequestError(
                    400, "feedback needs 'label' (one true label) or 'labels' (one per instance)"
                )
            predictions = self._recent.get(request_id)
            if predictions is None:
                raise RequestError(
                    404,
                    f"unknown request_id {request_id!r}: no unanswered prediction with that id on model {version} "
                    f"(the server remembers the last {self.config.feedback_capacity} predictions, one feedback each)",
                )
            if len(labels) != len(predictions):
                raise RequestError(
                    400,
                    f"request {request_id} made {len(predictions)} predictions, got {len(labels)} labels",
                )
            del self._recent[request_id]
            correct = self._record_feedback(predictions, labels)
            return self._json(
                200,
                {
                    "request_id": request_id,
                    "version": version,
                    "labels": len(labels),
                    "correct": correct,
                },
            )
        except RequestError as exc:
            return self._json(exc.status, {"error": exc.message, "version": version})

    def app(self) -> web.Application:
        app = web.Application(client_max_size=4 * 1024 * 1024)
        app.router.add_post("/predict", self.predict)
        app.router.add_post("/feedback", self.feedback)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_handler)
        return app


async def serve(config: ServerConfig, stop: asyncio.Event | None = None) -> int:
    """Listen, load the model in a worker thread, and serve until ``stop`` is set (or SIGTERM/SIGINT)."""
    server = ModelServer(config)
    runner = web.AppRunner(server.app(), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        print(
            f"serve-model: cannot listen on {config.host}:{config.port}: {exc.strerror or exc}",
            file=sys.stderr,
        )
        return 1
    addresses = runner.addresses
    port = addresses[0][1] if addresses else config.port
    print(
        f"serving model {config.version} from {config.model_path} on http://{config.host}:{port}",
        file=sys.stderr,
        flush=True,
    )

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (
            NotImplementedError,
            RuntimeError,
        ):  # not the main thread / platform without signals
            pass

    exit_code = 0
    # Listening before the model is loaded lets a readiness probe see 503 "loading" rather than
    # a refused connection, the way a real model server behaves while it warms up.
    loading = asyncio.ensure_future(asyncio.to_thread(server.load_model))
    stopping = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({loading, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if loading in done:
        error = loading.exception()
        if error is not None:
            print(f"serve-model: cannot load model: {error}", file=sys.stderr, flush=True)
            exit_code = 1
            stop.set()
        else:
            print(f"model {config.version} loaded; ready", file=sys.stderr, flush=True)
        await stop.wait()
    stopping.cancel()
    if not loading.done():
        loading.cancel()
    # Graceful: stop accepting, let in-flight requests finish (aiohttp waits up to its shutdown timeout).
    await runner.cleanup()
    if server.prediction_log is not None:
        server.prediction_log.close()
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config = parse_config(sys.argv[1:] if argv is None else argv, os.environ)
    except ConfigError as exc:
        print(f"serve-model: {exc}", file=sys.stderr)
        return 2
    # The *_created series double the exposition for nothing a canary check reads.
    disable_created_metrics()
    return asyncio.run(serve(config))


if __name__ == "__main__":
    sys.exit(main())
