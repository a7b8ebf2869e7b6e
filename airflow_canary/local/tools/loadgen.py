"""``airflow-canary loadgen``: steady open-loop prediction traffic with per-version status counts and latencies."""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import random
import signal
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import aiohttp

#: Response header the local mesh's data plane adds, naming the subset that served a request.
SERVED_BY_HEADER = "x-canary-served-by"
#: Response header the model server adds (also in its JSON body as ``version``).
MODEL_VERSION_HEADER = "x-model-version"
#: Version bucket for answers that name no version (e.g. the mesh's own 503 without upstream).
UNKNOWN_VERSION = "unknown"
#: Status buckets for requests that got no HTTP response.
STATUS_TIMEOUT = "timeout"
STATUS_ERROR = "error"

_TOKEN_CHARS = set("!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")


def parse_header(text: str) -> tuple[str, str]:
    """``"x-canary-version=v2"`` -> ``("x-canary-version", "v2")``, with a clear error otherwise."""
    name, sep, value = text.partition("=")
    name = name.strip()
    if not sep or not name:
        raise ValueError(f"header must be NAME=VALUE, got {text!r}")
    if not set(name) <= _TOKEN_CHARS:
        raise ValueError(f"header name {name!r} has characters not allowed in an HTTP header name")
    return name, value.strip()


@dataclass(frozen=True)
class LoadConfig:
    """What traffic to send: ``rps`` requests per second for ``duration`` seconds to ``target``."""

    target: str
    host: str | None = None
    rps: float = 10.0
    duration: float = 10.0
    headers: tuple[tuple[str, str], ...] = ()
    feedback: bool = False
    concurrency: int = 256
    timeout: float = 10.0
    path: str = "/predict"
    #: A request that starts this many seconds after its scheduled time counts as late.
    late_after: float = 0.1
    #: Seeds the order in which holdout rows are sent.
    seed: int = 0

    def __post_init__(self) -> None:
        parts = urlsplit(self.target)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"target must be an http(s) URL such as http://127.0.0.1:8081, got {self.target!r}"
            )
        if isinstance(self.rps, bool) or not (self.rps > 0 and math.isfinite(self.rps)):
            raise ValueError(f"rps must be a number > 0, got {self.rps}")
        if not (self.duration > 0 and math.isfinite(self.duration)):
            raise ValueError(f"duration must be a number of seconds > 0, got {self.duration}")
        if self.concurrency < 1:
            raise ValueError(f"concurrency must be an integer >= 1, got {self.concurrency}")
        if not self.timeout > 0:
            raise ValueError(f"timeout must be a number of seconds > 0, got {self.timeout}")
        if not self.late_after >= 0:
            raise ValueError(f"late_after must be a number of seconds >= 0, got {self.late_after}")
        if not self.path.startswith("/"):
            raise ValueError(f"path must start with '/', got {self.path!r}")
        if self.host is not None and not self.host:
            raise ValueError("host must be a non-empty Host header value or None")

    @property
    def planned(self) -> int:
        """How many requests the schedule holds: ``rps * duration``, rounded."""
        return max(1, round(self.rps * self.duration))

    @property
    def url(self) -> str:
        return self.target.rstrip("/") + self.path


@dataclass(frozen=True)
class VersionStats:
    """Outcome of the requests one version answered."""

    version: str
    requests: int
    #: HTTP status code (as a string), ``"timeout"`` or ``"error"`` -> count.
    by_status: dict[str, int]
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None
    #: Successful single-instance predictions compared with the ground truth (client side).
    scored: int = 0
    correct: int = 0

    @property
    def ok(self) -> int:
        return sum(
            n for code, n in self.by_status.items() if code.isdigit() and 200 <= int(code) < 300
        )

    @property
    def failed(self) -> int:
        """5xx answers plus requests that got no answer."""
        return sum(
            n for code, n in self.by_status.items() if not code.isdigit() or int(code) >= 500
        )

    @property
    def accuracy(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "requests": self.requests,
            "by_status": dict(sorted(self.by_status.items())),
            "p50_ms": self.p50_ms,
            "p90_ms": self.p90_ms,
            "p99_ms": self.p99_ms,
            "scored": self.scored,
            "correct": self.correct,
            "accuracy": self.accuracy,
        }


