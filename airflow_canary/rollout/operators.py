"""The bookkeeping tasks of canary_rollout(): plan, promote and rollback with their asset events, notify, fail."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_canary.assets.canary import (
    PROMOTIONS_ALIAS,
    ROLLBACKS_ALIAS,
    promotion_asset,
    promotion_extra,
    rollback_asset,
    training_runs,
)
from airflow_canary.durations import Duration
from airflow_canary.operators.traffic import PromoteCanaryOperator, RollbackCanaryOperator
from airflow_canary.rollout.approval import (
    APPROVAL_XCOM_KEY,
    DASHBOARD_LINK_KEY,
    PROMETHEUS_LINK_KEY,
    approval_reason,
)
from airflow_canary.rollout.plan import RolloutPlan, validate_steps
from airflow_canary.rollout.report import (
    RolloutOutcome,
    RolloutReport,
    step_weights,
    steps_from_xcoms,
)
from airflow_canary.routing import TrafficSplit
from airflow_canary.routing.gateway_api import HTTPRouteSplit

#: verdict statuses that send a rollout to its rollback
_UNHEALTHY = ("FAIL", "INCONCLUSIVE")


class RolloutPlanOperator(BaseOperator):
    """Check the run's plan before any traffic moves and publish it to XCom.

    With ``steps_param`` the weights come from that DAG param (the trigger form), and must be
    as many as the rollout has steps; otherwise ``steps`` (validated at parse time) are used.
    It also reads, without writing, the route object and what it sends to. Istio: the
    VirtualService and the DestinationRule Istio applies to its host (a missing VirtualService,
    no route to the subsets, a route to them that the rollout would not manage (named), or a
    missing subset fails here, first). Gateway API: the HTTPRoute, the ReferenceGrants a
    cross-namespace backend needs, and both Services.

    :param steps: the canary weights in percent, strictly increasing integers in 1..100, e.g.
        ``[1, 10, 50, 100]`` (checked at parse time)
    :param steps_param: name of a DAG param holding the run's weights (a list of as many
        weights as ``steps``, checked when the task runs: a bad list fails the task before any
        traffic moves), or None to use ``steps``
    :param virtual_service: the VirtualService, with ``router="istio"`` (templated)
    :param http_route: the HTTPRoute, with ``router="gateway-api"`` (templated); exactly one of
        the two, the router's own
    :param namespace: its namespace (templated)
    :param stable_subset: DestinationRule subset of the stable model (Gateway API: its Service)
    :param canary_subset: DestinationRule subset of the canary model (Gateway API: its Service)
    :param stable_version: Istio ``destination_version`` label of the stable model, as the
        analysis queries it
    :param canary_version: ``destination_version`` label of the canary model
    :param route_name: the routes to manage (a name, ``tcp[0]``, or a list); None = every route
        to the two subsets (templated)
    :param kubernetes_conn_id: id of an Airflow connection of type ``kubernetes``
    :param router: the traffic backend, ``"istio"`` or ``"gateway-api"``; anything else raises
        ``RoutingError`` at parse time
    :param checks: the analysis checks; with any, the plan reads each count check's traffic
        on the service from Prometheus (last 10 minutes) and says per judged step how likely
        its bake is to catch a canary at twice each limit, warning about thin steps
    :param judge: the analysis judge's name (only ``"sequential"`` has a power statement)
    :param judge_options: the judge's options as the analysis tasks get them
    :param bake_time: each step's bake time (timedelta or seconds)
    :param poll_interval: the analysis poll interval (timedelta or seconds)
    :param prometheus_conn_id: Prometheus connection id
    :param backend_namespace: Gateway API only: the Services' namespace when not the HTTPRoute's
        (templated)
    :raises RolloutPlanError: (parse time) for bad steps or subsets
    :raises AirflowFailException: (run time) when the route object, the DestinationRule's
        subsets or the Services a step needs are missing, or ``steps_param`` is malformed
    :raises RoutingError: (parse time) for a route object not named by the router's parameter

    Its XCom names the route object under the router's parameter (``virtual_service`` or
    ``http_route``), with ``router``.
    """

    template_fields = (
        "virtual_service",
        "http_route",
        "namespace",
        "route_name",
        "bake_time",
        "poll_interval",
        "backend_namespace",
    )
    ui_color = "#e8f1fb"

    def __init__(
        self,
        *,
        steps: Sequence[int],
        steps_param: str | None,
        namespace: str,
        stable_subset: str,
        canary_subset: str,
        stable_version: str,
        canary_version: str,
        route_name: str | Sequence[str] | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        router: str = "istio",
        checks: Sequence[Any] = (),
        judge: str = "sequential",
        judge_options: dict[str, Any] | None = None,
        bake_time: Duration = 300,
        poll_interval: Duration = 15,
        prometheus_conn_id: str = "prometheus_default",
        virtual_service: str | None = None,
        http_route: str | None = None,
        backend_namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_canary.routing.router import route_object_name, router_kind

        self.checks = list(checks)
        self.judge = judge
        self.judge_options = judge_options
        self.bake_time = bake_time
        self.poll_interval = poll_interval
        self.prometheus_conn_id = prometheus_conn_id

        self.router = router_kind(router).value
        route_object_name(self.router, virtual_service=virtual_service, http_route=http_route)
        self.route_name = route_name
        self.kubernetes_conn_id = kubernetes_conn_id
        self.plan = RolloutPlan(
            steps=validate_steps(steps),
            stable_subset=stable_subset,
            canary_subset=canary_subset,
            stable_version=stable_version,
            canary_version=canary_version,
        )
        self.steps_param = steps_param
        self.virtual_service = virtual_service
        self.http_route = http_route
        self.backend_namespace = backend_namespace
        self.namespace = namespace

    @property
    def route(self) -> str:
        """The route object's name (``virtual_service`` or ``http_route``, the router's)."""
        from airflow_canary.routing.router import route_object_name

        return route_object_name(
            self.router, virtual_service=self.virtual_service, http_route=self.http_route
        )

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
        split = self.check_traffic_target()
        power = self.assess_power(steps)
        from airflow_canary.routing.router import route_parameter

        self.log.info(
            "Rollout of %s/%s (now %s): %s -> %s in steps %s",
            self.namespace,
            self.route,
            split.describe(),
            self.plan.stable_subset,
            self.plan.canary_subset,
            " -> ".join(f"{w}%" for w in steps),
        )
        return {
            route_parameter(self.router): self.route,
            "router": self.router,
            "namespace": self.namespace,
            "steps": list(steps),
            "stable_subset": self.plan.stable_subset,
            "canary_subset": self.plan.canary_subset,
            "stable_version": self.plan.stable_version,
            "canary_version": self.plan.canary_version,
            "routes": split.routes_as_list(),
            "power": power,
        }

    def assess_power(self, steps: Sequence[int]) -> list[str]:
        """Say, before traffic moves, which steps are too thin to judge their checks.

        Logged (thin steps as warnings) and returned for the plan's XCom; a rollout is never
        stopped for it, and a Prometheus that cannot answer only means no statement.
        """
        if not self.checks:
            return []
        from airflow_canary.analysis import AnalysisError, Arms
        from airflow_canary.durations import DurationError, to_seconds
        from airflow_canary.hooks.prometheus import PrometheusHook
        from airflow_canary.rollout.power import plan_power

        try:
            powers, notes = plan_power(
                PrometheusHook(prometheus_conn_id=self.prometheus_conn_id),
                self.checks,
                Arms(self.namespace, self.plan.stable_version, self.plan.canary_version),
                steps,
                judge=self.judge,
                judge_options=self.judge_options,
                bake_seconds=to_seconds("bake_time", self.bake_time),
                poll_seconds=to_seconds("poll_interval", self.poll_interval),
            )
        except (AnalysisError, DurationError) as err:
            # The analysis tasks report bad settings themselves, naming them; the plan only
            # says why it has no statement.
            self.log.warning("Power: no statement: %s", err)
            return [f"no power statement: {err}"]
        for note in notes:
            self.log.info("Power: %s", note)
        for power in powers:
            (self.log.warning if power.thin else self.log.info)("Power: %s", power.sentence())
        return [*notes, *(power.sentence() for power in powers)]

    def check_traffic_target(self) -> TrafficSplit | HTTPRouteSplit:
        """Read the route object and what it sends to; fail now if a step could not work."""
        from airflow_canary.hooks.istio import IstioHook
        from airflow_canary.routing import RouteTarget, RoutingError, check_target, rollout_host

        if self.router != "istio":
            return self.check_router_target()
        try:
            target = RouteTarget(self.plan.stable_subset, self.plan.canary_subset, self.route_name)
            hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
            vs = hook.get_virtual_service(self.route, self.namespace)
            split = check_target(vs, target)
            hook.find_destination_rule(rollout_host(vs, target), self.namespace).require(
                (target.stable_subset, target.canary_subset)
            )
        except (LookupError, RoutingError) as err:
            raise AirflowFailException(
                f"the rollout cannot start, no traffic was moved: {err}"
            ) from None
        return split

    def check_router_target(self) -> HTTPRouteSplit:
        """Gateway API: the HTTPRoute's rules name both Services, references are granted, and
        both Services exist."""
        from airflow_canary.hooks.istio import IstioHook
        from airflow_canary.routing import RoutingError, gateway_api
        from airflow_canary.routing.router import router_for

        router = router_for(
            self.router,
            stable=self.plan.stable_subset,
            canary=self.plan.canary_subset,
            routes=None if self.route_name == "" else self.route_name,
            backend_namespace=None if self.backend_namespace == "" else self.backend_namespace,
        )
        target = router.target  # type: ignore[attr-defined]
        hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
        backend_ns = target.namespace or self.namespace
        try:
            route = hook.get_route(router, self.route, self.namespace)
            grants = (
                hook.list_reference_grants(backend_ns) if backend_ns != self.namespace else None
            )
            split = gateway_api.check_target(route, target, grants)
            for service in (router.stable, router.canary):
                hook.get_service(service, backend_ns)
        except (LookupError, RoutingError) as err:
            raise AirflowFailException(
                f"the rollout cannot start, no traffic was moved: {err}"
            ) from None
        return split


def rollback_reason(
    verdicts: Sequence[tuple[str, Any]],
    failed_task_ids: Sequence[str],
    approvals: Sequence[Mapping[str, Any] | None] = (),
) -> str:
    """Say why a rollout rolled back: an approver's "Roll back", the first unhealthy verdict,
    else the tasks that failed."""
    for answer in approvals:
        reason = approval_reason(answer)
        if reason is not None:
            return reason
    for task_id, verdict in verdicts:
        if isinstance(verdict, dict) and verdict.get("verdict") in _UNHEALTHY:
            reason = verdict.get("reason") or "no reason recorded"
            kind = "shadow analysis" if "pairing" in verdict else "health analysis"
            return f"{task_id}: {kind} {verdict['verdict']}: {reason}"
    if failed_task_ids:
        return "task(s) failed: " + ", ".join(sorted(failed_task_ids))
    return "rollback requested, but no unhealthy verdict or failed task was found"


def verdict_summaries(ti: Any, analysis_task_ids: Sequence[str]) -> dict[str, Any]:
    """Each judged step's verdict, reason and per-check numbers (for asset events), by task id."""
    found: dict[str, Any] = {}
    for task_id in analysis_task_ids:
        verdict = ti.xcom_pull(task_ids=task_id, key="verdict")
        if not isinstance(verdict, Mapping) or not isinstance(verdict.get("verdict"), str):
            continue
        found[task_id] = {
            "verdict": verdict["verdict"],
            "reason": verdict.get("reason"),
            "checks": [
                {
                    key: check.get(key)
                    for key in (
                        "name",
                        "status",
                        "canary_value",
                        "stable_value",
                        "canary_requests",
                        "stable_requests",
                        "p_value",
                    )
                }
                for check in verdict.get("checks") or ()
                if isinstance(check, Mapping)
            ],
        }
    return found


