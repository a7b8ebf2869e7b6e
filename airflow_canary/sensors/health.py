"""CanaryHealthSensor: wait for a PASS verdict on the canary's live metrics (deferrable)."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import Any

from airflow.sdk import BaseOperatorLink, BaseSensorOperator, PokeReturnValue
from airflow.sdk.bases.sensor import poke_mode_only
from airflow.sdk.exceptions import AirflowException, AirflowFailException, AirflowSensorTimeout

from airflow_canary.analysis import AnalysisError, Check
from airflow_canary.deferral import default_deferrable
from airflow_canary.durations import Duration, literal_seconds
from airflow_canary.names import namespace_name, object_name
from airflow_canary.operators.links import (
    DashboardLink,
    PrometheusLink,
    queries_from_analysis,
    validate_dashboard_template,
)
from airflow_canary.parameters import optional_flag
from airflow_canary.routing.router import route_parameter
from airflow_canary.templating import is_template
from airflow_canary.triggers.health import (
    PROGRESS_XCOM_KEY,
    HealthAnalysisConfig,
    HealthAnalysisRun,
)
from airflow_canary.triggers.task_xcom import waiting_task

#: Parameter names the analysis takes (see ``HealthAnalysisConfig.from_params``).
ANALYSIS_PARAMS: tuple[str, ...] = tuple(
    inspect.signature(HealthAnalysisConfig.from_params).parameters
)

#: Analysis parameters that may be Jinja templates (checked again after rendering), each with
#: the stand-in used to check everything else at parse time while it is still a template.
#: ``bake_time``'s stand-in is one ``poll_interval`` (see ``check_analysis``).
_TEMPLATE_STAND_INS: dict[str, Any] = {
    "namespace": "default",
    "stable_version": "stable",
    "canary_version": "canary",
    "bake_time": None,
    "poll_interval": 1.0,
    "virtual_service": "virtual-service",
    "http_route": "http-route",
    "stable_subset": "stable",
    "canary_subset": "canary",
    "route_name": None,
    "canary_weight": 10,
    "backend_namespace": "backends",
}
ANALYSIS_TEMPLATE_FIELDS: tuple[str, ...] = tuple(_TEMPLATE_STAND_INS)

#: XCom key of the record an analysis task writes when it starts (before it defers): what it
#: judges, since when, and until when at the latest. Links and the rollouts page read it while
#: the analysis runs.
ANALYSIS_XCOM_KEY = "analysis"
#: XCom key of the final verdict, pushed before the task returns, branches or raises.
VERDICT_XCOM_KEY = "verdict"

# The task-level timeout leaves the trigger room to fire its own INCONCLUSIVE at its timeout.
_TIMEOUT_MARGIN_SECONDS = 120.0

ANALYSIS_PARAMS_DOC = """
    Analysis parameters (keyword-only; checked when the DAG is parsed, templated ones again
    after rendering; a bad value raises :class:`~airflow_canary.analysis.AnalysisError` naming it):

    :param namespace: Kubernetes namespace of both versions' workloads, matched against Istio's
        ``destination_workload_namespace`` label (templated)
    :param checks: the health checks, a non-empty sequence of check objects
        (``ErrorRateCheck``, ``LatencyCheck``, ``ModelAccuracyCheck``, ...) or their
        ``to_dict()`` form
    :param stable_version: Istio ``destination_version`` label of the stable model (templated)
    :param canary_version: ``destination_version`` label of the canary model (templated)
    :param judge: ``"sequential"`` (always-valid e-values, default), ``"mann_whitney"`` or
        ``"threshold"``
    :param judge_options: the judge's own options, e.g. ``{"alpha": 0.05}``
    :param bake_time: the least time (timedelta or seconds) before a PASS; at least one
        ``poll_interval`` (templated)
    :param poll_interval: time between Prometheus polls (timedelta or seconds) (templated)
    :param max_inconclusive_polls: polls in a row without enough data before the verdict
        is INCONCLUSIVE
    :param prometheus_conn_id: Airflow connection of type ``prometheus``
    :param timeout: bound on the whole analysis (timedelta or seconds); default
        ``2 × bake_time + 10 × poll_interval``; the verdict is INCONCLUSIVE when reached
    :param rollback_on_failure: on FAIL, send all traffic to stable from the loop itself
        (the triggerer when deferred) before the task resumes; needs the route object
    :param virtual_service: the VirtualService to roll back and watch, with ``router="istio"``
        (templated)
    :param http_route: the HTTPRoute to roll back and watch, with ``router="gateway-api"``
        (templated); at most one of the two, the router's
    :param stable_subset: DestinationRule subset (Istio) or Service (Gateway API) of the stable
        model (templated)
    :param canary_subset: DestinationRule subset (Istio) or Service (Gateway API) of the canary
        model (templated)
    :param route_name: the routes to manage (an http route name, ``tcp[0]``, or a list); default
        every route of the two subsets (templated)
    :param kubernetes_conn_id: cncf-kubernetes connection used for the rollback
    :param canary_weight: the step's canary weight (integer 0..100); with it every poll re-reads
        the route object and tests the canary's observed share of requests (templated)
    :param on_weight_change: when another writer changed the weight: ``"end_step"`` (the step
        ends INCONCLUSIVE saying so) or ``"reassert"`` (write it back, log each correction)
    :param router: the traffic backend: ``"istio"`` (a VirtualService, ``virtual_service``)
        or ``"gateway-api"`` (an HTTPRoute, ``http_route``)
    :param backend_namespace: Gateway API only: the Services' namespace when not the HTTPRoute's
        (templated)
    :param deferrable: wait in the triggerer (default ``[operators] default_deferrable``,
        true when unset); ``False`` runs the same loop in the worker
    :param dashboard_url_template: URL of a dashboard with ``{namespace}``,
        ``{stable_version}``, ``{canary_version}``, ``{start_ms}``, ``{end_ms}`` placeholders,
        shown as the "Dashboard" extra link

    The verdict is a dict (``docs/architecture.md``): ``verdict`` (PASS, FAIL or INCONCLUSIVE),
    ``reason``, per-check ``checks`` with both arms' values and request counts, ``window``
    (ISO-8601 UTC start and end), ``queries``. It is pushed to XCom under ``"verdict"`` before
    the task succeeds, branches or fails.
