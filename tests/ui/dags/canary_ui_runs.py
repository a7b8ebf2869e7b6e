"""DAGs shaped like ``canary_rollout()`` (same task ids and XCom values) whose runs feed the UI tests.

Each task returns the documented XCom value for its role, so a run of these DAGs leaves in
the metadata database exactly what a real rollout leaves, without a mesh or Prometheus.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import DAG, TaskGroup, get_current_context, task

from airflow_canary.analysis.checks import ErrorRateCheck, LatencyCheck
from airflow_canary.sensors.health import CanaryHealthSensor

VIRTUAL_SERVICE = "model-virtual-service"
DASHBOARD_TEMPLATE = (
    "https://grafana.example/d/canary?var-ns={namespace}&var-stable={stable_version}"
    "&var-canary={canary_version}&from={start_ms}&to={end_ms}"
)
NAMESPACE = "default"
HEADER_ROUTE = {
    "name": "airflow-canary-header-x-canary-version",
    "header": "x-canary-version",
    "value": "v2",
    "match_type": "exact",
    "subset": "v2",
}


def _traffic(canary_weight: int, *, header: bool) -> dict[str, Any]:
    return {
        "virtual_service": VIRTUAL_SERVICE,
        "namespace": NAMESPACE,
        "split": {"v1": 100 - canary_weight, "v2": canary_weight},
        "header_routes": [HEADER_ROUTE] if header else [],
        "changed": True,
        "at": datetime.now(timezone.utc).isoformat(),
    }


def _verdict(weight: int, healthy: bool) -> dict[str, Any]:
    now = datetime.now(timezone.utc)
    canary_errors = 0.011 if healthy else 0.102
    status = "PASS" if healthy else "FAIL"
    canary_requests = 120 * weight + 40
    reason = f"error-rate: canary {canary_errors:.1%} vs stable 1.0% ({canary_requests:,} vs 10,933 requests)"
    return {
        "verdict": status,
        "final": True,
        "judge": "sequential",
        "reason": reason if not healthy else f"all checks passed at {weight}%",
        "checks": [
            {
                "name": "error-rate",
                "status": status,
                "canary_value": canary_errors,
                "stable_value": 0.010,
                "canary_requests": canary_requests,
                "stable_requests": 10933,
                "statistic": 41.3 if not healthy else 0.4,
                "p_value": 0.0001 if not healthy else 0.62,
                "message": reason,
            },
            {
                "name": "latency-p99",
                "status": "PASS",
                "canary_value": 182.0,
                "stable_value": 176.0,
                "canary_requests": canary_requests,
                "stable_requests": 10933,
                "statistic": 1.1,
                "p_value": 0.27,
                "message": "p99 182 ms vs 176 ms",
            },
        ],
        "polls": 7,
        "started_at": (now - timedelta(seconds=42)).isoformat(),
        "decided_at": now.isoformat(),
        "elapsed_seconds": 42.0,
        "window": {"start": (now - timedelta(seconds=60)).isoformat(), "end": now.isoformat()},
        "rolled_back_at": None,
    }


def rollout_like_dag(dag_id: str, steps: list[int], failing_step: int | None) -> DAG:
    """A DAG with the ``canary`` group layout; the analysis of ``failing_step`` fails."""
    with DAG(
        dag_id,
        schedule=None,
        start_date=datetime(2026, 1, 1),
        catchup=False,
        tags=["canary-ui-test"],
    ) as dag:
        with TaskGroup("canary"):

            @task(task_id="header_route")
            def header_route() -> dict[str, Any]:
                return _traffic(0, header=True)

            def set_weight(weight: int):
                @task(task_id=f"set_weight_{weight}")
                def run() -> dict[str, Any]:
                    return _traffic(weight, header=True)

                return run()

            def analyze(weight: int, on_pass: str):
                @task.branch(task_id=f"analyze_{weight}")
                def run() -> str:
                    healthy = weight != failing_step
                    get_current_context()["ti"].xcom_push(
                        key="verdict", value=_verdict(weight, healthy)
                    )
                    return on_pass if healthy else "canary.rollback"

                return run()

            @task(task_id="promote")
            def promote() -> dict[str, Any]:
                return _traffic(100, header=False)

            @task(task_id="rollback", trigger_rule="none_failed_min_one_success")
            def rollback() -> dict[str, Any]:
                value = _traffic(0, header=False)
                value["rolled_back"] = True
                value["reason"] = (
                    f"canary.analyze_{failing_step} FAIL: error-rate: canary 10.2% vs stable 1.0%"
                )
                return value

            @task(task_id="fail_rollout")
            def fail_rollout() -> None:
                raise RuntimeError("canary v2 was rolled back")

            previous = header_route()
            rollback_task = rollback()
            promote_task = promote()
            for index, weight in enumerate(steps):
                nxt = (
                    f"canary.set_weight_{steps[index + 1]}"
                    if index + 1 < len(steps)
                    else "canary.promote"
                )
                step = set_weight(weight)
                judged = analyze(weight, nxt)
                previous >> step >> judged >> rollback_task
                previous = judged
            previous >> promote_task
            rollback_task >> fail_rollout()
    return dag


healthy = rollout_like_dag("canary_ui_healthy", [1, 10, 50], failing_step=None)
rolled_back = rollout_like_dag("canary_ui_rolled_back", [1, 10, 50], failing_step=10)

with DAG(
    "canary_ui_malformed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False
) as malformed:
    with TaskGroup("canary"):

        @task(task_id="set_weight_5")
        def set_weight_without_xcom() -> None:
            return None

        @task(task_id="analyze_5")
        def analyze_with_bad_verdict() -> None:
            get_current_context()["ti"].xcom_push(key="verdict", value="not a verdict")

        set_weight_without_xcom() >> analyze_with_bad_verdict()

with DAG(
    "canary_ui_unrelated", schedule=None, start_date=datetime(2026, 1, 1), catchup=False
) as unrelated:

    @task(task_id="promote")
    def not_a_rollout() -> dict[str, Any]:
        return {"split": {"a": 100}}

    not_a_rollout()


class RecordedVerdictSensor(CanaryHealthSensor):
    """The real sensor with its Prometheus analysis replaced by a recorded PASS verdict."""

    def execute(self, context: Any) -> dict[str, Any]:
        verdict = _verdict(10, healthy=True)
        verdict.update(namespace=NAMESPACE, stable_version="v1", canary_version="v2")
        return self.execute_complete(context, verdict)


with DAG(
    "canary_ui_links", schedule=None, start_date=datetime(2026, 1, 1), catchup=False
) as links_dag:
    with TaskGroup("canary"):

        @task(task_id="set_weight_10")
        def set_weight_10() -> dict[str, Any]:
            return _traffic(10, header=False)

        sensor = RecordedVerdictSensor(
            task_id="analyze_10",
            namespace=NAMESPACE,
            checks=[ErrorRateCheck(max_rate=0.05), LatencyCheck(max_ms=500)],
            prometheus_conn_id="prometheus_ui_test",
        )
        sensor.dashboard_url_template = DASHBOARD_TEMPLATE
        set_weight_10() >> sensor
