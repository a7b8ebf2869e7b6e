"""The bookkeeping tasks of canary_rollout(): the plan, the rollback with its reason, the failing end."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowFailException

from airflow_canary.operators.traffic import RollbackCanaryOperator
from airflow_canary.rollout.plan import RolloutPlan, validate_steps
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
    """

    template_fields = ("virtual_service", "namespace", "route_name")
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
        route_name: str | Sequence[str] | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        router: str = "istio",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        from airflow_canary.routing.router import router_kind

        self.router = router_kind(router).value
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
        split = self.check_traffic_target()
        self.log.info(
            "Rollout of %s/%s (now %s): %s -> %s in steps %s",
            self.namespace,
            self.virtual_service,
            split.describe(),
            self.plan.stable_subset,
            self.plan.canary_subset,
            " -> ".join(f"{w}%" for w in steps),
        )
        return {
            "virtual_service": self.virtual_service,
            "router": self.router,
            "namespace": self.namespace,
            "steps": list(steps),
            "stable_subset": self.plan.stable_subset,
            "canary_subset": self.plan.canary_subset,
            "stable_version": self.plan.stable_version,
            "canary_version": self.plan.canary_version,
            "routes": split.routes_as_list(),
        }

    def check_traffic_target(self) -> TrafficSplit | HTTPRouteSplit:
        """Read the route object and what it sends to; fail now if a step could not work."""
        from airflow_canary.hooks.istio import IstioHook
        from airflow_canary.routing import RouteTarget, RoutingError, check_target, rollout_host

        if self.router != "istio":
            return self.check_router_target()
        try:
            target = RouteTarget(self.plan.stable_subset, self.plan.canary_subset, self.route_name)
            hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
            vs = hook.get_virtual_service(self.virtual_service, self.namespace)
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
        )
        target = router.target  # type: ignore[attr-defined]
        hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
        backend_ns = target.namespace or self.namespace
        try:
            route = hook.get_route(router, self.virtual_service, self.namespace)
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
        self.reason = rollback_reason(verdicts, failed)
        from airflow_canary.hooks.istio import IstioNotFoundError
        from airflow_canary.operators.traffic import RollbackFailedError

        # Every other failure to write propagates with the current split: a rollback is never
        # reported as "nothing to roll back" while a route could still send to the canary.
        try:
            result = super().execute(context)
        except RollbackFailedError as err:
            if not isinstance(err.__cause__, IstioNotFoundError):
                raise
            # No VirtualService (the plan could not find it): no route of it sends anywhere.
            self.log.warning("Nothing to roll back (%s); reason: %s", err.__cause__, self.reason)
            return {
                "rolled_back": False,
                "reason": self.reason,
                "virtual_service": self.virtual_service,
            }
        # The canary may already be off traffic (the analysis rolled back in its trigger, or
        # another writer): the rollout still rolled back if its traffic had moved.
        in_trigger = [t for t, v in verdicts if isinstance(v, dict) and v.get("rolled_back_at")]
        if not result.get("rolled_back") and (moved or in_trigger):
            result["rolled_back"] = True
            result["already_stable"] = True
        return result


#: task id endings of the rollout's tasks that send traffic to the canary
_TRAFFIC_TASKS = (".set_weight", ".header_route")


class FailRolloutOperator(BaseOperator):
    """End a rolled-back run as failed, with the rollback's reason, so alerts and callbacks fire."""

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
        raise AirflowFailException(f"Canary rolled back to stable: {reason}")
