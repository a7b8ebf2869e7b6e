"""BranchCanaryHealthOperator in real ``airflow dags test`` runs: deferred, resumed, branching."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.health.traffic import ArmTraffic, TrafficDriver

AIRFLOW = Path(sys.executable).parent / "airflow"

DAG_SOURCE = textwrap.dedent(
    '''
    """Test DAG: one canary health branch between a healthy and an unhealthy path."""

    from __future__ import annotations

    from datetime import datetime, timedelta

    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG

    from airflow_canary.analysis import ErrorRateCheck
    from airflow_canary.operators.analysis import BranchCanaryHealthOperator

    with DAG(dag_id="{dag_id}", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):
        analyze = BranchCanaryHealthOperator(
            task_id="analyze",
            namespace="default",
            checks=[ErrorRateCheck(max_rate=0.05, min_requests=20)],
            bake_time=timedelta(seconds={bake}),
            poll_interval=1,
            timeout={timeout},
            follow_task_ids_if_healthy="next_step",
            follow_task_ids_if_unhealthy=["roll_back"],
            deferrable={deferrable},
        )
        analyze >> [EmptyOperator(task_id="next_step"), EmptyOperator(task_id="roll_back")]
    '''
)


def run_dag(dag_id: str, home: Path, prometheus_url: str, **params: object) -> dict[str, object]:
    """Write the DAG into the dags folder, run ``airflow dags test``, return states and verdict."""
    dags_folder = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    (dags_folder / f"{dag_id}.py").write_text(DAG_SOURCE.format(dag_id=dag_id, **params))
    env = dict(
        os.environ,
        AIRFLOW_CONN_PROMETHEUS_DEFAULT=json.dumps(
            {"conn_type": "prometheus", "host": prometheus_url}
        ),
    )
    result = subprocess.run(
        [str(AIRFLOW), "dags", "test", dag_id],
        cwd=home,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).first()
        assert run is not None, (
            f"no run of {dag_id}: {result.stdout[-2000:]}{result.stderr[-2000:]}"
        )
        states = {
            ti.task_id: str(ti.state)
            for ti in session.scalars(
                select(TaskInstance).where(
                    TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id
                )
            )
        }
        xcoms = {
            row.key: row.value
            for row in session.scalars(
                select(XComModel).where(
                    XComModel.dag_id == dag_id,
                    XComModel.run_id == run.run_id,
                    XComModel.task_id == "analyze",
                )
            )
        }
    return {"states": states, "xcoms": xcoms, "log": result.stdout + result.stderr}


def _value(raw: object) -> object:
    return json.loads(raw) if isinstance(raw, (str, bytes)) else raw


@pytest.mark.parametrize("deferrable", [True, False], ids=["deferred", "in-worker"])
def test_healthy_canary_follows_the_healthy_branch(
    airflow_db: Path, istio_prometheus, deferrable: bool
) -> None:
    exporter, server = istio_prometheus
    dag_id = f"canary_branch_healthy_{'deferred' if deferrable else 'worker'}"
    with TrafficDriver(exporter, {"v1": ArmTraffic(ok=10), "v2": ArmTraffic(ok=10)}):
        run = run_dag(dag_id, airflow_db, server.url, bake=3, timeout=40, deferrable=deferrable)

    states = run["states"]
    assert states == {"analyze": "success", "next_step": "success", "roll_back": "skipped"}, run[
        "log"
    ][-3000:]
    verdict = _value(run["xcoms"]["verdict"])
    assert isinstance(verdict, dict) and verdict["verdict"] == "PASS"
    # Airflow records the followed branch itself; a branch that skips pushes no return_value.
    assert _value(run["xcoms"]["skipmixin_key"]) == {"followed": ["next_step"]}


def test_bad_canary_follows_the_unhealthy_branch(airflow_db: Path, istio_prometheus) -> None:
    exporter, server = istio_prometheus
    traffic = {"v1": ArmTraffic(ok=20), "v2": ArmTraffic(ok=10, errors=10)}
    with TrafficDriver(exporter, traffic):
        run = run_dag(
            "canary_branch_unhealthy", airflow_db, server.url, bake=60, timeout=90, deferrable=True
        )

    states = run["states"]
    assert states == {"analyze": "success", "next_step": "skipped", "roll_back": "success"}, run[
        "log"
    ][-3000:]
    verdict = _value(run["xcoms"]["verdict"])
    assert isinstance(verdict, dict) and verdict["verdict"] == "FAIL"
    assert verdict["checks"][0]["status"] == "FAIL"
    assert _value(run["xcoms"]["skipmixin_key"]) == {"followed": ["roll_back"]}
