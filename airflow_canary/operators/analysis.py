"""BranchCanaryHealthOperator: judge the canary and follow the healthy or the unhealthy branch."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from airflow.sdk import BaseBranchOperator

from airflow_canary.analysis import AnalysisError
from airflow_canary.operators.links import validate_dashboard_template
from airflow_canary.sensors.health import CanaryHealthAnalysisMixin


def _task_ids(what: str, value: str | Sequence[str]) -> list[str]:
    ids = [value] if isinstance(value, str) else list(value)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise AnalysisError(
            f"{what} must be a task id or a non-empty list of task ids, got {value!r}"
        )
    return ids


class BranchCanaryHealthOperator(CanaryHealthAnalysisMixin, BaseBranchOperator):
    """
    Run the canary health analysis and branch on its verdict instead of failing.

    Takes the analysis parameters of ``CanaryHealthSensor`` (``namespace``, ``checks``,
    ``judge``, ``bake_time``, ``poll_interval``, ``timeout``, ``rollback_on_failure``, ...) plus
    ``follow_task_ids_if_healthy`` (followed on PASS) and ``follow_task_ids_if_unhealthy``
    (followed on FAIL and INCONCLUSIVE); every other direct downstream task is skipped.

    The verdict dict is pushed to XCom under the key ``"verdict"`` (read it from there: in
    Airflow 3 a branch that skips tasks pushes no ``return_value``; Airflow records the followed
    task ids itself under ``skipmixin_key``).
    ``deferrable=True`` (default) waits in the triggerer and branches when the task resumes.
    """

    template_fields: Sequence[str] = ("analysis_params",)
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        follow_task_ids_if_healthy: str | Sequence[str],
        follow_task_ids_if_unhealthy: str | Sequence[str],
        deferrable: bool = True,
        dashboard_url_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        params = self.split_analysis_params(kwargs)
        task_id = str(kwargs.get("task_id", "?"))
        config, templated = self.prepare_analysis(params, task_id)
        super().__init__(**kwargs)
        self.analysis = config
        self.analysis_templated = templated
        self.analysis_params = params
        self.deferrable = deferrable
        self.dashboard_url_template = validate_dashboard_template(dashboard_url_template)
        self.follow_task_ids_if_healthy = _task_ids(
            "follow_task_ids_if_healthy", follow_task_ids_if_healthy
        )
        self.follow_task_ids_if_unhealthy = _task_ids(
            "follow_task_ids_if_unhealthy", follow_task_ids_if_unhealthy
        )

    def execute(self, context: Any) -> Any:
        return self.execute_complete(context, self.start_analysis(context))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str | Iterable[str] | None:
        self.log_verdict(event)
        context["ti"].xcom_push(key="verdict", value=event)
        healthy = event.get("verdict") == "PASS"
        return self.do_branch(
            context,
            self.follow_task_ids_if_healthy if healthy else self.follow_task_ids_if_unhealthy,
        )

    def choose_branch(self, context: Any) -> str | Iterable[str] | None:
        raise NotImplementedError(
            f"{type(self).__name__} branches from its verdict in execute_complete()"
        )
