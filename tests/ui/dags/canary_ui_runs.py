"""DAGs beside the real example rollout for the UI tests: malformed XComs under real task ids, and no rollout.

``canary_ui_malformed`` has the task ids of ``canary_rollout()`` but pushes what a broken or
foreign task might: a plan without usable steps, a weight step without XCom and a verdict
that is not a verdict. ``canary_ui_unrelated`` merely has a ``promote`` task.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk import DAG, TaskGroup, get_current_context, task

with DAG(
    "canary_ui_malformed", schedule=None, start_date=datetime(2026, 1, 1), catchup=False
) as malformed:
    with TaskGroup("canary"):

        @task(task_id="plan")
        def plan_without_steps() -> dict[str, Any]:
            return {"steps": "lots", "stable_subset": "v1", "canary_subset": "v2"}

        with TaskGroup("step_1"):

            @task(task_id="set_weight")
            def set_weight_without_xcom() -> None:
                return None

            @task(task_id="analyze")
            def analyze_with_bad_verdict() -> None:
                get_current_context()["ti"].xcom_push(key="verdict", value="not a verdict")

            weight = set_weight_without_xcom()
            weight >> analyze_with_bad_verdict()
        plan_without_steps() >> weight

with DAG(
    "canary_ui_unrelated", schedule=None, start_date=datetime(2026, 1, 1), catchup=False
) as unrelated:

    @task(task_id="promote")
    def not_a_rollout() -> dict[str, Any]:
        return {"split": {"a": 100}}

    not_a_rollout()
