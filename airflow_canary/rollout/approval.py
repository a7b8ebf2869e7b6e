"""The approval gate of a rollout: a person continues it to the next step or rolls it back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import HITLBranchOperator
from airflow.sdk import Param

from airflow_canary.rollout.plan import RolloutPlanError
from airflow_canary.rollout.report import step_weights, steps_from_xcoms, steps_markdown

CONTINUE = "Continue"
ROLL_BACK = "Roll back"
#: XCom key of the approver's answer: ``{"choice", "approver", "comment", "responded_at", "timed_out"}``.
APPROVAL_XCOM_KEY = "approval"
PROMETHEUS_LINK_KEY = "_link_PrometheusLink"
DASHBOARD_LINK_KEY = "_link_DashboardLink"


def approvers_as_users(approvers: Sequence[str] | None) -> list[dict[str, str]] | None:
    """Airflow HITL users (``{"id", "name"}``) from user ids; None lets anyone with access answer."""
    if approvers is None:
        return None
    if isinstance(approvers, str) or not all(isinstance(a, str) and a for a in approvers):
        raise RolloutPlanError(
            f"approvers must be a list of Airflow user ids, e.g. ['alice', 'bob'], got {approvers!r}"
        )
    if not approvers:
        raise RolloutPlanError("approvers must name at least one user, or be None for anyone")
    return [{"id": a, "name": a} for a in approvers]


class RolloutApprovalOperator(HITLBranchOperator):
    """Ask a person whether the rollout goes on to a step, showing every judged step so far.

    The form (Airflow's "Required actions") offers "Continue" and "Roll back", and a comment
    field. Its body lists each completed analysis's verdict with every check's numbers and the
    Prometheus and Dashboard links. "Continue" follows ``continue_task_id``, "Roll back"
    follows ``rollback_task_id``; the answer, the approver and the comment go to XCom
    ``"approval"`` for the rollback's reason.

    :param weight: the canary weight of the step waiting for approval (int, or a template)
    :param analysis_task_ids: the analysis tasks whose verdicts the form shows, in order
    :param continue_task_id: task followed on "Continue" (the step's ``set_weight``)
    :param rollback_task_id: task followed on "Roll back" (towards the rollback)
    :param plan_task_id: the plan task, whose XCom gives each judged step's weight
    :param approvers: Airflow user ids allowed to answer; None lets anyone who may edit the DAG
    :param response_timeout: how long to wait for an answer, a positive ``timedelta``; None
        waits without limit
    :param timeout_choice: what happens at the timeout, "Continue" or "Roll back" (default)
    :raises RolloutPlanError: (parse time) on an unknown ``timeout_choice``, a
        ``response_timeout`` that is not a positive timedelta, or malformed ``approvers``
    """

    ui_color = "#fff4d6"

    def __init__(
        self,
        *,
        weight: int | str,
        analysis_task_ids: Sequence[str],
        continue_task_id: str,
        rollback_task_id: str,
        plan_task_id: str | None = None,
        approvers: Sequence[str] | None = None,
        response_timeout: timedelta | None = None,
        timeout_choice: str = ROLL_BACK,
        **kwargs: Any,
    ) -> None:
        if timeout_choice not in (CONTINUE, ROLL_BACK):
            raise RolloutPlanError(
                f"approval timeout_choice must be {CONTINUE!r} or {ROLL_BACK!r}, got {timeout_choice!r}"
            )
        if response_timeout is not None and (
            not isinstance(response_timeout, timedelta) or response_timeout <= timedelta(0)
        ):
            raise RolloutPlanError(
                f"approval_timeout must be a positive timedelta or None, got {response_timeout!r}"
            )
        kwargs.pop("params", None)
        super().__init__(
            subject=f"Continue the canary rollout to {weight}%?",
            body="",
            options=[CONTINUE, ROLL_BACK],
            defaults=[timeout_choice] if response_timeout is not None else None,
            multiple=False,
            # The form shows the task's own params only (HITLOperator filters by source); the
            # DAG's, which Airflow hands in as well, are left out.
            params={
                "comment": Param(
                    "",
                    type="string",
                    title="Comment",
                    description="why (kept in the rollout's record)",
                    source="task",
                ),
            },
            assigned_users=approvers_as_users(approvers),  # type: ignore[arg-type]
            response_timeout=response_timeout,
            options_mapping={CONTINUE: continue_task_id, ROLL_BACK: rollback_task_id},
            **kwargs,
        )
        self.weight = weight
        self.analysis_task_ids = list(analysis_task_ids)
        self.plan_task_id = plan_task_id

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        plan = ti.xcom_pull(task_ids=self.plan_task_id) if self.plan_task_id else None
        planned = plan.get("steps") if isinstance(plan, Mapping) else None
        steps = steps_from_xcoms(
            [
                (
                    task_id,
                    ti.xcom_pull(task_ids=task_id, key="verdict"),
                    {
                        "Prometheus": ti.xcom_pull(task_ids=task_id, key=PROMETHEUS_LINK_KEY),
                        "Dashboard": ti.xcom_pull(task_ids=task_id, key=DASHBOARD_LINK_KEY),
                    },
                )
                for task_id in self.analysis_task_ids
            ],
            step_weights(self.analysis_task_ids, planned),
        )
        self.body = (
            steps_markdown(steps)
            if steps
            else "No step has been judged yet: only the header route sends testers to the canary.\n"
        )
        return super().execute(context)

    def execute_complete(self, context: Any, event: dict[str, Any]) -> Any:
        chosen = list(event.get("chosen_options") or [])
        user = event.get("responded_by_user") or {}
        params_input = event.get("params_input") or {}
        responded_at: Any = event.get("responded_at")
        answer = {
            "choice": chosen[0] if chosen else None,
            "approver": (user.get("name") or user.get("id")) if isinstance(user, Mapping) else None,
            "comment": str(params_input.get("comment") or ""),
            "responded_at": responded_at.isoformat()
            if hasattr(responded_at, "isoformat")
            else responded_at,
            "timed_out": bool(event.get("timedout")),
            "weight": self.weight,
        }
        context["ti"].xcom_push(key=APPROVAL_XCOM_KEY, value=answer)
        self.log.info("Approval gate answered: %s", answer)
        return super().execute_complete(context, event)


def approval_reason(answer: Mapping[str, Any] | None) -> str | None:
    """The rollback reason of a "Roll back" answer, naming the approver and their comment."""
    if not isinstance(answer, Mapping) or answer.get("choice") != ROLL_BACK:
        return None
    at = f" before the {answer['weight']}% step" if answer.get("weight") is not None else ""
    if answer.get("timed_out"):
        return f"approval{at} timed out with no answer; the configured choice is {ROLL_BACK!r}"
    who = answer.get("approver") or "an approver"
    comment = answer.get("comment")
    return f"{who} chose {ROLL_BACK!r} at the approval gate{at}" + (
        f": {comment}" if comment else " (no comment)"
    )
