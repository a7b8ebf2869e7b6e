"""Rollback latency: from the FAIL verdict to the VirtualService at 100% stable.

Two paths, on the local stack (mesh, model servers, Prometheus, load):

* in-trigger: the health trigger rolls back through the async Istio hook the moment it decides
  FAIL. Measured directly on the trigger's rollback step (``--samples`` times, each from a
  10% + header-route VirtualService) and in real DAG runs (``rollback_seconds`` in the verdict);
* through the rollback task: in-trigger rollback off, the DAG branches to the rollback task;
  measured in real ``airflow dags test`` runs as verdict ``decided_at`` -> rollback task's write.

Prints one table. Usage: ``.venv/bin/python benchmarks/rollback_latency.py [--samples 50] [--runs 3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def _row(name: str, values: list[float]) -> str:
    if not values:
        return f"| {name} | 0 | - | - | - |"
    ms = [v * 1000 for v in values]
    return f"| {name} | {len(ms)} | {statistics.median(ms):.1f} | {_pct(ms, 0.95):.1f} | {max(ms):.1f} |"


def trigger_step_samples(stack: object, samples: int) -> list[float]:
    """Time the trigger's own rollback step, as it runs right after a FAIL verdict."""
    from airflow_canary.analysis import ErrorRateCheck
    from airflow_canary.hooks.istio import IstioHook
    from airflow_canary.routing import HeaderRoute, RouteTarget, set_canary_weight, set_header_route
    from airflow_canary.triggers.health import HealthAnalysisConfig, HealthAnalysisRun

    config = HealthAnalysisConfig.from_params(
        namespace="default",
        checks=[ErrorRateCheck(max_increase=0.02)],
        bake_time=5,
        poll_interval=1,
        rollback_on_failure=True,
        virtual_service="model-virtual-service",
    )
    assert config.rollback is not None
    target = RouteTarget()
    sync = IstioHook()
    run = HealthAnalysisRun(config, time.time())
    durations: list[float] = []

    async def measure() -> None:
        await run.prepare_rollback(config.rollback)
        for _ in range(samples):
            sync.update_virtual_service(
                "model-virtual-service",
                "default",
                lambda vs: set_header_route(
                    set_canary_weight(vs, target, 10), target, HeaderRoute("x-canary-version", "v2")
                ),
            )
            decided_at = time.time()
            result = await run.roll_back(config.rollback, "benchmark", decided_at)
            if "rollback_error" in result:
                raise RuntimeError(result["rollback_error"])
            durations.append(float(result["rollback_seconds"]))
            split = result["rollback"]["split"]
            assert split["v1"] == 100, split

    asyncio.run(measure())
    return durations


def dag_run_samples(stack: object, dag_id: str, runs: int, env: dict[str, str]) -> list[float]:
    from airflow.utils.session import create_session

    durations: list[float] = []
    for _ in range(runs):
        stack.apply(stack.api_client(), [_vs00()])  # type: ignore[attr-defined]
        done = subprocess.run(
            [sys.executable, "-m", "airflow", "dags", "test", dag_id],
            env=env,
            capture_output=True,
            text=True,
        )
        run_id = None
        for line in (done.stdout + done.stderr).splitlines():
            if "DagRun Finished" in line and f"dag_id={dag_id}," in line:
                run_id = line.split("run_id=")[1].split(",")[0]
        if run_id is None:
            raise RuntimeError(
                f"{dag_id} did not finish:\n{done.stdout[-3000:]}{done.stderr[-3000:]}"
            )
        with create_session() as session:
            verdict = _xcom(session, dag_id, run_id, "canary.step_1.analyze", "verdict")
            assert isinstance(verdict, dict) and verdict["verdict"] == "FAIL", verdict
            if verdict.get("rollback_seconds") is not None:
                durations.append(float(verdict["rollback_seconds"]))
            else:
                rollback = _xcom(session, dag_id, run_id, "canary.rollback", "return_value")
                assert isinstance(rollback, dict)
                decided = datetime.fromisoformat(verdict["decided_at"])
                written = datetime.fromisoformat(rollback["at"])
                durations.append((written - decided).total_seconds())
    return durations


def _xcom(session: object, dag_id: str, run_id: str, task_id: str, key: str) -> object:
    from airflow.models.xcom import XComModel

    row = (
        session.query(XComModel)  # type: ignore[attr-defined]
        .filter_by(dag_id=dag_id, run_id=run_id, task_id=task_id, key=key)
        .one()
    )
    return XComModel.deserialize_value(row)


def _vs00() -> dict:
    import yaml

    return yaml.safe_load((REPO / "examples" / "manifests" / "vs-00-all-v1.yaml").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--samples", type=int, default=50, help="direct measurements of the trigger's rollback step"
    )
    parser.add_argument("--runs", type=int, default=3, help="real DAG runs per path")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="canary-rollback-bench-"))
    home = work / "airflow"
    dags = home / "dags"
    dags.mkdir(parents=True)
    shutil.copy(REPO / "benchmarks" / "dags" / "canary_bench_rollback.py", dags)
    os.environ.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        }
    )
    from airflow_canary.local.tools.stack import LocalStack, StackConfig

    with LocalStack(StackConfig(state_dir=work / "stack", rps=150)) as stack:
        env = {**os.environ, **stack.connection_env()}
        os.environ.update(stack.connection_env())
        subprocess.run(
            [sys.executable, "-m", "airflow", "db", "migrate"],
            env=env,
            check=True,
            capture_output=True,
        )
        direct = trigger_step_samples(stack, args.samples)
        in_trigger = dag_run_samples(stack, "canary_bench_trigger_rollback", args.runs, env)
        task = dag_run_samples(stack, "canary_bench_task_rollback", args.runs, env)

    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    print(f"machine: {os.cpu_count()} cores, {cpu}, Python {platform.python_version()}")
    print(
        "| path: FAIL verdict -> VirtualService at 100% stable | samples | median ms | p95 ms | max ms |"
    )
    print("| --- | --- | --- | --- | --- |")
    print(_row("in-trigger rollback step (direct)", direct))
    print(_row("in-trigger rollback in DAG runs", in_trigger))
    print(_row("rollback task in `airflow dags test` runs", task))
    print(json.dumps({"direct": direct, "in_trigger_runs": in_trigger, "task_runs": task}))
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
