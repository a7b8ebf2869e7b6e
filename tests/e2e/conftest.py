"""End-to-end fixtures: the local stack (mesh, model-v1, Prometheus, load) and real Airflow DAG runs."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.local.stack import (
    EXAMPLE_MANIFESTS,
    LocalStack,
    StackConfig,
    prometheus_available,
)
from tests.conftest import REPO

AIRFLOW = [sys.executable, "-m", "airflow"]
FINISHED = re.compile(
    r"DagRun Finished: dag_id=(?P<dag>[^,]+), .*?run_id=(?P<run>[^,]+), .*?state=(?P<state>\w+)"
)


@dataclass
class DagRun:
    dag_id: str
    run_id: str
    state: str
    log: str

    def xcom(self, task_id: str, key: str = "return_value") -> Any:
        from airflow.models.xcom import XComModel
        from airflow.utils.session import create_session

        with create_session() as session:
            row = (
                session.query(XComModel)
                .filter_by(dag_id=self.dag_id, run_id=self.run_id, task_id=task_id, key=key)
                .one_or_none()
            )
            return None if row is None else XComModel.deserialize_value(row)

    def task_states(self) -> dict[str, str]:
        from airflow.models.taskinstance import TaskInstance
        from airflow.utils.session import create_session

        with create_session() as session:
            rows = (
                session.query(TaskInstance).filter_by(dag_id=self.dag_id, run_id=self.run_id).all()
            )
            return {
                ti.task_id: str(ti.state.value if hasattr(ti.state, "value") else ti.state)
                for ti in rows
            }


@dataclass
class E2E:
    stack: LocalStack
    env: dict[str, str]

    def reset_traffic(self) -> None:
        """Back to the seed's starting point: all traffic on v1, no model-v2."""
        from kubernetes.client import AppsV1Api
        from kubernetes.client.exceptions import ApiException

        api = self.stack.api_client()
        self.stack.apply(
            api, [yaml.safe_load((EXAMPLE_MANIFESTS / "vs-00-all-v1.yaml").read_text())]
        )
        try:
            AppsV1Api(api).delete_namespaced_deployment("model-v2", "default")
        except ApiException as err:
            if err.status != 404:
                raise

    def run_dag(self, dag_id: str, conf: dict[str, Any] | None = None) -> DagRun:
        args = [*AIRFLOW, "dags", "test", dag_id]
        if conf:
            args += ["-c", json.dumps(conf)]
        done = subprocess.run(args, env=self.env, capture_output=True, text=True, timeout=600)
        log = done.stdout + done.stderr
        matches = [m for m in FINISHED.finditer(log) if m["dag"] == dag_id]
        assert matches, f"no finished run of {dag_id} in the output:\n{log[-5000:]}"
        last = matches[-1]
        return DagRun(dag_id, last["run"], last["state"], log)

    def run_task(self, dag_id: str, task_id: str, run_id: str) -> str:
        done = subprocess.run(
            [*AIRFLOW, "tasks", "test", dag_id, task_id, run_id],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout + done.stderr


@pytest.fixture(scope="module")
def e2e(airflow_db: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[E2E]:
    if not prometheus_available():
        pytest.fail("the Debian prometheus package is required: apt-get install prometheus")
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "dags" / "canary_rollout.py", dags / "canary_rollout.py")
    shutil.copy(
        Path(__file__).parent / "dags" / "canary_e2e_crash.py", dags / "canary_e2e_crash.py"
    )
    state = tmp_path_factory.mktemp("e2e-stack")
    with LocalStack(StackConfig(state_dir=state, rps=150)) as stack:
        env = {
            **os.environ,
            **stack.connection_env(),
            "CANARY_POLL_INTERVAL_SECONDS": "1",
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        }
        yield E2E(stack, env)
