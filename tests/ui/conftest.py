"""Fixtures for the UI tests: real rollout-shaped DAG runs and a real Airflow api-server with the plugin."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

DAG_FILE = Path(__file__).parent / "dags" / "canary_ui_runs.py"
RUN_DAGS = (
    "canary_ui_healthy",
    "canary_ui_rolled_back",
    "canary_ui_malformed",
    "canary_ui_unrelated",
    "canary_ui_links",
)
PROMETHEUS_UI = "http://prometheus.example:9090"
#: The analysis task of canary_ui_links reads this connection for its Prometheus link.
PROMETHEUS_CONNECTION = json.dumps(
    {"conn_type": "prometheus", "host": "http://127.0.0.1:9", "extra": {"ui_url": PROMETHEUS_UI}}
)
#: user -> (role, password); "nobody" has no role and so may read no DAG.
USERS = {
    "admin": ("admin", "admin-pass"),
    "viewer": ("viewer", "viewer-pass"),
    "nobody": ("", "nobody-pass"),
}
ARTIFACTS = REPO / "artifacts"
AIRFLOW = Path(sys.executable).parent / "airflow"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="session")
def rollout_runs(airflow_db: Path) -> dict[str, str]:
    """Run each test DAG once with ``airflow dags test``; returns dag_id -> run_id."""
    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags_folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(DAG_FILE, dags_folder / DAG_FILE.name)
    runs: dict[str, str] = {}
    for dag_id in RUN_DAGS:
        # A rolled-back run ends failed on purpose, so the exit code is not checked; the run is.
        subprocess.run(
            [str(AIRFLOW), "dags", "test", dag_id],
            cwd=airflow_db,
            env={**os.environ, "AIRFLOW_CONN_PROMETHEUS_UI_TEST": PROMETHEUS_CONNECTION},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=180,
        )
        from airflow.models.dagrun import DagRun
        from airflow.utils.session import create_session
        from sqlalchemy import select

        with create_session() as session:
            run_id = session.scalar(
                select(DagRun.run_id)
                .where(DagRun.dag_id == dag_id)
                .order_by(DagRun.id.desc())
                .limit(1)
            )
        assert run_id is not None, f"airflow dags test {dag_id} left no DAG run"
        runs[dag_id] = run_id
    return runs


@dataclass(frozen=True)
class ApiServer:
    """A running ``airflow api-server`` and how to log in to it."""

    url: str
    log: Path

    def token(self, user: str) -> str:
        response = httpx.post(
            f"{self.url}/auth/token",
            json={"username": user, "password": USERS[user][1]},
            timeout=30,
        )
        response.raise_for_status()
        return str(response.json()["access_token"])

    def client(self, user: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.token(user)}"} if user else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)


@pytest.fixture(scope="session")
def api_server(airflow_db: Path, rollout_runs: dict[str, str]) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free loopback port with three simple-auth-manager users."""
    passwords = airflow_db / "ui-test-passwords.json"
    passwords.write_text(json.dumps({user: password for user, (_, password) in USERS.items()}))
    port = free_port()
    env = {
        **os.environ,
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{u}:{r}" for u, (r, _) in USERS.items()
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__API_AUTH__JWT_SECRET": "canary-ui-tests-jwt-secret-0123456789abcdef",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
    }
    ARTIFACTS.mkdir(exist_ok=True)
    log = ARTIFACTS / "ui-api-server.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                str(AIRFLOW),
                "api-server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--workers",
                "1",
            ],
            cwd=airflow_db,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if process.poll() is not None:
                pytest.fail(f"api-server exited with {process.returncode}; see {log}")
            try:
                if httpx.get(f"{url}/api/v2/monitor/health", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"api-server not healthy within 180 s; see {log}")
            time.sleep(0.5)
        yield ApiServer(url=url, log=log)
    finally:
        # The api-server forks workers: stop its whole process group.
        try:
            os.killpg(process.pid, 15)
            process.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            os.killpg(process.pid, 9)
            process.wait(timeout=10)