"""


def _attr(name: str) -> str:
    # ``timeout`` is the sensor's own attribute; the analysis keeps its value apart.
    return "analysis_timeout" if name == "timeout" else name


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, tz=timezone.utc).isoformat(timespec="seconds")


class CanaryHealthAnalysisMixin:
    """What the sensor and the branch operator share: parameters, running, publishing results."""

    analysis: HealthAnalysisConfig
    analysis_templated: bool = False
    doc_md: str | None
    deferrable: bool
    dashboard_url_template: str | None
    task_id: str
    log: Any
    operator_extra_links: Collection[BaseOperatorLink] = (PrometheusLink(), DashboardLink())

    @staticmethod
    def build_config(params: Mapping[str, Any], task_id: str) -> HealthAnalysisConfig:
        try:
            return HealthAnalysisConfig.from_params(**params)
        except (AnalysisError, ValueError) as err:
            raise AnalysisError(f"task {task_id!r}: {err}") from err

    @classmethod
    def check_analysis(
        cls, params: Mapping[str, Any], task_id: str
    ) -> tuple[HealthAnalysisConfig, bool]:
        """Check the parameters now (DAG parse time); templated ones are checked after rendering.

        Literal values are checked as given; a templated one is replaced by a stand-in so that
        everything else is still checked at parse time, and the whole analysis is built again
        from the rendered values in :meth:`resolve_analysis`.
        """
        templated = [name for name in ANALYSIS_TEMPLATE_FIELDS if is_template(params.get(name))]
        probe = dict(params)
        for name in templated:
            if name == "bake_time":
                probe[name] = max(literal_seconds(params.get("poll_interval"), 15.0), 1.0)
            else:
                probe[name] = _TEMPLATE_STAND_INS[name]
        return cls.build_config(probe, task_id), bool(templated)

    def keep_analysis(
        self,
        params: Mapping[str, Any],
        config: HealthAnalysisConfig,
        templated: bool,
        *,
        deferrable: bool | None,
        dashboard_url_template: str | None,
    ) -> None:
        """Keep every parameter as an attribute (the rendered-templates view shows each)."""
        for name, value in params.items():
            setattr(self, _attr(name), value)
        self.analysis = config
        self.analysis_templated = templated
        if not getattr(self, "doc_md", None):
            # Airflow shows a task's doc_md in the UI: how each check is judged, from parse time.
            judged = config.build_analysis().judged_as()
            self.doc_md = "How this step's checks are judged:\n\n" + "\n".join(
                f"- {line}" for line in judged
            )
        deferrable = optional_flag("deferrable", deferrable, AnalysisError)
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.dashboard_url_template = validate_dashboard_template(dashboard_url_template)

    def analysis_values(self) -> dict[str, Any]:
        """The analysis parameters as they are now (rendered, once the task runs)."""
        return {name: getattr(self, _attr(name)) for name in ANALYSIS_PARAMS}

    def resolve_analysis(self) -> HealthAnalysisConfig:
        """The analysis from the rendered parameters (call in ``execute``)."""
        if self.analysis_templated:
            self.analysis = self.build_config(self.analysis_values(), self.task_id)
            # Rendered now: a name that still looks like a template is checked as a name too.
            for target in (
                self.analysis.rollback,
                self.analysis.weight_hold.target if self.analysis.weight_hold else None,
            ):
                if target is not None:
                    namespace_name("namespace", target.namespace, AnalysisError)
                    object_name(route_parameter(target.router), target.route, AnalysisError)
        return self.analysis

    def record_start(self, context: Any, started_at: float) -> None:
        """Persist what is judged and when, and the links to it, before the wait begins.

        The record goes to XCom under ``"analysis"``; the extra links are computed from it and
        stored, so the Prometheus and Dashboard links work while the task is deferred.
        """
        ti = context.get("ti") if isinstance(context, Mapping) else None
        if ti is None:
            return
        config = self.analysis
        deadline = started_at + config.effective_timeout_seconds
        record = {
            "started_at": _iso(started_at),
            "deadline": _iso(deadline),
            "window": {"start": _iso(started_at), "end": _iso(deadline)},
            "namespace": config.namespace,
            "stable_version": config.stable_version,
            "canary_version": config.canary_version,
            "judge": config.judge,
            "bake_time_seconds": config.bake_time_seconds,
            "poll_interval_seconds": config.poll_interval_seconds,
            "prometheus_conn_id": config.prometheus_conn_id,
            "checks": [check.to_dict() for check in config.checks],
            "queries": [
                {"check": q.check, "canary": q.canary, "stable": q.stable}
                for q in queries_from_analysis(config, config.effective_timeout_seconds)
            ],
        }
        ti.xcom_push(key=ANALYSIS_XCOM_KEY, value=record)
        self.store_links(ti)

    def store_links(self, ti: Any) -> None:
        """Compute the extra links now and store them where the UI reads them."""
        for link in self.operator_extra_links:
            try:
                ti.xcom_push(key=link.xcom_key, value=link.get_link(self, ti_key=ti))  # type: ignore[arg-type]
            except Exception as err:  # a link must never fail the analysis
                self.log.warning("could not store the %s link: %s", link.name, err)

    def publish_verdict(self, context: Any, event: Mapping[str, Any]) -> None:
        """Log the verdict and push it to XCom ``"verdict"`` (before any raise or branch)."""
        self.log_verdict(event)
        ti = context.get("ti") if isinstance(context, Mapping) else None
        if ti is not None:
            ti.xcom_push(key=VERDICT_XCOM_KEY, value=dict(event))
            self.store_links(ti)

    def defer_analysis(self, context: Any, started_at: float) -> None:
        trigger = self.analysis.trigger(started_at)
        trigger.progress_xcom = waiting_task(context)
        self.defer(  # type: ignore[attr-defined]
            trigger=trigger,
            method_name="execute_complete",
            timeout=timedelta(
                seconds=self.analysis.effective_timeout_seconds + _TIMEOUT_MARGIN_SECONDS
            ),
        )

    def run_in_worker(self, context: Any, started_at: float) -> dict[str, Any]:
        """The trigger's loop, run in this worker (``deferrable=False``)."""
        return asyncio.run(self.analysis_run(context, started_at).run())

    def analysis_run(self, context: Any, started_at: float) -> HealthAnalysisRun:
        """The analysis loop, publishing each poll as XCom ``progress`` when there is a task."""
        ti = context.get("ti") if isinstance(context, Mapping) else None

        async def publish(progress: dict[str, Any]) -> None:
            if ti is not None:
                ti.xcom_push(key=PROGRESS_XCOM_KEY, value=progress)

        return HealthAnalysisRun(
            self.analysis, started_at, logger=self.log, on_poll=publish if ti else None
        )

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


