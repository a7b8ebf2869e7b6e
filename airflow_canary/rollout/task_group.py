"""canary_rollout(): the task group that moves traffic step by step, judges each step and rolls back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import TaskGroup

from airflow_canary.rollout.plan import RolloutPlan, RolloutPlanError, validate_steps
from airflow_canary.rollout.shadow import ShadowPhase
from airflow_canary.target import KUBERNETES_CONN_ID, TrafficTarget

#: Airflow's default Prometheus connection id, here so DAG files need not import the hooks.
PROMETHEUS_CONN_ID = "prometheus_default"


#: the wait before a traffic write's retry (``traffic_retries``): the write is idempotent, and
#: a worker's death is noticed by the scheduler's heartbeat timeout before it anyway
TRAFFIC_RETRY_DELAY = timedelta(seconds=5)


def canary_rollout(
    *,
    checks: Sequence[Any],
    virtual_service: str | None = None,
    http_route: str | None = None,
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
    deferrable: bool | None = None,
    dashboard_url_template: str | None = None,
    router: str = "istio",
    backend_namespace: str | None = None,
    notifiers: Sequence[Any] = (),
    approve_before: Sequence[int] = (),
    approvers: Sequence[str] | None = None,
    approval_timeout: timedelta | None = None,
    approval_timeout_choice: str = "Roll back",
    shadow: ShadowPhase | None = None,
    traffic_retries: int = 3,
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
    The route object is named in its router's own term: ``virtual_service=`` (the Istio
    VirtualService, ``router="istio"``, the default) or ``http_route=`` (the Gateway API
    HTTPRoute, ``router="gateway-api"``); exactly one, the router's (RoutingError at parse time
    naming the value otherwise). Either may be a template.
    The rollout moves every http, tcp and tls route of ``virtual_service`` that sends to its two
    subsets; ``route_name`` (a name or a list, ``tcp[0]`` for unnamed routes) lists them
    explicitly, and ``plan`` fails naming any route to the subsets it leaves out.
    While a step is judged its weight must hold: each poll re-reads the VirtualService and tests
    the canary's share of requests; when another writer changed the split the step ends
    INCONCLUSIVE saying so (``on_weight_change="end_step"``), or the weight is written back and
    each correction logged (``"reassert"``).

    ``router`` picks the traffic backend: ``"istio"`` (``virtual_service`` names a
    VirtualService, the subsets are DestinationRule subsets) or ``"gateway-api"``
    (``http_route`` names an HTTPRoute, ``stable_subset``/``canary_subset`` are the Services its
    rules send to, ``route_name`` its rule names, ``backend_namespace`` the Services' namespace
    when not the HTTPRoute's (a ReferenceGrant there must allow it); set
    ``stable_version``/``canary_version`` to the pods' ``version`` labels for the analysis).

    With the sequential judge each judged step gets ``budget_share = 1/judged steps`` of the
    judge's ``alpha`` unless ``judge_options`` sets it: one error budget for the rollout.
    ``dashboard_url_template`` (e.g. a Grafana URL with ``{namespace}``, ``{canary_version}``,
    ``{start_ms}``, ``{end_ms}``) adds a "Dashboard" link to every analysis task.

    ``deferrable`` (default ``[operators] default_deferrable``) makes the steps' analyses wait in
    the triggerer, which also rolls back (``rollback_in_trigger``) the moment a step fails. The
    shadow phase's analysis polls in the worker.

    ``promote`` emits an asset event on ``canary://<namespace>/<route>`` (``<route>`` the
    VirtualService or HTTPRoute), ``rollback`` one on ``canary://<namespace>/<route>/rollback``
    (see :mod:`airflow_canary.assets.canary`): schedule a DAG on
    ``promotion_asset(namespace, route)`` to run after each promotion.

    ``notifiers`` (Airflow ``BaseNotifier`` instances, e.g.
    ``RolloutNotifier(SmtpNotifier(to=...))``) are called by a ``notify`` task after the
    promotion or the rollback, with the rollout's report (reason, per-check numbers, links).

    ``approve_before`` lists step weights (e.g. ``[100]``) that wait for a person first: a
    ``step_<k>.approve`` task (Airflow's human-in-the-loop branch) shows every judged step's
    verdict with its numbers and links and offers "Continue" or "Roll back"; "Roll back" takes
    the rollback path with the approver and their comment as the reason. ``approvers`` (Airflow
    user ids) limits who may answer; ``approval_timeout`` ends the wait with
    ``approval_timeout_choice`` ("Roll back" by default, or "Continue").

    ``shadow`` (a :class:`~airflow_canary.rollout.shadow.ShadowPhase`) adds a shadow phase after
    ``plan``: ``shadow.mirror_on`` mirrors ``percent`` of live requests to the canary,
    ``shadow.analyze`` compares the two versions' predictions from their prediction logs, and
    ``shadow.mirror_off`` stops mirroring before the header route; a FAIL rolls back (which
    removes the mirror) before any user request reaches the canary. With the sequential judge
    the phase is one more judged step of the rollout's error budget.

    ``traffic_retries`` (default 3, ``TRAFFIC_RETRY_DELAY`` apart) are the Airflow retries of
    every task that writes the route (mirror, header route, weights, promote, rollback): their
    writes are idempotent (each sets the route to a target state), so a try whose worker died
    mid-write is completed by the next instead of failing the rollout. They apply whatever the
    DAG's ``default_args`` say; 0 turns them off.
    """
    from airflow.providers.standard.operators.empty import EmptyOperator

    from airflow_canary.names import object_name
    from airflow_canary.operators.analysis import BranchCanaryHealthOperator
    from airflow_canary.operators.deploy import ScaleDeploymentOperator
    from airflow_canary.operators.traffic import (
        SetCanaryWeightOperator,
        SetHeaderRouteOperator,
    )
    from airflow_canary.parameters import flag, mapping, optional_flag, sequence
    from airflow_canary.rollout.approval import RolloutApprovalOperator
    from airflow_canary.rollout.operators import (
        FailRolloutOperator,
        NotifyRolloutOperator,
        RolloutPlanOperator,
        RolloutPromoteOperator,
        RolloutRollbackOperator,
    )
    from airflow_canary.routing.router import route_object_name
    from airflow_canary.templating import is_template

    if not isinstance(group_id, str):
        raise RolloutPlanError(f"group_id must be a task group id string, got {group_id!r}")
    checks = sequence("checks", checks, RolloutPlanError, example="[ErrorRateCheck(max_rate=0.01)]")
    notifiers = sequence("notifiers", notifiers, RolloutPlanError)
    if approvers is not None:
        approvers = sequence("approvers", approvers, RolloutPlanError, example="['alice']")
        if not all(isinstance(a, str) and a.strip() for a in approvers):
            raise RolloutPlanError(f"approvers must be Airflow user ids, got {approvers!r}")
    judge_options = mapping("judge_options", judge_options, RolloutPlanError)
    flag("decommission_stable", decommission_stable, RolloutPlanError)
    if (
        isinstance(traffic_retries, bool)
        or not isinstance(traffic_retries, int)
        or traffic_retries < 0
    ):
        raise RolloutPlanError(
            f"traffic_retries must be a whole number of retries >= 0, got {traffic_retries!r}"
        )
    flag("rollback_in_trigger", rollback_in_trigger, RolloutPlanError)
    optional_flag("deferrable", deferrable, RolloutPlanError)
    if steps_param is not None and not (isinstance(steps_param, str) and steps_param.strip()):
        raise RolloutPlanError(
            f"steps_param must be the name of a DAG param or None, got {steps_param!r}"
        )
    if stable_deployment is not None and not is_template(stable_deployment):
        object_name("stable_deployment", stable_deployment, RolloutPlanError)
    route = route_object_name(router, virtual_service=virtual_service, http_route=http_route)
    plan = RolloutPlan(
        steps=validate_steps(steps),
        stable_subset=stable_subset,
        canary_subset=canary_subset,
        stable_version=stable_subset if stable_version is None else stable_version,
        canary_version=canary_subset if canary_version is None else canary_version,
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
        route=route,
        namespace=namespace,
        stable_subset=plan.stable_subset,
        canary_subset=plan.canary_subset,
        route_name=route_name,
        kubernetes_conn_id=kubernetes_conn_id,
        router=router,
        backend_namespace=backend_namespace,
    )
    traffic = target.operator_kwargs()
    writes = {**traffic, "retries": traffic_retries, "retry_delay": TRAFFIC_RETRY_DELAY}
    judged_steps = sum(1 for weight in plan.steps if weight != 100) + (shadow is not None)
    if judge == "sequential" and judged_steps > 1:
        # One error budget for the rollout: each judged step spends an equal share of alpha,
        # so an identical canary is rolled back with probability <= alpha over all steps.
        judge_options = {"budget_share": 1 / judged_steps, **(judge_options or {})}
    gated = _approval_steps(approve_before, plan.steps)
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

    with TaskGroup(group_id=group_id, tooltip=f"Canary rollout of {route}") as group:
        plan_task = RolloutPlanOperator(
            task_id="plan",
            steps=list(plan.steps),
            steps_param=steps_param,
            stable_version=plan.stable_version,
            canary_version=plan.canary_version,
            checks=list(checks),
            judge=judge,
            judge_options=judge_options,
            bake_time=bake_time,
            poll_interval=poll_interval,
            prometheus_conn_id=prometheus_conn_id,
            **traffic,
        )
        watched: list[Any] = [plan_task]
        head: Any = plan_task
        shadow_analyses: list[Any] = []
        if shadow is not None:
            shadow_analyze, head = _shadow_phase(
                shadow,
                plan_task,
                writes,
                plan,
                judge_options,
                poll_interval,
                watched,
                prometheus_conn_id=prometheus_conn_id,
                max_inconclusive_polls=max_inconclusive_polls,
                deferrable=False,
            )
            shadow_analyses.append(shadow_analyze)
        if header_route is not None:
            header, value = header_route
            header_task = SetHeaderRouteOperator(
                task_id="header_route", header=header, value=value, **writes
            )
            head >> header_task
            watched.append(header_task)
            head = header_task

        set_weights: list[Any] = []
        step_weights: list[int | str] = []
        entries: list[Any] = []
        approvals: list[tuple[int, Any]] = []
        rejections: list[Any] = []
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
                set_weight = SetCanaryWeightOperator(task_id="set_weight", weight=weight, **writes)
                set_weights.append(set_weight)
                step_weights.append(weight)
                entries.append(set_weight)
                if default_weight in gated:
                    rejected = EmptyOperator(task_id="rejected")
                    approve = RolloutApprovalOperator(
                        task_id="approve",
                        weight=weight,
                        analysis_task_ids=[],  # filled in below, once the analyses exist
                        continue_task_id=set_weight.task_id,
                        rollback_task_id=rejected.task_id,
                        plan_task_id=plan_task.task_id,
                        approvers=approvers,
                        response_timeout=approval_timeout,
                        timeout_choice=approval_timeout_choice,
                    )
                    approve >> [set_weight, rejected]
                    entries[-1] = approve
                    approvals.append((index, approve))
                    rejections.append(rejected)
                gates.append(EmptyOperator(task_id="unhealthy") if default_weight != 100 else None)
            step_groups.append(step_group)

        promote = RolloutPromoteOperator(
            task_id="promote",
            analysis_task_ids=[],  # filled in below, once the analyses exist
            plan_task_id=plan_task.task_id,
            **writes,
        )
        analyzes: list[Any] = []
        analyzed_before: list[list[str]] = []
        for index, step_group in enumerate(step_groups):
            analyzed_before.append([a.task_id for a in analyzes])
            healthy_next = entries[index + 1] if index + 1 < len(entries) else promote
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
        head >> entries[0]
        for index, approve in approvals:
            approve.analysis_task_ids = analyzed_before[index]
        promote.analysis_task_ids = [a.task_id for a in shadow_analyses + analyzes]
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
            analysis_task_ids=[a.task_id for a in shadow_analyses + analyzes],
            approval_task_ids=[approve.task_id for _, approve in approvals],
            plan_task_id=plan_task.task_id,
            reason="",
            **writes,
        )
        [*(g for g in gates if g is not None), *rejections, task_failed] >> rollback
        rollback >> FailRolloutOperator(task_id="fail_rollout", rollback_task_id=rollback.task_id)
        if notifiers:
            notify = NotifyRolloutOperator(
                task_id="notify",
                trigger_rule="one_success",
                notifiers=notifiers,
                promote_task_id=promote.task_id,
                rollback_task_id=rollback.task_id,
                plan_task_id=plan_task.task_id,
                analysis_task_ids=[a.task_id for a in shadow_analyses + analyzes],
            )
            [promote, rollback] >> notify
    return group


