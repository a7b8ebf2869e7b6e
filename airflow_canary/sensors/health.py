"""CanaryHealthSensor: wait for a PASS verdict on the canary's live metrics (deferrable)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperatorLink, BaseSensorOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from airflow_canary.analysis import AnalysisError
from airflow_canary.operators.links import (
    DashboardLink,
    PrometheusLink,
    validate_dashboard_template,
)
from airflow_canary.templating import is_template
from airflow_canary.triggers.health import HealthAnalysisConfig, HealthAnalysisRun

#: Parameter names the analysis takes (see ``HealthAnalysisConfig.from_params``).
ANALYSIS_PARAMS: tuple[str, ...] = tuple(
    inspect.signature(HealthAnalysisConfig.from_params).parameters
)

#: Analysis parameters that may be Jinja templates; they are checked again after rendering.
TEMPLATED_ANALYSIS_PARAMS: tuple[str, ...] = (
    "namespace",
    "stable_version",
    "canary_version",
    "bake_time",
    "poll_interval",
    "timeout",
    "virtual_service",
    "stable_subset",
    "canary_subset",
    "route_name",
    "canary_weight",
)
#: Stand-ins used to check everything else at parse time while a parameter is still a template.
_PLACEHOLDERS: dict[str, Any] = {
    "namespace": "default",
    "stable_version": "stable",
    "canary_version": "canary",
    "virtual_service": "virtual-service",
    "stable_subset": "stable",
    "canary_subset": "canary",
    "route_name": None,
    "timeout": None,
    "canary_weight": 10,
}

# The task-level timeout leaves the trigger room to fire its own INCONCLUSIVE at its timeout.
_TIMEOUT_MARGIN_SECONDS = 120.0


def _literal_seconds(value: object, default: float) -> float:
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    return default


class CanaryHealthAnalysisMixin:
    """What the sensor and the branch operator share: parameters, running, reading the verdict."""

    analysis: HealthAnalysisConfig
    analysis_params: dict[str, Any]
    analysis_templated: bool = False
    deferrable: bool
    log: Any
    operator_extra_links: Collection[BaseOperatorLink] = (PrometheusLink(), DashboardLink())

    @staticmethod
    def split_analysis_params(kwargs: dict[str, Any]) -> dict[str, Any]:
        """Remove the analysis parameters from an operator's ``kwargs`` and return them."""
        return {name: kwargs.pop(name) for name in ANALYSIS_PARAMS if name in kwargs}

    @staticmethod
    def build_config(params: Mapping[str, Any], task_id: str) -> HealthAnalysisConfig:
        try:
            return HealthAnalysisConfig.from_params(**params)
        except AnalysisError as err:
            raise AnalysisError(f"task {task_id!r}: {err}") from err

    @classmethod
    def prepare_analysis(
        cls, params: dict[str, Any], task_id: str
    ) -> tuple[HealthAnalysisConfig, bool]:
        """Check the parameters now (DAG parse time); templated ones are checked after rendering.

        Literal values are checked as given; a templated one is replaced by a stand-in so that
        everything else is still checked at parse time, and the whole analysis is built again
        from the rendered values in ``resolve_analysis``.
        """
        templated = [name for name in TEMPLATED_ANALYSIS_PARAMS if is_template(params.get(name))]
        probe = dict(params)
        for name in templated:
            if name == "bake_time":
                probe[name] = max(_literal_seconds(params.get("poll_interval"), 15.0), 1.0)
            elif name == "poll_interval":
                probe[name] = 1.0
            else:
                probe[name] = _PLACEHOLDERS[name]
        return cls.build_config(probe, task_id), bool(templated)

    def resolve_analysis(self) -> HealthAnalysisConfig:
        """The analysis from the rendered parameters (call in ``execute``)."""
        if self.analysis_templated:
            self.analysis = self.build_config(
                self.analysis_params, str(getattr(self, "task_id", "?"))
            )
        return self.analysis

    def start_analysis(self, context: Any) -> dict[str, Any]:
        """Defer to the trigger, or run the same loop in this worker and return the verdict."""
        self.resolve_analysis()
        started_at = time.time()
        if self.deferrable:
            self.defer(  # type: ignore[attr-defined]
                trigger=self.analysis.trigger(started_at),
                method_name="execute_complete",
                timeout=timedelta(
                    seconds=self.analysis.effective_timeout_seconds + _TIMEOUT_MARGIN_SECONDS
                ),
            )
        return asyncio.run(HealthAnalysisRun(self.analysis, started_at, logger=self.log).run())

    def log_verdict(self, event: Mapping[str, Any]) -> None:
        self.log.info(
            "Canary %s vs %s in %s: %s after %s polls - %s",
            event.get("canary_version"),
            event.get("stable_version"),
            event.get("namespace"),
            event.get("verdict"),
            event.get("polls"),
            event.get("reason"),
        )
        for check in event.get("checks") or []:
            self.log.info(
                "  %s %s: canary=%s stable=%s requests canary=%s stable=%s p=%s - %s",
                check.get("name"),
                check.get("status"),
                check.get("canary_value"),
                check.get("stable_value"),
                check.get("canary_requests"),
                check.get("stable_requests"),
                check.get("p_value"),
                check.get("message"),
            )
        if event.get("rolled_back_at"):
            self.log.warning(
                "Traffic was rolled back to stable at %s (%.3fs after the decision)",
                event["rolled_back_at"],
                event.get("rollback_seconds") or 0.0,
            )
        if event.get("rollback_error"):
            self.log.error("Rollback failed: %s", event["rollback_error"])


