"""Fixtures for the UI tests: real runs of the example rollout DAG and a real Airflow api-server with the plugin."""

from __future__ import annotations

import json
import os
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
from tests.fixtures.stack import FAST, DagRun, RolloutStack

DAG_FILE = Path(__file__).parent / "dags" / "canary_ui_runs.py"
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


@dataclass(frozen=True)
class UiRuns:
    """The DAG runs the UI tests look at: two real example rollouts and two odd DAGs."""

    healthy: DagRun
    rolled_back: DagRun
    malformed: DagRun
    unrelated: DagRun


@pytest.fixture(scope="session")
def rollout_runs(rollout_stack: RolloutStack) -> UiRuns:
    """A promoted and a rolled-back run of the example ``canary_rollout`` DAG on the local stack."""
    rollout_stack.add_dag_file(DAG_FILE)
    # The odd DAGs first, so the real rollouts are the newest runs (top of the page).
    # A malformed run ends as it ends; only what the page makes of it matters.
    malformed = rollout_stack.run_dag("canary_ui_malformed")
    unrelated = rollout_stack.run_dag("canary_ui_unrelated")
    rollout_stack.reset_traffic()
    rolled_back = rollout_stack.run_dag("canary_rollout", {**FAST, "v2_error_rate": 0.1})
    assert rolled_back.state == "failed", rolled_back.log[-4000:]
    rollout_stack.reset_traffic()
    healthy = rollout_stack.run_dag("canary_rollout", FAST)
    assert healthy.state == "success", healthy.log[-4000:]
    return UiRuns(
        healthy=healthy, rolled_back=rolled_back, malformed=malformed, unrelated=unrelated
    )


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
def api_server(airflow_db: Path, rollout_runs: UiRuns) -> Iterator[ApiServer]:
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
