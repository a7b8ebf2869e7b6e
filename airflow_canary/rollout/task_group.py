"""canary_rollout(): the task group that moves traffic step by step, judges each step and rolls back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from airflow_canary.rollout.plan import RolloutPlan, RolloutPlanError
from airflow_canary.target import KUBERNETES_CONN_ID, TrafficTarget

#: Airflow's default Prometheus connection id, here so DAG files need not import the hooks.
PROMETHEUS_CONN_ID = "prometheus_default"


def canary_rollout(
    *,
    virtual_service: str,
    checks: Sequence[Any],
    group_id: str = "canary",
    namespace: str = "default",
    stable_subset: str = "v1",
    canary_subset: str = "v2",
    stable_version: str | None = None,
    canary_version: str | None = None,
    steps: Sequence[int] = (1, 10, 50, 100),
    steps_param: str | None = None,
    bake_time: timedelta | float = 300,
    poll_interval: timedelta | float = 15,
    analysis_timeout: timedelta | float | None = None,
    judge: str = "sequential",
    judge_options: dict[str, Any] | None = None,
    max_inconclusive_polls: int = 3,
    header_route: tuple[str, str] | None = ("x-canary-version", "v2"),
    route_name: str | Sequence[str] | None = None,
    on_weight_change: str = "end_step",
    rollback_in_trigger: bool = True,
    decommission_stable: bool = False,
    stable_deployment: str | None = None,
    kubernetes_conn_id: str = KUBERNETES_CONN_ID,
    prometheus_conn_id: str = PROMETHEUS_CONN_ID,
    deferrable: bool = True,
    dashboard_url_template: str | None = None,
    router: str = "istio",
) -> TaskGroup:
    """Build the rollout task group inside the current DAG.

    Layout (ids relative to ``group_id``)::

        plan -> header_route -> step_1.set_weight -> step_1.analyze -+-> step_2.set_weight -> ...
                                                                      +-> step_1.unhealthy -+
        ... -> step_N.set_weight (100%: no analysis) -> promote [-> decommission_stable]    |
        any task failed -> task_failed --------------------------------------------------+-> rollback -> fail_rollout

    ``steps`` are validated here, at DAG parse time. With ``steps_param`` the weights are read
    from that DAG param at run time (its list must have ``len(steps)`` strictly increasing
    weights; ``plan`` checks it before any traffic moves). ``checks`` are the analysis checks
    from :mod:`airflow_canary.analysis`. After a rollback the run ends failed (``fail_rollout``)
    so failure callbacks and alerts fire; a healthy rollout ends with ``promote``. A 100% step
    has no stable traffic to compare with, so it is followed by ``promote`` directly.
    The rollout moves every http, tcp and tls route of ``virtual_service`` that sends to its two
    subsets; ``route_name`` (a name or a list, ``tcp[0]`` for unnamed routes) lists them
    explicitly, and ``plan`` fails naming any route to the subsets it leaves out.
    While a step is judged its weight must hold: each poll re-reads the VirtualService and tests
    the canary's share of requests; when another writer changed the split the step ends
    INCONCLUSIVE saying so (``on_weight_change="end_step"``), or the weight is written back and
    each correction logged (``"reassert"``).

    ``router`` picks the traffic backend: ``"istio"`` (``virtual_service`` is a VirtualService,
    the subsets are DestinationRule subsets) or ``"gateway-api"`` (``virtual_service`` is an
    HTTPRoute, ``stable_subset``/``canary_subset`` are the Services its rules send to; set
    ``stable_version``/``canary_version`` to the pods' ``version`` labels for the analysis).

    With the sequential judge each judged step gets ``budget_share = 1/judged steps`` of the
    judge's ``alpha`` unless ``judge_options`` sets it: one error budget for the rollout.
    ``dashboard_url_template`` (e.g. a Grafana URL with ``{namespace}``, ``{canary_version}``,
    ``{start_ms}``, ``{end_ms}``) adds a "Dashboard" link to every analysis task.
    """
    from airflow.providers.standard.operators.empty import EmptyOperator

    from airflow_canary.operators.analysis import BranchCanaryHealthOperator
    from airflow_canary.operators.deploy import ScaleDeploymentOperator
    from airflow_canary.operators.traffic import (
        PromoteCanaryOperator,
        SetCanaryWeightOperator,
        SetHeaderRouteOperator,
    )
    from airflow_canary.rollout.operators import (
        FailRolloutOperator,
        RolloutPlanOperator,
        RolloutRollbackOperator,
    )

    plan = RolloutPlan(
        steps=tuple(steps),  # type: ignore[arg-type]
        stable_subset=stable_subset,
        canary_subset=canary_subset,
        stable_version=stable_version or stable_subset,
        canary_version=canary_version or canary_subset,
    )
    if not checks:
        raise RolloutPlanError(
            "checks must name at least one health check (e.g. ErrorRateCheck(max_increase=0.01)), got none"
        )
    if decommission_stable and not stable_deployment:
        raise RolloutPlanError(
            "decommission_stable=True needs stable_deployment, the name of the stable Deployment to scale to 0"
        )
    if header_route is not None and (
        not isinstance(header_route, (tuple, list)) or len(header_route) != 2
    ):
        raise RolloutPlanError(
            f"header_route must be a (header, value) pair such as ('x-canary-version', 'v2') or None, got {header_route!r}"
        )

    target = TrafficTarget(
        virtual_service=virtual_service,
        namespace=namespace,
        stable_subset=plan.stable_subset,
        canary_subset=plan.canary_subset,
        route_name=route_name,
        kubernetes_conn_id=kubernetes_conn_id,
        router=router,
    )
    traffic = target.operator_kwargs()
    judged_steps = sum(1 for weight in plan.steps if weight != 100)
    if judge == "sequential" and judged_steps > 1:
        # One error budget for the rollout: each judged step spends an equal share of alpha,
        # so an identical canary is rolled back with probability <= alpha over all steps.
        judge_options = {"budget_share": 1 / judged_steps, **(judge_options or {})}
    analysis: dict[str, Any] = {
        **traffic,
        "stable_version": plan.stable_version,
        "canary_version": plan.canary_version,
        "checks": list(checks),
        "judge": judge,
        "judge_options": judge_options,
        "bake_time": bake_time,
        "poll_interval": poll_interval,
        "max_inconclusive_polls": max_inconclusive_polls,
        "prometheus_conn_id": prometheus_conn_id,
        "deferrable": deferrable,
        "dashboard_url_template": dashboard_url_template,
        "rollback_on_failure": rollback_in_trigger,
    }
    if analysis_timeout is not None:
        analysis["timeout"] = analysis_timeout

    with TaskGroup(group_id=group_id, tooltip=f"Canary rollout of {virtual_service}") as group:
        plan_task = RolloutPlanOperator(
            task_id="plan",
            steps=list(plan.steps),
            steps_param=steps_param,
            stable_version=plan.stable_version,
            canary_version=plan.canary_version,
            **traffic,
        )
        watched: list[Any] = [plan_task]
        head: Any = plan_task
        if header_route is not None:
            header, value = header_route
            header_task = SetHeaderRouteOperator(
                task_id="header_route", header=header, value=value, **traffic
            )
            plan_task >> header_task
            watched.append(header_task)
            head = header_task

        set_weights: list[Any] = []
        step_weights: list[int | str] = []
        gates: list[Any | None] = []
        step_groups: list[TaskGroup] = []
        for index, default_weight in enumerate(plan.steps):
            weight: int | str = default_weight
            if steps_param:
                weight = (
                    "{{ ti.xcom_pull(task_ids='"
                    + plan_task.task_id
                    + "')['steps']["
                    + str(index)
                    + "] }}"
                )
            with TaskGroup(
                group_id=f"step_{index + 1}",
                tooltip=f"step {index + 1}: canary weight {weight if not steps_param else 'from params'}",
            ) as step_group:
                set_weights.append(
                    SetCanaryWeightOperator(task_id="set_weight", weight=weight, **traffic)
                )
                step_weights.append(weight)
                gates.append(EmptyOperator(task_id="unhealthy") if default_weight != 100 else None)
            step_groups.append(step_group)

        promote = PromoteCanaryOperator(task_id="promote", **traffic)
        analyzes: list[Any] = []
        for index, step_group in enumerate(step_groups):
            healthy_next = set_weights[index + 1] if index + 1 < len(set_weights) else promote
            if plan.steps[index] == 100:
                # At 100% the stable arm gets no traffic, so there is nothing to compare with:
                # the full shift is the promotion (Flagger likewise promotes after its last step).
                set_weights[index] >> healthy_next
                continue
            gate = gates[index]
            assert gate is not None  # only a 100% step has no gate
            with step_group:
                analyze = BranchCanaryHealthOperator(
                    task_id="analyze",
                    follow_task_ids_if_healthy=[healthy_next.task_id],
                    follow_task_ids_if_unhealthy=[gate.task_id],
                    canary_weight=step_weights[index],
                    on_weight_change=on_weight_change,
                    **analysis,
                )
            set_weights[index] >> analyze >> [healthy_next, gate]
            analyzes.append(analyze)
        head >> set_weights[0]
        # Analysis tasks are branches: they skip every direct downstream they do not follow, so a
        # failed analysis is seen through the upstream_failed state of the task after it instead.
        watched += set_weights + [promote]

        if decommission_stable:
            decommission = ScaleDeploymentOperator(
                task_id="decommission_stable",
                deployment=str(stable_deployment),
                namespace=namespace,
                replicas=0,
                kubernetes_conn_id=kubernetes_conn_id,
            )
            promote >> decommission

        task_failed = EmptyOperator(task_id="task_failed", trigger_rule="one_failed")
        watched >> task_failed
        rollback = RolloutRollbackOperator(
            task_id="rollback",
            trigger_rule="one_success",
            analysis_task_ids=[a.task_id for a in analyzes],
            reason="",
            **traffic,
        )
        [*(g for g in gates if g is not None), task_failed] >> rollback
        rollback >> FailRolloutOperator(task_id="fail_rollout", rollback_task_id=rollback.task_id)
    return group