class _EmitsRolloutAsset:
    """Adds the rollout's asset event (promotion or rollback) through an asset alias."""

    alias_name: str
    outcome: str
    namespace: str
    route: str
    router: str
    analysis_task_ids: list[str]
    plan_task_id: str | None
    log: Any

    def emit_asset_event(self, context: Any, reason: str | None = None) -> None:
        from airflow.sdk import AssetAlias

        ti = context["ti"]
        plan = ti.xcom_pull(task_ids=self.plan_task_id) if self.plan_task_id else None
        plan = plan if isinstance(plan, Mapping) else {}
        make = promotion_asset if self.outcome == "promoted" else rollback_asset
        asset = make(self.namespace, self.route)
        extra = promotion_extra(
            outcome=self.outcome,
            namespace=self.namespace,
            route=self.route,
            router=self.router,
            stable_version=plan.get("stable_version"),
            canary_version=plan.get("canary_version"),
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            verdicts=verdict_summaries(ti, self.analysis_task_ids),
            trained_by=training_runs(context.get("triggering_asset_events")),
            reason=reason,
        )
        context["outlet_events"][AssetAlias(self.alias_name)].add(asset, extra=extra)
        self.log.info("Asset event on %s: %s", asset.uri, extra)


class RolloutPromoteOperator(_EmitsRolloutAsset, PromoteCanaryOperator):
    """Promote the canary and emit an asset event on ``canary://<namespace>/<route>``.

    The event's ``extra`` carries the promoted version, the training run behind it (when the
    rollout was started by an asset event) and every step's verdict; see
    :func:`airflow_canary.assets.canary.promotion_extra`.

    :param analysis_task_ids: the rollout's analysis tasks, whose verdicts go in the event
    :param plan_task_id: the plan task, whose XCom names the versions
    """

    alias_name = PROMOTIONS_ALIAS
    outcome = "promoted"

    def __init__(
        self, *, analysis_task_ids: Sequence[str], plan_task_id: str | None, **kwargs: Any
    ) -> None:
        kwargs.setdefault("outlets", [_alias(PROMOTIONS_ALIAS)])
        super().__init__(**kwargs)
        self.analysis_task_ids = list(analysis_task_ids)
        self.plan_task_id = plan_task_id

    def execute(self, context: Any) -> Any:
        result = super().execute(context)
        self.emit_asset_event(context)
        return result


