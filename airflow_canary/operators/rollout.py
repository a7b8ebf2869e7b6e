"""The bookkeeping tasks of canary_rollout(): the plan, the rollback with its reason, the failing end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_canary.operators.traffic import RollbackCanaryOperator
from airflow_canary.rollout_plan import RolloutPlan, validate_steps

#: verdict statuses that send a rollout to its rollback
_UNHEALTHY = ("FAIL", "INCONCLUSIVE")


class RolloutPlanOperator(BaseOperator):
    """Check the run's weight steps before any traffic moves and publish the plan to XCom.

    With ``steps_param`` the weights come from that DAG param (the trigger form), and must be
    as many as the rollout has steps; otherwise ``steps`` (validated at parse time) are used.
    """

    template_fields = ("virtual_service", "namespace")
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        steps: Sequence[int],
        steps_param: str | None,
        virtual_service: str,
        namespace: str,
        stable_subset: str,
        canary_subset: str,
        stable_version: str,
        canary_version: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.plan = RolloutPlan(
            steps=validate_steps(steps),
            stable_subset=stable_subset,
            canary_subset=canary_subset,
            stable_version=stable_version,
            canary_version=canary_version,
        )
        self.steps_param = steps_param
        self.virtual_service = virtual_service
        self.namespace = namespace

    def execute(self, context: Any) -> dict[str, Any]:
        steps = self.plan.steps
        if self.steps_param:
            params = context.get("params") or {}
            if self.steps_param not in params:
                raise AirflowFailException(
                    f"DAG param {self.steps_param!r} with the rollout's weight steps is missing; "
                    f"the DAG defines params {sorted(params)}"
                )
            try:
                steps = validate_steps(
                    params[self.steps_param], expected_count=len(self.plan.steps)
                )
            except ValueError as err:
                raise AirflowFailException(f"param {self.steps_param!r}: {err}") from None
        self.log.info(
            "Rollout of %s/%s: %s -> %s in steps %s",
            self.namespace,
            self.virtual_service,
            self.plan.stable_subset,
            self.plan.canary_subset,
            " -> ".join(f"{w}%" for w in steps),
        )
        return {
            "virtual_service": self.virtual_service,
            "namespace": self.namespace,
            "steps": list(steps),
            "stable_subset": self.plan.stable_subset,
            "canary_subset": self.plan.canary_subset,
            "stable_version": self.plan.stable_version,
            "canary_version": self.plan.canary_version,
        }


def rollback_reason(verdicts: Sequence[tuple[str, Any]], failed_task_ids: Sequence[str]) -> str:
    """Say why a rollout rolled back: the first unhealthy verdict, else the tasks that failed."""
    for task_id, verdict in verdicts:
        if isinstance(verdict, dict) and verdict.get("verdict") in _UNHEALTHY:
            reason = verdict.get("reason") or "no reason recorded"
            return f"{task_id}: health analysis {verdict['verdict']}: {reason}"
    if failed_task_ids:
        return "task(s) failed: " + ", ".join(sorted(failed_task_ids))
    return "rollback requested, but no unhealthy verdict or failed task was found"


class RolloutRollbackOperator(RollbackCanaryOperator):
    """Restore 100% stable and record why: an unhealthy verdict or the tasks that failed."""

    def __init__(self, *, analysis_task_ids: Sequence[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.analysis_task_ids = list(analysis_task_ids)

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        verdicts = []
        for task_id in self.analysis_task_ids:
            verdicts.append((task_id, ti.xcom_pull(task_ids=task_id, key="verdict")))
        failed: list[str] = []
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
            for task_id, state in (states.get(ti.run_id) or {}).items():
                if state in ("failed", "upstream_failed") and task_id != self.task_id:
                    if state == "failed":
                        failed.append(task_id)
        except Exception as err:  # the reason is informative only; rollback must go on
            self.log.warning("Could not read task states for the rollback reason: %s", err)
        self.reason = rollback_reason(verdicts, failed)
        return super().execute(context)


class FailRolloutOperator(BaseOperator):
    """End a rolled-back run as failed, with the rollback's reason, so alerts and callbacks fire."""

    ui_color = "#f6d5d5"

    def __init__(self, *, rollback_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rollback_task_id = rollback_task_id

    def execute(self, context: Any) -> None:
        result = context["ti"].xcom_pull(task_ids=self.rollback_task_id) or {}
        reason = result.get("reason") if isinstance(result, dict) else None
        raise AirflowFailException(
            f"Canary rolled back to stable: {reason or 'reason not recorded'}"
        )
