"""Run the Debian ``prometheus`` binary with a generated scrape config: the CLI and ``PrometheusServer``."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import yaml

from airflow_canary.local.lifetime import die_with_parent

INSTALL_HINT = (
    "prometheus not found on PATH; install it with `apt-get install prometheus` (Debian/Ubuntu) "
    "or download it from prometheus.io"
)

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class PrometheusNotFoundError(RuntimeError):
    """The ``prometheus`` binary is not installed."""

    def __init__(self) -> None:
        super().__init__(INSTALL_HINT)


class PrometheusStartError(RuntimeError):
    """Prometheus exited or never became ready."""


def parse_duration(text: str | float) -> float:
    """``"1s"``, ``"500ms"``, ``"2h"`` or a bare number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        seconds = float(text)
    else:
        match = _DURATION.match(text)
        if not match:
            raise ValueError(f"duration must look like 1s, 500ms, 5m or 2h, got {text!r}")
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2) or "s"]
    if seconds <= 0:
        raise ValueError(f"duration must be positive, got {text!r}")
    return seconds


def prometheus_duration(seconds: float) -> str:
    """Seconds -> a duration Prometheus's config accepts (integer milliseconds)."""
    return f"{max(1, round(seconds * 1000))}ms"


@dataclass(frozen=True)
class ScrapeTarget:
    """One endpoint Prometheus scrapes: ``host:port`` and the metrics path."""

    host: str
    port: int
    path: str = "/metrics"

    @classmethod
    def parse(cls, text: str) -> ScrapeTarget:
        """``HOST:PORT[/metrics_path]``, e.g. ``127.0.0.1:15020/stats/prometheus``."""
        address, slash, path = text.strip().partition("/")
        host, colon, port_text = address.rpartition(":")
        if not colon or not host or not port_text.isdigit() or not 0 < int(port_text) < 65536:
            raise ValueError(f"scrape target must be HOST:PORT[/metrics_path], got {text!r}")
        return cls(host=host, port=int(port_text), path=f"/{path}" if slash else "/metrics")

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    def __str__(self) -> str:
        return f"{self.address}{self.path}"


def render_config(
    targets: Sequence[ScrapeTarget],
    interval_seconds: float,
    pod_discovery_urls: Sequence[str] = (),
) -> str:
    """prometheus.yml with one job per target (a job per path, since metrics_path is per job).

    Each of ``pod_discovery_urls`` (the mesh's ``/sd/pods``) becomes a job with HTTP service
    discovery: the pods annotated ``prometheus.io/scrape: "true"``, as kubernetes_sd would find
    them on a cluster.
    """
    interval = prometheus_duration(interval_seconds)
    jobs: list[dict[str, object]] = []
    seen: set[str] = set()
    for target in targets:
        name = str(target)
        if name in seen:
            continue
        seen.add(name)
        jobs.append(
            {
                "job_name": name,
                "metrics_path": target.path,
                "static_configs": [{"targets": [target.address]}],
            }
        )
    for index, url in enumerate(pod_discovery_urls):
        jobs.append(
            {
                "job_name": "kubernetes-pods" if index == 0 else f"kubernetes-pods-{index}",
                "http_sd_configs": [{"url": url, "refresh_interval": interval}],
            }
        )
    config = {
        # scrape_timeout defaults to 10s, which Prometheus rejects when it exceeds the interval.
        "global": {
            "scrape_interval": interval,
            "scrape_timeout": interval,
            "evaluation_interval": interval,
        },
        "scrape_configs": jobs,
    }
    return yaml.safe_dump(config, sort_keys=False)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def find_binary(binary: str | None = None) -> str:
    found = shutil.which(binary or "prometheus")
    if found is None:
        raise PrometheusNotFoundError()
    return found


