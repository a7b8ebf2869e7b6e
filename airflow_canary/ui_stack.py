"""``make ui``: the local mesh, Prometheus, model-v1 with load, and Airflow with the rollouts page."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType

import httpx

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
#: Fixed local credentials for the simple auth manager; printed at start-up.
ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin"
STARTUP_TIMEOUT_SECONDS = 240.0


@dataclass(frozen=True)
class Part:
    """One started process of the stack."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path


def _start(name: str, command: Sequence[str], log: Path, env: dict[str, str] | None = None) -> Part:
    with log.open("wb") as out:
        process = subprocess.Popen(
            list(command),
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=log.parent,
            start_new_session=True,
        )
    return Part(name, process, log)


def _stop(part: Part) -> None:
    if part.process.poll() is not None:
        return
    try:
        os.killpg(part.process.pid, signal.SIGTERM)
        part.process.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(part.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        part.process.wait(timeout=10)


def _stop_all(parts: list[Part]) -> None:
    for part in reversed(parts):
        _stop(part)


def _wait_http(url: str, part: Part, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if part.process.poll() is not None:
            return False
        try:
            if httpx.get(url, timeout=3).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    return False


def airflow_env(state: Path, port: int, extra_connections: dict[str, str]) -> dict[str, str]:
    """Environment of ``airflow standalone``: its home under ``state``, the repo's DAGs, one admin.

    ``extra_connections`` are the local stack's connections and settings (``connection_env``).
    """
    home = state / "airflow"
    home.mkdir(parents=True, exist_ok=True)
    passwords = home / "simple_auth_manager_passwords.json"
    passwords.write_text(json.dumps({ADMIN_USER: ADMIN_PASSWORD}) + "\n")
    env = {
        **os.environ,
        # standalone starts its components as ``airflow ...`` from PATH.
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{ADMIN_USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        **extra_connections,
    }
    return env


def run(state: Path, port: int, rps: float) -> int:
    from airflow_canary.local.tools.stack import LocalStack, StackConfig

    state.mkdir(parents=True, exist_ok=True)
    print("starting the local mesh, model-v1, Prometheus and load ...", flush=True)
    with LocalStack(StackConfig(state_dir=state, rps=rps)) as local:
        print(f"mesh: data plane {local.data_url}, kubeconfig {local.kubeconfig}")
        print(f"prometheus: {local.prometheus_url}")
        print(f"load: {rps:g} requests/s to model-service with ground-truth feedback")
        parts: list[Part] = []
        try:
            env = airflow_env(state, port, local.connection_env())
            airflow = _start(
                "airflow", [str(BIN / "airflow"), "standalone"], state / "airflow.log", env=env
            )
            parts.append(airflow)
            url = f"http://127.0.0.1:{port}"
            if not _wait_http(f"{url}/api/v2/monitor/health", airflow, STARTUP_TIMEOUT_SECONDS):
                print(f"airflow standalone did not start; see {airflow.log}", file=sys.stderr)
                return 1
            print()
            print(f"Airflow UI:      {url}   (user {ADMIN_USER!r}, password {ADMIN_PASSWORD!r})")
            print(
                f"Canary rollouts: {url}/plugin/canary-rollouts   (JSON: {url}/canary-rollouts/rollouts)"
            )
            print("Trigger the 'canary_rollout' DAG from the UI; logs are in", state)
            print("Ctrl-C stops everything.")
            while airflow.process.poll() is None:
                time.sleep(1)
            print(f"airflow stopped unexpectedly; see {airflow.log}", file=sys.stderr)
            return 1
        finally:
            _stop_all(parts)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_canary.ui_stack", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=REPO / ".state" / "ui")
    parser.add_argument("--port", type=int, default=8080, help="Airflow UI port (default 8080)")
    parser.add_argument("--rps", type=float, default=200.0, help="steady load on model-service")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(args.state_dir, args.port, args.rps)
    except KeyboardInterrupt:
        print("\nstopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