@dataclass(frozen=True)
class LoadReport:
    """What ``run_load`` sent and what came back, per serving version."""

    planned: int
    sent: int
    completed: int
    late: int
    elapsed_seconds: float
    interrupted: bool
    feedback: bool
    per_version: dict[str, VersionStats] = field(default_factory=dict)

    @property
    def achieved_rps(self) -> float:
        return self.sent / self.elapsed_seconds if self.elapsed_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "planned": self.planned,
            "sent": self.sent,
            "completed": self.completed,
            "late": self.late,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "achieved_rps": round(self.achieved_rps, 2),
            "interrupted": self.interrupted,
            "feedback": self.feedback,
            "per_version": {v: s.to_dict() for v, s in sorted(self.per_version.items())},
        }

    def table(self) -> str:
        """A plain-text table: one row per serving version."""
        statuses = sorted(
            {code for s in self.per_version.values() for code in s.by_status}, key=_status_order
        )
        header = ["version", "requests", *statuses, "p50 ms", "p90 ms", "p99 ms", "accuracy"]
        rows = [header]
        for version, stats in sorted(self.per_version.items()):
            rows.append(
                [
                    version,
                    str(stats.requests),
                    *(str(stats.by_status.get(code, 0)) for code in statuses),
                    _fmt(stats.p50_ms),
                    _fmt(stats.p90_ms),
                    _fmt(stats.p99_ms),
                    "-" if stats.accuracy is None else f"{stats.accuracy:.3f}",
                ]
            )
        widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
        lines = [
            "  ".join(
                cell.ljust(w) if i == 0 else cell.rjust(w)
                for i, (cell, w) in enumerate(zip(row, widths, strict=True))
            )
            for row in rows
        ]
        if not self.per_version:
            lines.append("(no responses)")
        state = "interrupted; " if self.interrupted else ""
        lines.append(
            f"{state}sent {self.sent} of {self.planned} planned in {self.elapsed_seconds:.1f} s "
            f"({self.achieved_rps:.1f} rps), completed {self.completed}, late {self.late}"
        )
        return "\n".join(lines)


def _status_order(code: str) -> tuple[int, str]:
    return (int(code), "") if code.isdigit() else (1000, code)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def percentile(sorted_values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (``q`` in 0..100) of already sorted values; None when empty."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(q / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


class _Tally:
    """Mutable per-version accumulator behind the frozen reports."""

    def __init__(self) -> None:
        self.status: dict[str, dict[str, int]] = {}
        self.latencies: dict[str, list[float]] = {}
        self.scored: dict[str, int] = {}
        self.correct: dict[str, int] = {}
        self.completed = 0

    def add(
        self, version: str, status: str, latency_ms: float | None, correct: bool | None
    ) -> None:
        self.completed += 1
        counts = self.status.setdefault(version, {})
        counts[status] = counts.get(status, 0) + 1
        if latency_ms is not None:
            self.latencies.setdefault(version, []).append(latency_ms)
        if correct is not None:
            self.scored[version] = self.scored.get(version, 0) + 1
            self.correct[version] = self.correct.get(version, 0) + int(correct)

    def per_version(self) -> dict[str, VersionStats]:
        result: dict[str, VersionStats] = {}
        for version, counts in self.status.items():
            latencies = sorted(self.latencies.get(version, []))
            result[version] = VersionStats(
                version=version,
                requests=sum(counts.values()),
                by_status=dict(counts),
                p50_ms=percentile(latencies, 50),
                p90_ms=percentile(latencies, 90),
                p99_ms=percentile(latencies, 99),
                scored=self.scored.get(version, 0),
                correct=self.correct.get(version, 0),
            )
        return result


def _served_by(payload: Any, headers: Mapping[str, str]) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("version"), str) and payload["version"]:
        return str(payload["version"])
    return headers.get(SERVED_BY_HEADER) or headers.get(MODEL_VERSION_HEADER) or UNKNOWN_VERSION