class PrometheusServer:
    """A Prometheus subprocess on loopback with temporary storage, usable as a context manager."""

    def __init__(
        self,
        port: int = 0,
        scrape_targets: Iterable[ScrapeTarget | str] = (),
        interval_seconds: float = 1.0,
        *,
        storage_dir: str | Path | None = None,
        retention: str = "2h",
        host: str = "127.0.0.1",
        binary: str | None = None,
        ready_timeout_seconds: float = 30.0,
        pod_discovery_urls: Iterable[str] = (),
    ) -> None:
        if not 0 <= port < 65536:
            raise ValueError(f"port must be 0..65535 (0 picks a free one), got {port}")
        self.interval_seconds = parse_duration(interval_seconds)
        parse_duration(retention)
        self.retention = retention
        self.host = host
        self.requested_port = port
        self.port = port
        self.binary = binary
        self.ready_timeout_seconds = ready_timeout_seconds
        self.targets: list[ScrapeTarget] = [_as_target(t) for t in scrape_targets]
        self.pod_discovery_urls: list[str] = list(pod_discovery_urls)
        self._storage_dir = Path(storage_dir) if storage_dir else None
        self._workdir: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log_file: object | None = None

    # -- lifecycle -------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def config_path(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("PrometheusServer is not started")
        return self._workdir / "prometheus.yml"

    @property
    def log_path(self) -> Path:
        if self._workdir is None:
            raise RuntimeError("PrometheusServer is not started")
        return self._workdir / "prometheus.log"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def start(self) -> PrometheusServer:
        """Start Prometheus; after :meth:`kill`, again on the same port, config and storage."""
        if self._process is not None:
            raise RuntimeError("PrometheusServer is already started")
        binary = find_binary(self.binary)
        restart = self._workdir is not None
        if self._workdir is None:
            self._workdir = Path(tempfile.mkdtemp(prefix="airflow-canary-prometheus-"))
        self._write_config()
        # A port picked here may be taken by someone else before Prometheus binds it; retry then.
        attempts = 3 if self.requested_port == 0 and not restart else 1
        for attempt in range(attempts):
            self.port = self.port if restart else (self.requested_port or free_port(self.host))
            try:
                self._spawn(binary)
                self._wait_ready()
                return self
            except PrometheusStartError:
                log = self._log_tail()
                self._terminate()
                if attempt + 1 < attempts and "address already in use" in log:
                    continue
                self._cleanup()
                raise
        raise AssertionError("unreachable")

    def kill(self, sig: signal.Signals = signal.SIGKILL, timeout_seconds: float = 30.0) -> int:
        """Send ``sig`` (SIGKILL: a crash) and wait for Prometheus to exit; its exit code.

        The config and the storage stay: :meth:`start` runs Prometheus again on the same port,
        and it replays its write-ahead log, as after a crash on a server.
        """
        process, self._process = self._process, None
        if process is None:
            raise RuntimeError("PrometheusServer is not started")
        process.send_signal(sig)
        code = process.wait(timeout=timeout_seconds)
        log, self._log_file = self._log_file, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]
        return code

    def stop(self, timeout_seconds: float = 10.0) -> int | None:
        """Stop Prometheus (SIGTERM, then SIGKILL) and remove temporary files; returns its exit code."""
        code = self._terminate(timeout_seconds)
        self._cleanup()
        return code

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def wait(self) -> int:
        if self._process is None:
            raise RuntimeError("PrometheusServer is not started")
        return self._process.wait()

    # -- configuration ---------------------------------------------------------------------
    def add_targets(self, targets: Iterable[ScrapeTarget | str]) -> None:
        """Scrape more endpoints: rewrite the config and reload Prometheus if it runs."""
        for target in targets:
            parsed = _as_target(target)
            if parsed not in self.targets:
                self.targets.append(parsed)
        if self._workdir is not None:
            self.reload()

    def reload(self, timeout_seconds: float = 10.0) -> None:
        """Rewrite prometheus.yml and ask Prometheus to load it (POST /-/reload)."""
        self._write_config()
        request = urllib.request.Request(f"{self.url}/-/reload", method="POST", data=b"")
        try:
            with urllib.request.urlopen(request, timeout=timeout_seconds) as response:
                response.read()
        except urllib.error.HTTPError as err:
            body = err.read().decode(errors="replace")
            raise PrometheusStartError(
                f"Prometheus at {self.url} rejected the reload: {body}"
            ) from err

    def active_targets(self) -> list[dict[str, object]]:
        """Prometheus's /api/v1/targets active list (scrape URL, health, last error)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=5) as response:
            data = json.load(response)
        return list(data["data"]["activeTargets"])

    def wait_for_scrape(self, timeout_seconds: float = 30.0) -> None:
        """Block until every configured target has been scraped successfully once."""
        deadline = time.monotonic() + timeout_seconds
        wanted = {f"http://{t}" for t in self.targets}
        while True:
            healthy = {
                str(t.get("scrapeUrl")) for t in self.active_targets() if t.get("health") == "up"
            }
            if wanted <= healthy:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"Prometheus at {self.url} did not scrape {sorted(wanted - healthy)} "
                    f"within {timeout_seconds}s"
                )
            time.sleep(0.2)

    # -- internals -------------------------------------------------------------------------
    def _write_config(self) -> None:
        tmp = self.config_path.with_suffix(".tmp")
        tmp.write_text(render_config(self.targets, self.interval_seconds, self.pod_discovery_urls))
        os.replace(tmp, self.config_path)

    def _spawn(self, binary: str) -> None:
        assert self._workdir is not None
        storage = self._storage_dir or (self._workdir / "data")
        storage.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={storage}",
            f"--storage.tsdb.retention.time={self.retention}",
            f"--web.listen-address={self.host}:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=warn",
        ]
        log = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        self._log_file = log
        self._process = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self._workdir,
            preexec_fn=die_with_parent(),  # no Prometheus outlives a SIGKILLed owner
        )

    def _wait_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.ready_timeout_seconds
        while True:
            if self._process.poll() is not None:
                raise PrometheusStartError(
                    f"prometheus exited with code {self._process.returncode} before it was ready "
                    f"on {self.url}:\n{self._log_tail()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, OSError):
                pass
            if time.monotonic() > deadline:
                raise PrometheusStartError(
                    f"prometheus was not ready on {self.url} within "
                    f"{self.ready_timeout_seconds}s:\n{self._log_tail()}"
                )
            time.sleep(0.1)

    def _log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except (OSError, RuntimeError):
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _terminate(self, timeout_seconds: float = 10.0) -> int | None:
        process, self._process = self._process, None
        code: int | None = None
        if process is not None:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=timeout_seconds)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=timeout_seconds)
            code = process.returncode
        log, self._log_file = self._log_file, None
        if log is not None:
            log.close()  # type: ignore[attr-defined]
        return code

    def _cleanup(self) -> None:
        workdir, self._workdir = self._workdir, None
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)


def _as_target(target: ScrapeTarget | str) -> ScrapeTarget:
    return target if isinstance(target, ScrapeTarget) else ScrapeTarget.parse(target)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="airflow-canary prometheus",
        description="Run Prometheus on loopback scraping the local mesh and model servers.",
    )
    parser.add_argument(
        "--port", type=int, default=9090, help="listen port on 127.0.0.1 (0: any free)"
    )
    parser.add_argument(
        "--scrape",
        action="append",
        default=[],
        metavar="HOST:PORT[/PATH]",
        help="endpoint to scrape (repeatable); the path defaults to /metrics",
    )
    parser.add_argument(
        "--pod-discovery",
        action="append",
        default=[],
        metavar="URL",
        help="HTTP service discovery of annotated pods, e.g. the mesh's http://127.0.0.1:15020/sd/pods",
    )
    parser.add_argument("--interval", default="1s", help="scrape interval, e.g. 1s, 15s")
    parser.add_argument(
        "--storage", default=None, help="TSDB directory to keep (default: temporary)"
    )
    parser.add_argument("--retention", default="2h", help="TSDB retention time, e.g. 2h")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    try:
        targets = [ScrapeTarget.parse(t) for t in args.scrape]
        interval = parse_duration(args.interval)
        parse_duration(args.retention)
    except ValueError as err:
        print(f"airflow-canary prometheus: {err}", file=sys.stderr)
        return 2
    try:
        find_binary()
    except PrometheusNotFoundError as err:
        print(f"airflow-canary prometheus: {err}", file=sys.stderr)
        return 2

    server = PrometheusServer(
        args.port,
        targets,
        interval,
        storage_dir=args.storage,
        retention=args.retention,
        pod_discovery_urls=args.pod_discovery,
    )
    stop = threading.Event()

    def _forward(signum: int, _frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, _forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        try:
            server.start()
        except PrometheusStartError as err:
            print(f"airflow-canary prometheus: {err}", file=sys.stderr)
            return 1
        scraped = ", ".join(str(t) for t in targets) or "nothing yet"
        print(
            f"prometheus ready at {server.url} scraping {scraped} every {args.interval}", flush=True
        )
        while not stop.is_set() and server.running:
            stop.wait(0.5)
        exited_by_itself = not stop.is_set()
        code = server.stop()
        if exited_by_itself:
            print(f"airflow-canary prometheus: prometheus exited with code {code}", file=sys.stderr)
            return code or 1
        return 0
    finally:
        server.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