@poke_mode_only
class CanaryHealthSensor(CanaryHealthAnalysisMixin, BaseSensorOperator):
    """Judge the canary against stable from live Prometheus metrics; succeed on PASS.

    A sensor in Airflow's sense: with ``deferrable=True`` it waits in the triggerer
    (:class:`~airflow_canary.triggers.health.CanaryHealthTrigger`); otherwise ``poke`` runs
    one poll of the analysis every ``poll_interval`` in the worker. ``soft_fail`` and
    ``never_fail`` apply as for any sensor (skip instead of failing). ``mode="reschedule"``
    is refused: the sequential analysis keeps its evidence in memory between polls, so a
    rescheduled task would start its evidence again; use ``deferrable=True`` to free the
    worker slot. ``timeout`` is both the analysis's bound and the sensor's.

    PASS returns the verdict (XCom ``return_value``). FAIL raises ``AirflowFailException`` (no
    retries: the canary is bad); INCONCLUSIVE raises ``AirflowSensorTimeout`` when the timeout
    was reached and ``AirflowException`` otherwise (retries may help).
    """

    __doc__ = (__doc__ or "") + ANALYSIS_PARAMS_DOC

    template_fields: Sequence[str] = ANALYSIS_TEMPLATE_FIELDS
    template_fields_renderers = {"checks": "json"}
    ui_color = "#f0e4ff"

    def __init__(
        self,
        *,
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
        task_id = str(kwargs.get("task_id", "?"))
        if kwargs.get("mode", "poke") != "poke":
            raise AnalysisError(
                f"task {task_id!r}: mode must be 'poke', got {kwargs['mode']!r}; the analysis "
                "keeps its evidence between polls, so use deferrable=True to free the worker slot"
            )
        config, templated = self.check_analysis(params, task_id)
        kwargs.setdefault("poke_interval", config.poll_interval_seconds)
        super().__init__(
            timeout=config.effective_timeout_seconds + _TIMEOUT_MARGIN_SECONDS, **kwargs
        )
        self.keep_analysis(
            params,
            config,
            templated,
            deferrable=deferrable,
            dashboard_url_template=dashboard_url_template,
        )
        self._started_at: float | None = None
        self._poller: tuple[HealthAnalysisRun, Any] | None = None

    def execute(self, context: Any) -> Any:
        config = self.resolve_analysis()
        self._started_at = time.time()
        self.record_start(context, self._started_at)
        if self.deferrable:
            self.defer_analysis(context, self._started_at)
        self.poke_interval = config.poll_interval_seconds
        self.timeout = config.effective_timeout_seconds + _TIMEOUT_MARGIN_SECONDS
        self._poller = None
        return super().execute(context)

    def poke(self, context: Any) -> bool | PokeReturnValue:
        """One poll of the analysis; done on PASS, raises on FAIL or INCONCLUSIVE."""
        event = asyncio.run(self._poll_once(context))
        if event is None:
            return False
        return PokeReturnValue(is_done=True, xcom_value=self.execute_complete(context, event))

    async def _poll_once(self, context: Any) -> dict[str, Any] | None:
        if self._poller is None:
            started_at = self._started_at if self._started_at is not None else time.time()
            run = self.analysis_run(context, started_at)
            self._poller = (run, self.analysis.build_analysis())
        run, analysis = self._poller
        try:
            last = await run.poll(analysis)
            if not last["final"]:
                next_poll_at = time.time() + self.analysis.poll_interval_seconds
                timed_out = run.timed_out(last, next_poll_at)
                if timed_out is None:
                    return None
                last = timed_out
            return await run.conclude(last)
        finally:
            # Each poke runs its own event loop: close this loop's clients now.
            await run.aclose()

    def execute_complete(self, context: Any, event: dict[str, Any]) -> dict[str, Any]:
        self.publish_verdict(context, event)
        verdict = event.get("verdict")
        if verdict == "PASS":
            return event
        message = f"canary analysis {verdict}: {event.get('reason')}"
        if verdict == "FAIL":
            raise AirflowFailException(message)
        if event.get("timed_out"):
            raise AirflowSensorTimeout(message)
        raise AirflowException(message)
