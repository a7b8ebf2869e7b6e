"""``make demo``: a canary traffic walk-through on the local mesh with the product's operators."""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from types import FrameType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent
MANIFESTS = REPO / "examples" / "manifests"
#: Applied in this order: the Service and subsets before the route that names them.
MANIFEST_ORDER = (
    "service-model-service.yaml",
    "destinationrule-model-destination.yaml",
    "vs-00-all-v1.yaml",
    "deployment-model-v1.yaml",
    "deployment-model-v2.yaml",
)
VIRTUAL_SERVICE = "model-virtual-service"
NAMESPACE = "default"
STARTUP_TIMEOUT_SECONDS = 30.0


class Canary(str, Enum):
    """Which model-v2 the demo rolls out."""

    GOOD = "good"
    BAD = "bad"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and why."""


@dataclass(frozen=True)
class RunningMesh:
    """A started ``airflow-canary mesh`` subprocess and how to reach its API."""

    process: subprocess.Popen[bytes]
    api_url: str
    kubeconfig: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _api_url(kubeconfig: Path) -> str | None:
    """The API address once the mesh has written its kubeconfig and the port accepts connections."""
    if not kubeconfig.exists():
        return None
    doc = yaml.safe_load(kubeconfig.read_text()) or {}
    server = str(doc["clusters"][0]["cluster"]["server"])
    try:
        with socket.create_connection(("127.0.0.1", int(server.rsplit(":", 1)[1])), timeout=0.5):
            return server
    except OSError:
        return None


@contextmanager
def local_mesh(state_dir: Path) -> Iterator[RunningMesh]:
    """Run the mesh on free loopback ports until the block exits, then stop it."""
    data_port, metrics_port = _free_port(), _free_port()
    kubeconfig = state_dir / "kubeconfig"
    log = state_dir / "mesh.log"
    command = [
        sys.executable,
        "-m",
        "airflow_canary.cli",
        "mesh",
        "--api-port",
        "0",
        "--data-port",
        str(data_port),
        "--metrics-port",
        str(metrics_port),
        "--state-dir",
        str(state_dir / "mesh"),
        "--kubeconfig",
        str(kubeconfig),
    ]
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_SECONDS
        while (api_url := _api_url(kubeconfig)) is None:
            if process.poll() is not None:
                raise DemoError(
                    f"the local mesh exited with code {process.returncode} while starting:\n"
                    + log.read_text(errors="replace")[-2000:]
                )
            if time.monotonic() > deadline:
                raise DemoError(
                    f"the local mesh did not start within {STARTUP_TIMEOUT_SECONDS:.0f}s; see {log}"
                )
            time.sleep(0.1)
        yield RunningMesh(process, api_url, kubeconfig, log)
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # The mesh runs model processes as children: signal the whole session it leads.
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=5)


def kubectl(mesh: RunningMesh, *args: str) -> str:
    kubectl_bin = shutil.which("kubectl")
    if kubectl_bin is None:
        raise DemoError("kubectl not found on PATH; install it to run the demo")
    run = subprocess.run(
        [kubectl_bin, "--kubeconfig", str(mesh.kubeconfig), *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    if run.returncode != 0:
        raise DemoError(f"kubectl {' '.join(args)} failed: {run.stderr.strip() or run.stdout}")
    return run.stdout


def _row(step: str, result: dict[str, Any]) -> str:
    split = result["split"]
    headers = ", ".join(f"{r['header']}={r['value']}" for r in result["header_routes"]) or "-"
    return f"{step:<28} {split.get('v1', 0):>4} {split.get('v2', 0):>4}   {headers}"


def run_demo(canary: Canary, state_dir: Path) -> None:
    with local_mesh(state_dir) as mesh:
        print(f"local mesh API at {mesh.api_url} (kubeconfig {mesh.kubeconfig})")
        os.environ["KUBECONFIG"] = str(mesh.kubeconfig)
        os.environ["AIRFLOW_CONN_KUBERNETES_DEFAULT"] = json.dumps(
            {"conn_type": "kubernetes", "extra": {"kube_config_path": str(mesh.kubeconfig)}}
        )
        crds = REPO.parent / "shared" / "istio-crds"
        if crds.is_dir():
            # create, not apply: Istio's CRDs exceed the last-applied annotation's size limit.
            kubectl(mesh, "create", "-f", str(crds))
            print(f"applied Istio CRDs from {crds}: every write is schema-validated")
        for name in MANIFEST_ORDER:
            print(kubectl(mesh, "apply", "-f", str(MANIFESTS / name)).strip())

        # Imported here: AIRFLOW_HOME and the connection must be set before Airflow loads.
        from airflow_canary.operators.traffic import (
            PromoteCanaryOperator,
            RollbackCanaryOperator,
            SetCanaryWeightOperator,
            SetHeaderRouteOperator,
        )

        # The table is the demo's output; keep the operators' INFO lines out of it.
        logging.getLogger("airflow.task").setLevel(logging.WARNING)
        common: dict[str, Any] = {"virtual_service": VIRTUAL_SERVICE, "namespace": NAMESPACE}
        steps: list[tuple[str, Any]] = [
            ("header route x-canary-version", SetHeaderRouteOperator(task_id="header", **common)),
            ("canary 1%", SetCanaryWeightOperator(task_id="w1", weight=1, **common)),
            ("canary 10%", SetCanaryWeightOperator(task_id="w10", weight=10, **common)),
            ("canary 50%", SetCanaryWeightOperator(task_id="w50", weight=50, **common)),
            ("promote (100%)", PromoteCanaryOperator(task_id="promote", **common)),
            ("canary 10% again", SetCanaryWeightOperator(task_id="w10b", weight=10, **common)),
            (
                "rollback",
                RollbackCanaryOperator(
                    task_id="rollback",
                    reason="demo: showing an instant rollback to v1",
                    **common,
                ),
            ),
        ]
        if canary is Canary.BAD:
            print(
                "--canary bad: the statistical analysis that catches a bad model arrives with "
                "the health checks; this walk-through shows the traffic steps and the rollback."
            )
        print(f"\n{'step':<28} {'v1':>4} {'v2':>4}   header routes")
        print("-" * 64)
        for label, operator in steps:
            result = operator.execute(context={})
            print(_row(label, result))
            if result.get("rolled_back"):
                print(f"{'':<28} reason: {result['reason']}")
        print(f"\nfinal VirtualService ({NAMESPACE}/{VIRTUAL_SERVICE}):\n")
        print(kubectl(mesh, "get", "virtualservice", VIRTUAL_SERVICE, "-o", "yaml"))


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m airflow_canary.demo", description=__doc__)
    parser.add_argument(
        "--canary",
        choices=[c.value for c in Canary],
        default=Canary.GOOD.value,
        help="roll out a good or a bad model-v2 (default good)",
    )
    parser.add_argument(
        "--state-dir", type=Path, help="keep the mesh state and logs here (default: a temp dir)"
    )
    args = parser.parse_args(argv)
    state_dir = args.state_dir or Path(tempfile.mkdtemp(prefix="airflow-canary-demo-"))
    state_dir.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("AIRFLOW_HOME", str(state_dir / "airflow"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

    # SIGTERM takes the same exit path as Ctrl-C, so the mesh is always stopped.
    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)
    try:
        run_demo(Canary(args.canary), state_dir)
    except KeyboardInterrupt:
        print("\ninterrupted; the local mesh was stopped", file=sys.stderr)
        return 130
    except Exception as exc:  # a demo reports the failure instead of a traceback wall
        print(f"demo failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        if args.state_dir is None:
            shutil.rmtree(state_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