async def run_load(
    config: LoadConfig,
    stop: asyncio.Event | None = None,
    on_progress: Callable[[LoadReport], None] | None = None,
    progress_interval: float = 5.0,
) -> LoadReport:
    """Send ``config.planned`` predict requests on an open-loop schedule and report what came back.

    Request ``i`` is due at ``start + i / rps`` whether or not earlier ones have been answered;
    at most ``concurrency`` are in flight, and one that starts more than ``late_after`` seconds
    behind its schedule is counted as late (it is still sent). Setting ``stop`` ends the
    schedule early; in-flight requests are still awaited (bounded by ``timeout``).
    """
    from airflow_canary.local.model.training import holdout_split

    split = await asyncio.to_thread(holdout_split)
    rows: list[list[float]] = split.X_holdout.tolist()
    truth: list[int] = split.y_holdout.tolist()
    order = list(range(len(rows)))
    random.Random(config.seed).shuffle(order)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    tally = _Tally()
    headers = dict(config.headers)
    if config.host:
        headers["Host"] = config.host
    semaphore = asyncio.Semaphore(config.concurrency)
    in_flight: set[asyncio.Task[None]] = set()
    sent = late = 0
    interrupted = False
    start = loop.time()

    def snapshot() -> LoadReport:
        return LoadReport(
            planned=config.planned,
            sent=sent,
            completed=tally.completed,
            late=late,
            elapsed_seconds=loop.time() - start,
            interrupted=interrupted,
            feedback=config.feedback,
            per_version=tally.per_version(),
        )

    async def send(session: aiohttp.ClientSession, index: int) -> None:
        row = order[index % len(order)]
        body: dict[str, Any] = {"instances": [rows[row]]}
        if config.feedback:
            # Ground truth rides with the request so the version that serves the prediction
            # is the one that counts it (a separate /feedback call could be routed elsewhere).
            body["labels"] = [truth[row]]
        began = loop.time()
        try:
            async with session.post(config.url, json=body, headers=headers) as response:
                raw = await response.read()
                latency_ms = (loop.time() - began) * 1000.0
                try:
                    payload = json.loads(raw) if raw else None
                except ValueError:
                    payload = None
                correct: bool | None = None
                if response.status == 200 and isinstance(payload, dict):
                    predictions = payload.get("predictions")
                    if isinstance(predictions, list) and len(predictions) == 1:
                        correct = predictions[0] == truth[row]
                tally.add(
                    _served_by(payload, response.headers), str(response.status), latency_ms, correct
                )
        except asyncio.TimeoutError:
            tally.add(UNKNOWN_VERSION, STATUS_TIMEOUT, None, None)
        except aiohttp.ClientError:
            tally.add(UNKNOWN_VERSION, STATUS_ERROR, None, None)
        finally:
            semaphore.release()

    async def report_progress() -> None:
        while True:
            await asyncio.sleep(progress_interval)
            if on_progress is not None:
                on_progress(snapshot())

    progress = asyncio.ensure_future(report_progress()) if on_progress is not None else None
    connector = aiohttp.TCPConnector(limit=config.concurrency)
    timeout = aiohttp.ClientTimeout(total=config.timeout)
    try:
        async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
            for i in range(config.planned):
                due = start + i / config.rps
                delay = due - loop.time()
                if delay > 0.05:
                    # Long gaps (low rps) wait on the stop event so Ctrl-C ends them at once.
                    try:
                        await asyncio.wait_for(stop.wait(), delay)
                    except asyncio.TimeoutError:
                        pass
                elif delay > 0:
                    await asyncio.sleep(delay)
                await semaphore.acquire()
                if stop.is_set():
                    semaphore.release()
                    interrupted = True
                    break
                if loop.time() - due > config.late_after:
                    late += 1
                task = asyncio.ensure_future(send(session, i))
                in_flight.add(task)
                task.add_done_callback(in_flight.discard)
                sent += 1
            if in_flight:
                await asyncio.wait(set(in_flight), timeout=config.timeout + 1.0)
    finally:
        if progress is not None:
            progress.cancel()
    return snapshot()