class CanaryHealthSensor(CanaryHealthAnalysisMixin, BaseSensorOperator):
    """
    Judge the canary against stable from live Prometheus metrics; succeed on PASS.

    Analysis parameters (validated when the DAG is parsed): ``namespace``, ``checks`` (check
    objects such as ``ErrorRateCheck``), ``stable_version="v1"``, ``canary_version="v2"``,
    ``judge="sequential"``, ``judge_options``, ``bake_time`` and ``poll_interval`` (timedelta or
    seconds), ``max_inconclusive_polls=3``, ``prometheus_conn_id="prometheus_default"``,
    ``timeout`` (default ``2 × bake_time + 10 × poll_interval``; INCONCLUSIVE when reached).

    ``rollback_on_failure=True`` with ``virtual_service`` (and ``stable_subset``,
    ``canary_subset``, ``route_name``, ``kubernetes_conn_id``) sends all traffic to stable the
    moment the verdict is FAIL, from the trigger, before this task resumes.

    PASS returns the verdict (XCom ``return_value``). FAIL raises ``AirflowFailException`` (no
    retries: the canary is bad); INCONCLUSIVE raises ``AirflowException`` (retries may help).
    ``deferrable=True`` (default) waits in the triggerer; ``False`` runs the same loop here.
    """

    template_fields: Sequence[str] = ("analysis_params",)
    ui_color = "#f0e4ff"

    def __init__(
        self, *, deferrable: bool = True, dashboard_url_template: str | None = None, **kwargs: Any
    ) -> None:
        params = self.split_analysis_params(kwargs)
        task_id = str(kwargs.get("task_id", "?"))
        config, templated = self.prepare_analysis(params, task_id)
        kwargs.setdefault("poke_interval", config.poll_interval_seconds)
        super().__init__(
            timeout=config.effective_timeout_seconds + _TIMEOUT_MARGIN_SECONDS, **kwargs
        )
        self.analysis = config
        self.analysis_templated = templated
        self.analysis_params = params
        self.deferrable = deferrable
        self.dashboard_url_template = validate_dashboard_template(dashboard_url_template)

    def execute(self, context: Any) -> dict[str, Any]:
        return self.execute_complete(context, self.start_analysis(context))

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.log_verdict(event)
        verdict = event.get("verdict")
        if verdict == "PASS":
            return event
        message = f"canary analysis {verdict}: {event.get('reason')}"
        if verdict == "FAIL":
            raise AirflowFailException(message)
        raise AirflowException(message)

    def poke(self, context: Any) -> bool:
        raise AirflowException(
            f"{type(self).__name__} runs its own analysis loop in execute(); poke() is not used"
        )
