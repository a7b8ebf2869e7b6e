"""BranchCanaryHealthOperator: judge the canary and follow the healthy or the unhealthy branch."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator, BranchMixIn

from airflow_canary.analysis import AnalysisError, Check
from airflow_canary.durations import Duration
from airflow_canary.sensors.health import (
    ANALYSIS_PARAMS,
    ANALYSIS_PARAMS_DOC,
    ANALYSIS_TEMPLATE_FIELDS,
    CanaryHealthAnalysisMixin,
)


def _task_ids(what: str, value: str | Sequence[str]) -> list[str]:
    ids = [value] if isinstance(value, str) else list(value)
    if not ids or not all(isinstance(i, str) and i for i in ids):
        raise AnalysisError(
            f"{what} must be a task id or a non-empty list of task ids, got {value!r}"
        )
    return ids


class BranchCanaryHealthOperator(CanaryHealthAnalysisMixin, BaseOperator, BranchMixIn):
    """Run the canary health analysis and branch on its verdict instead of failing.

    Follows ``follow_task_ids_if_healthy`` on PASS and ``follow_task_ids_if_unhealthy`` on
    FAIL and INCONCLUSIVE, through Airflow's branching mix-in: every other direct downstream
    task is skipped. Deferred (the default when ``[operators] default_deferrable`` is on), it
    waits in the triggerer and branches when the task resumes.

    The verdict dict is pushed to XCom under the key ``"verdict"`` (read it from there: in
    Airflow 3 a branch that skips tasks pushes no ``return_value``; Airflow records the followed
    task ids itself under ``skipmixin_key``).

    :param follow_task_ids_if_healthy: task id(s) (or task group ids) followed on PASS: a
        non-empty string or a non-empty list of them; each must be a direct downstream task
    :param follow_task_ids_if_unhealthy: task id(s) (or task group ids) followed on FAIL and
        INCONCLUSIVE, in the same form
    :raises AnalysisError: (parse time) for an empty or non-string task id
    """

    __doc__ = (__doc__ or "") + ANALYSIS_PARAMS_DOC

    inherits_from_skipmixin = True
    template_fields: Sequence[str] = ANALYSIS_TEMPLATE_FIELDS
    template_fields_renderers = {"checks": "json"}
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
        follow_task_ids_if_healthy: str | Sequence[str],
        follow_task_ids_if_unhealthy: str | Sequence[str],
        namespace: str,
        checks: Sequence[Check | Mapping[str, Any]],
        stable_version: str = "v1",
        canary_version: str = "v2",
        judge: str = "sequential",
        judge_options: Mapping[str, Any] | None = None,
        bake_time: Duration = 300,
        poll_interval: Duration = 15,
        max_inconclusive_polls: int = 3,
        prometheus_conn_id: str = "prometheus_default",
        timeout: Duration | None = None,
        rollback_on_failure: bool = False,
        virtual_service: str | None = None,
        http_route: str | None = None,
        stable_subset: str = "v1",
        canary_subset: str = "v2",
        route_name: str | Sequence[str] | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        canary_weight: int | str | None = None,
        on_weight_change: str = "end_step",
        router: str = "istio",
        backend_namespace: str | None = None,
        deferrable: bool | None = None,
        dashboard_url_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        arguments = locals()  # first statement: exactly the parameters above
        params = {name: arguments[name] for name in ANALYSIS_PARAMS}
        config, templated = self.check_analysis(params, str(kwargs.get("task_id", "?")))
        super().__init__(**kwargs)
        self.keep_analysis(
            params,
            config,
            templated,
            deferrable=deferrable,
            dashboard_url_template=dashboard_url_template,
        )
        self.follow_task_ids_if_healthy = _task_ids(
            "follow_task_ids_if_healthy", follow_task_ids_if_healthy
        )
        self.follow_task_ids_if_unhealthy = _task_ids(
            "follow_task_ids_if_unhealthy", follow_task_ids_if_unhealthy
        )

    def execute(self, context: Any) -> Any:
        self.resolve_analysis()
        started_at = time.time()
        self.record_start(context, started_at)
        if self.deferrable:
            self.defer_analysis(context, started_at)
        return self.execute_complete(context, self.run_in_worker(context, started_at))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> str | Iterable[str] | None:
        self.publish_verdict(context, event)
        healthy = event.get("verdict") == "PASS"
        return self.do_branch(
            context,
            self.follow_task_ids_if_healthy if healthy else self.follow_task_ids_if_unhealthy,
        )