def _parse_args(argv: Sequence[str]) -> tuple[LoadConfig, bool, float | None]:
    parser = argparse.ArgumentParser(
        prog="airflow-canary loadgen",
        description="Send steady prediction traffic (rows of the bundled dataset's holdout split) and "
        "report status counts and latency percentiles per serving version.",
    )
    parser.add_argument(
        "--target",
        required=True,
        help="base URL to send to, e.g. http://127.0.0.1:8081 (the mesh data plane)",
    )
    parser.add_argument("--host", help="Host header, e.g. model-service (the mesh routes by it)")
    parser.add_argument("--rps", type=float, default=10.0, help="requests per second (default 10)")
    parser.add_argument(
        "--duration", type=float, default=10.0, help="seconds of traffic (default 10)"
    )
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra request header; repeatable",
    )
    parser.add_argument(
        "--feedback", action="store_true", help="send the ground-truth label with each request"
    )
    parser.add_argument(
        "--concurrency", type=int, default=256, help="most requests in flight at once (default 256)"
    )
    parser.add_argument(
        "--timeout", type=float, default=10.0, help="seconds before a request counts as a timeout"
    )
    parser.add_argument("--path", default="/predict", help="request path (default /predict)")
    parser.add_argument("--seed", type=int, default=0, help="seed for the order of holdout rows")
    parser.add_argument(
        "--progress",
        type=float,
        metavar="SECONDS",
        help="print the table every SECONDS while running",
    )
    parser.add_argument(
        "--json", action="store_true", help="print a JSON summary instead of the table"
    )
    args = parser.parse_args(list(argv))
    headers = tuple(parse_header(h) for h in args.header)
    if args.progress is not None and not args.progress > 0:
        raise ValueError(f"--progress must be a number of seconds > 0, got {args.progress}")
    config = LoadConfig(
        target=args.target,
        host=args.host,
        rps=args.rps,
        duration=args.duration,
        headers=headers,
        feedback=args.feedback,
        concurrency=args.concurrency,
        timeout=args.timeout,
        path=args.path,
        seed=args.seed,
    )
    return config, args.json, args.progress


async def _run_cli(config: LoadConfig, as_json: bool, progress: float | None) -> LoadReport:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
        except (NotImplementedError, RuntimeError):
            pass  # no signal handlers here (e.g. not the main thread): Ctrl-C still interrupts

    def show(report: LoadReport) -> None:
        # With --json, stdout carries only the final summary.
        print(report.table() + "\n", file=sys.stderr if as_json else sys.stdout, flush=True)

    return await run_load(
        config, stop, on_progress=show if progress else None, progress_interval=progress or 5.0
    )


def main(argv: Sequence[str] | None = None) -> int:
    try:
        config, as_json, progress = _parse_args(sys.argv[1:] if argv is None else argv)
    except ValueError as exc:
        print(f"loadgen: {exc}", file=sys.stderr)
        return 2
    report = asyncio.run(_run_cli(config, as_json, progress))
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
    else:
        print(report.table())
    answered = sum(
        n for s in report.per_version.values() for code, n in s.by_status.items() if code.isdigit()
    )
    # Nothing answered at all usually means a wrong --target; say so through the exit code.
    return 0 if answered > 0 or report.sent == 0 else 1