def _shadow_phase(
    shadow: ShadowPhase,
    plan_task: Any,
    writes: dict[str, Any],
    plan: RolloutPlan,
    judge_options: dict[str, Any] | None,
    poll_interval: timedelta | float,
    watched: list[Any],
    *,
    prometheus_conn_id: str,
    max_inconclusive_polls: int,
    deferrable: bool | None,
) -> tuple[Any, Any]:
    """mirror_on -> analyze -> mirror_off after ``plan``; returns (analyze, mirror_off) and
    appends all three to ``watched`` (any failure takes the rollback path)."""
    from airflow_canary.operators.traffic import SetMirrorOperator
    from airflow_canary.sensors.shadow import ShadowAnalysisSensor

    options = judge_options or {}
    with TaskGroup(group_id="shadow", tooltip=f"shadow phase: {shadow.percent:g}% mirrored"):
        mirror_on = SetMirrorOperator(task_id="mirror_on", percent=shadow.percent, **writes)
        analyze = ShadowAnalysisSensor(
            task_id="analyze",
            prediction_log=shadow.prediction_log,
            checks=list(shadow.checks),
            stable_version=plan.stable_version,
            canary_version=plan.canary_version,
            duration=shadow.duration,
            poll_interval=shadow.poll_interval or poll_interval,
            pairing_window=shadow.pairing_window,
            alpha=options.get("alpha", 0.01),
            budget_share=options.get("budget_share", 1.0),
            log_format=shadow.log_format,
            object_storage_conn_id=shadow.object_storage_conn_id,
            namespace=writes["namespace"],
            prometheus_conn_id=prometheus_conn_id,
            max_inconclusive_polls=max_inconclusive_polls,
            deferrable=deferrable,
            # Records from before the mirror's write can have no canary partner.
            since=(
                f"{{{{ (ti.xcom_pull(task_ids='{mirror_on.task_id}') or {{}})"
                ".get('mirrored_since', '') }}"
            ),
        )
        mirror_off = SetMirrorOperator(task_id="mirror_off", remove=True, **writes)
    plan_task >> mirror_on >> analyze >> mirror_off
    watched += [mirror_on, analyze, mirror_off]
    return analyze, mirror_off


def _approval_steps(approve_before: Sequence[int], steps: Sequence[int]) -> frozenset[int]:
    """The step weights that wait for approval; each must be one of the rollout's steps."""
    if isinstance(approve_before, (str, bytes)) or not isinstance(approve_before, Sequence):
        raise RolloutPlanError(
            f"approve_before must be a list of step weights such as [100], got {approve_before!r}"
        )
    unknown = [w for w in approve_before if w not in steps]
    if unknown:
        raise RolloutPlanError(
            f"approve_before names weight(s) {unknown} that are not steps of this rollout; "
            f"the steps are {list(steps)}"
        )
    return frozenset(approve_before)