class RolloutRollbackOperator(_EmitsRolloutAsset, RollbackCanaryOperator):
    """Restore 100% stable, record why, and emit an asset event on ``canary://<ns>/<vs>/rollback``.

    The reason is an approver's "Roll back" (with who and their comment), else the first
    unhealthy verdict, else the tasks that failed.

    :param analysis_task_ids: the rollout's analysis tasks
    :param approval_task_ids: the rollout's approval gates
    :param plan_task_id: the plan task, whose XCom names the versions
    """

    alias_name = ROLLBACKS_ALIAS
    outcome = "rolled_back"

    def __init__(
        self,
        *,
        analysis_task_ids: Sequence[str],
        approval_task_ids: Sequence[str] = (),
        plan_task_id: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs.setdefault("outlets", [_alias(ROLLBACKS_ALIAS)])
        super().__init__(**kwargs)
        self.analysis_task_ids = list(analysis_task_ids)
        self.approval_task_ids = list(approval_task_ids)
        self.plan_task_id = plan_task_id

    def execute(self, context: Any) -> Any:
        ti = context["ti"]
        verdicts = []
        for task_id in self.analysis_task_ids:
            verdicts.append((task_id, ti.xcom_pull(task_ids=task_id, key="verdict")))
        approvals = [
            ti.xcom_pull(task_ids=task_id, key=APPROVAL_XCOM_KEY)
            for task_id in self.approval_task_ids
        ]
        failed: list[str] = []
        moved: list[str] = []  # traffic tasks that succeeded: traffic reached the canary
        try:
            states = ti.get_task_states(dag_id=ti.dag_id, run_ids=[ti.run_id])
            for task_id, state in (states.get(ti.run_id) or {}).items():
                if state == "failed" and task_id != self.task_id:
                    failed.append(task_id)
                if state == "success" and task_id.endswith(_TRAFFIC_TASKS):
                    moved.append(task_id)
        except Exception as err:  # the reason is informative only; rollback must go on
            self.log.warning("Could not read task states for the rollback reason: %s", err)
        self.reason = rollback_reason(verdicts, failed, approvals)
        from airflow_canary.hooks.istio import IstioNotFoundError
        from airflow_canary.operators.traffic import RollbackFailedError

        # Every other failure to write propagates with the current split: a rollback is never
        # reported as "nothing to roll back" while a route could still send to the canary.
        try:
            result = super().execute(context)
        except RollbackFailedError as err:
            if not isinstance(err.__cause__, IstioNotFoundError):
                raise
            # No route object (the plan could not find it): no route of it sends anywhere.
            from airflow_canary.routing.router import route_parameter

            self.log.warning("Nothing to roll back (%s); reason: %s", err.__cause__, self.reason)
            return {
                "rolled_back": False,
                "reason": self.reason,
                route_parameter(self.router): self.route,
            }
        # The canary may already be off traffic (the analysis rolled back in its trigger, or
        # another writer): the rollout still rolled back if its traffic had moved.
        in_trigger = [t for t, v in verdicts if isinstance(v, dict) and v.get("rolled_back_at")]
        if not result.get("rolled_back") and (moved or in_trigger):
            result["rolled_back"] = True
            result["already_stable"] = True
        if "live_traffic" in result:  # a weight or header task ran: users may have met v2
            result["live_traffic"] = bool(result["live_traffic"] or moved or in_trigger)
        self.emit_asset_event(context, reason=self.reason)
        return result


#: task id endings of the rollout's tasks that send traffic to the canary
_TRAFFIC_TASKS = (".set_weight", ".header_route")


def _alias(name: str) -> Any:
    from airflow.sdk import AssetAlias

    return AssetAlias(name)


class NotifyRolloutOperator(BaseOperator):
    """Tell people how the rollout ended: call each notifier with the rollout's report.

    Runs after ``promote`` or ``rollback`` (whichever succeeded). The report (outcome, reason,
    each judged step's checks with their numbers, Prometheus/Dashboard links, the run's URL)
    is put in the notifiers' context under ``"canary_rollout"`` as a dict with ``subject``,
    ``text``, ``html`` and ``markdown``; :class:`~airflow_canary.notifications.rollout.RolloutNotifier`
    writes it into any notifier's message fields. As with Airflow's callbacks, a notifier that
    fails is logged and does not fail the task. Returns the report (XCom).

    :param notifiers: Airflow notifiers (``BaseNotifier`` instances)
    :param promote_task_id: the promote task
    :param rollback_task_id: the rollback task
    :param plan_task_id: the plan task
    :param analysis_task_ids: the analysis tasks, in step order
    :raises ValueError: (parse time) when a notifier is not a ``BaseNotifier``
    """

    ui_color = "#eef6e8"

    def __init__(
        self,
        *,
        notifiers: Sequence[Any],
        promote_task_id: str,
        rollback_task_id: str,
        plan_task_id: str,
        analysis_task_ids: Sequence[str],
        **kwargs: Any,
    ) -> None:
        from airflow.sdk import BaseNotifier

        super().__init__(**kwargs)
        bad = [n for n in notifiers if not isinstance(n, BaseNotifier)]
        if bad or not notifiers:
            raise ValueError(
                "notifiers must be a non-empty list of Airflow notifiers (BaseNotifier, e.g. "
                f"SmtpNotifier or RolloutNotifier(...)), got {list(notifiers)!r}"
            )
        self.notifiers = list(notifiers)
        self.promote_task_id = promote_task_id
        self.rollback_task_id = rollback_task_id
        self.plan_task_id = plan_task_id
        self.analysis_task_ids = list(analysis_task_ids)

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_canary.notifications.rollout import REPORT_CONTEXT_KEY

        report = self.build_report(context)
        data = {
            **report.to_dict(),
            "text": report.text(),
            "html": report.html(),
            "markdown": report.markdown(),
        }
        notified = dict(context)
        notified[REPORT_CONTEXT_KEY] = data
        for notifier in self.notifiers:
            self.log.info("Notifying %s: %s", type(notifier).__name__, report.subject)
            notifier(notified)
        return data

    def build_report(self, context: Any) -> RolloutReport:
        ti = context["ti"]
        rollback = ti.xcom_pull(task_ids=self.rollback_task_id)
        # The rollback task ran: the rollout did not promote, whether or not traffic had moved
        # (the Canary rollouts page decides the same way).
        rolled_back = isinstance(rollback, Mapping)
        plan = ti.xcom_pull(task_ids=self.plan_task_id)
        plan = plan if isinstance(plan, Mapping) else {}
        weights = step_weights(self.analysis_task_ids, plan.get("steps"))
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
            weights,
        )
        if rolled_back:
            reason = str(rollback.get("reason") or "reason not recorded")  # type: ignore[union-attr]
        elif steps:
            reason = f"every judged step passed; last: {steps[-1].reason}"
        else:
            reason = "promoted without a judged step"
        return RolloutReport(
            outcome=RolloutOutcome.ROLLED_BACK if rolled_back else RolloutOutcome.PROMOTED,
            dag_id=ti.dag_id,
            run_id=ti.run_id,
            namespace=plan.get("namespace"),
            route=plan.get("virtual_service") or plan.get("http_route"),
            stable_version=plan.get("stable_version"),
            canary_version=plan.get("canary_version"),
            reason=reason,
            steps=steps,
            run_url=_run_url(ti.dag_id, ti.run_id),
        )


def _run_url(dag_id: str, run_id: str) -> str | None:
    from urllib.parse import quote

    from airflow.sdk import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    if not base:
        return None
    return f"{base}/dags/{quote(dag_id, safe='')}/runs/{quote(run_id, safe='')}"


class FailRolloutOperator(BaseOperator):
    """End a rolled-back run as failed, with the rollback's reason, so alerts and callbacks fire.

    :param rollback_task_id: the rollback task whose XCom holds the reason
    """

    ui_color = "#f6d5d5"

    def __init__(self, *, rollback_task_id: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.rollback_task_id = rollback_task_id

    def execute(self, context: Any) -> None:
        result = context["ti"].xcom_pull(task_ids=self.rollback_task_id) or {}
        if not isinstance(result, dict):
            result = {}
        reason = result.get("reason") or "reason not recorded"
        if result.get("rolled_back") is False:
            raise AirflowFailException(f"Canary rollout failed before any traffic moved: {reason}")
        if result.get("live_traffic") is False:  # only a shadow mirror was removed
            raise AirflowFailException(
                f"Canary stopped before it served any live request (mirror removed): {reason}"
            )
        raise AirflowFailException(f"Canary rolled back to stable: {reason}")
