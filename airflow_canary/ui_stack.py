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
from contextlib import ExitStack
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
    """Environment of ``airflow standalone``: its home under ``state``, the repo's DAGs, one admin."""
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


def run(state: Path, port: int) -> int:
    from airflow_canary.demo import MANIFESTS, _free_port, kubectl, local_mesh

    state.mkdir(parents=True, exist_ok=True)
    missing: list[str] = []
    connections: dict[str, str] = {}
    with ExitStack() as stack:
        parts: list[Part] = []
        stack.callback(_stop_all, parts)

        mesh_metrics: str | None = None
        data_port: int | None = None
        try:
            mesh = stack.enter_context(local_mesh(state))
            connections["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = json.dumps(
                {"conn_type": "kubernetes", "extra": {"kube_config_path": str(mesh.kubeconfig)}}
            )
            crds = REPO.parent / "shared" / "istio-crds"
            if crds.is_dir():
                kubectl(mesh, "create", "-f", str(crds))
            for name in (
                "service-model-service.yaml",
                "destinationrule-model-destination.yaml",
                "vs-00-all-v1.yaml",
                "deployment-model-v1.yaml",
            ):
                kubectl(mesh, "apply", "-f", str(MANIFESTS / name))
            print(f"mesh: Kubernetes API at {mesh.api_url}, kubeconfig {mesh.kubeconfig}")
            mesh_metrics, data_port = _mesh_ports(mesh.process.args)
        except Exception as error:  # the rest of the stack is still useful without the mesh
            missing.append(f"local mesh: {error}")

        if mesh_metrics is not None:
            prom_port = _free_port()
            prometheus = _start(
                "prometheus",
                [
                    str(BIN / "airflow-canary"),
                    "prometheus",
                    "--port",
                    str(prom_port),
                    "--scrape",
                    f"127.0.0.1:{mesh_metrics}/stats/prometheus",
                ],
                state / "prometheus.log",
            )
            parts.append(prometheus)
            prom_url = f"http://127.0.0.1:{prom_port}"
            if _wait_http(f"{prom_url}/-/ready", prometheus, 60):
                connections["AIRFLOW_CONN_PROMETHEUS_DEFAULT"] = json.dumps(
                    {"conn_type": "prometheus", "host": prom_url}
                )
                print(f"prometheus: {prom_url}")
            else:
                missing.append(f"Prometheus did not become ready; see {prometheus.log}")
        else:
            missing.append("Prometheus: needs the mesh's telemetry port")

        if data_port is not None:
            parts.append(
                _start(
                    "load",
                    [
                        str(BIN / "airflow-canary"),
                        "loadgen",
                        "--target",
                        f"http://127.0.0.1:{data_port}",
                        "--host",
                        "model-service",
                        "--rps",
                        "20",
                        "--duration",
                        str(24 * 3600),
                    ],
                    state / "loadgen.log",
                )
            )
            print(f"load: 20 requests/s to model-service through 127.0.0.1:{data_port}")
        else:
            missing.append("load: needs the mesh's data plane")

        airflow = _start(
            "airflow",
            [str(BIN / "airflow"), "standalone"],
            state / "airflow.log",
            env=airflow_env(state, port, connections),
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
        for item in missing:
            print(f"not running: {item}")
        print("Ctrl-C stops everything.")
        while all(part.process.poll() is None for part in parts if part.name != "load"):
            time.sleep(1)
        stopped = [part.name for part in parts if part.process.poll() is not None]
        print(
            f"stopped unexpectedly: {', '.join(stopped)}; see the logs in {state}", file=sys.stderr
        )
        return 1


def _mesh_ports(args: object) -> tuple[str | None, int | None]:
    """The metrics and data ports ``local_mesh`` chose, read back from its command line."""
    argv = [str(a) for a in args] if isinstance(args, list | tuple) else []

    def value(flag: str) -> str | None:
        return argv[argv.index(flag) + 1] if flag in argv else None

    data = value("--data-port")
    return value("--metrics-port"), int(data) if data else None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_canary.ui_stack", description=__doc__)
    parser.add_argument("--state-dir", type=Path, default=REPO / ".state" / "ui")
    parser.add_argument("--port", type=int, default=8080, help="Airflow UI port (default 8080)")
    args = parser.parse_args(argv)

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        return run(args.state_dir, args.port)
    except KeyboardInterrupt:
        print("\nstopped")
        return 0


if __name__ == "__main__":
    sys.exit(main())
