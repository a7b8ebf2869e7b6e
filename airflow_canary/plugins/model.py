"""What the rollouts page shows: rollouts assembled from plain DAG-run, task-instance and XCom rows."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from enum import Enum
from typing import Any

from airflow_canary.timestamps import timestamp_or_none

#: Operator class names that mark a task as part of a canary rollout.
ROLLOUT_OPERATORS = frozenset(
    {
        "RolloutPlanOperator",
        "SetHeaderRouteOperator",
        "SetCanaryWeightOperator",
        "BranchCanaryHealthOperator",
        "PromoteCanaryOperator",
        "RolloutPromoteOperator",
        "RolloutApprovalOperator",
        "RolloutRollbackOperator",
        "FailRolloutOperator",
        "NotifyRolloutOperator",
        "SetMirrorOperator",
        "ShadowAnalysisSensor",
    }
)

#: Task ids created by ``canary_rollout()``: ``<group>.<role>`` and ``<group>.step_<k>.<role>``.
_TASK_ID = re.compile(
    r"^(?:(?P<group>.+)\.)?(?:step_(?P<step>[1-9]\d*)\.(?P<step_role>set_weight|analyze|unhealthy|approve|rejected)"
    r"|(?P<role>plan|header_route|promote|decommission_stable|task_failed|rollback|fail_rollout"
    r"|notify|shadow\.mirror_on|shadow\.analyze|shadow\.mirror_off))$"
)

VERDICT_KEY = "verdict"
RETURN_KEY = "return_value"
#: the latest poll of a running analysis (verdict so far with each check's numbers)
PROGRESS_KEY = "progress"
#: what an analysis judges and since when, written before it waits (its checks' limits)
ANALYSIS_KEY = "analysis"
#: an approval gate's answer: choice, approver, comment
APPROVAL_KEY = "approval"
#: task states in which an approval gate waits for a person
AWAITING_STATES = frozenset({"awaiting_input", "deferred"})
PROMETHEUS_LINK_KEY = "_link_PrometheusLink"
DASHBOARD_LINK_KEY = "_link_DashboardLink"


class TaskRole(str, Enum):
    """The part a task plays in a rollout, read from its task id."""

    PLAN = "plan"
    HEADER_ROUTE = "header_route"
    SET_WEIGHT = "set_weight"
    ANALYZE = "analyze"
    UNHEALTHY = "unhealthy"
    APPROVE = "approve"
    REJECTED = "rejected"
    PROMOTE = "promote"
    DECOMMISSION_STABLE = "decommission_stable"
    TASK_FAILED = "task_failed"
    ROLLBACK = "rollback"
    FAIL_ROLLOUT = "fail_rollout"
    NOTIFY = "notify"
    SHADOW_MIRROR_ON = "shadow.mirror_on"
    SHADOW_ANALYZE = "shadow.analyze"
    SHADOW_MIRROR_OFF = "shadow.mirror_off"


#: Roles that exist only in a step task group, so their ids alone mark a rollout.
STEP_ROLES = frozenset(
    {
        TaskRole.SET_WEIGHT,
        TaskRole.ANALYZE,
        TaskRole.UNHEALTHY,
        TaskRole.APPROVE,
        TaskRole.REJECTED,
    }
)


@dataclass(frozen=True)
class TaskId:
    """A rollout task id taken apart: its group, role and (for step tasks) the step number."""

    group: str
    role: TaskRole
    step: int | None = None


class Outcome(str, Enum):
    """Where a rollout stands."""

    RUNNING = "running"
    PROMOTED = "promoted"
    ROLLED_BACK = "rolled_back"
    FAILED = "failed"
    UNKNOWN = "unknown"


@dataclass(frozen=True)
class TaskRow:
    """One task instance of a DAG run (the columns the page needs)."""

    dag_id: str
    run_id: str
    task_id: str
    operator: str | None
    state: str | None
    start_date: datetime | None
    end_date: datetime | None


@dataclass(frozen=True)
class RunRow:
    """One DAG run."""

    dag_id: str
    run_id: str
    state: str | None
    run_type: str | None
    logical_date: datetime | None
    start_date: datetime | None
    end_date: datetime | None


@dataclass(frozen=True)
class TaskRef:
    """A task id with its state and its address in the Airflow UI."""

    task_id: str
    state: str | None
    url: str


@dataclass(frozen=True)
class CheckResult:
    """One check's numbers from a verdict."""

    name: str
    status: str
    canary_value: float | None
    stable_value: float | None
    canary_requests: float | None
    stable_requests: float | None
    statistic: float | None
    p_value: float | None
    message: str


@dataclass(frozen=True)
class Step:
    """One traffic step (``step_<index>``): the weight task and the analysis that judged it.

    ``weight`` is the canary weight the step set, else the one the plan gave it; None when
    neither can be read (no plan XCom and the step has not run).
    """

    index: int
    weight: int | float | None
    planned_weight: int | None
    set_weight: TaskRef | None
    analysis: TaskRef | None
    weight_set_at: str | None
    verdict: str | None
    reason: str | None
    judge: str | None
    polls: int | None
    elapsed_seconds: float | None
    decided_at: str | None
    window_start: str | None
    window_end: str | None
    checks: tuple[CheckResult, ...]
    prometheus_url: str | None
    dashboard_url: str | None
    rolled_back_at: str | None = None
    live: bool = False
    live_at: str | None = None
    limits: tuple[tuple[str, str], ...] = ()
    approval: TaskRef | None = None
    approval_url: str | None = None
    approval_answer: str | None = None


@dataclass(frozen=True)
class ShadowExample:
    """An example pair a shadow verdict keeps: the request and both versions' predictions (JSON)."""

    check: str
    request_id: str
    stable: str
    canary: str


@dataclass(frozen=True)
class ShadowPairing:
    """How the shadow phase's prediction records paired: every record in a pair or a count."""

    pairs: int | None
    stable_records: int | None
    canary_records: int | None
    unpaired_stable: int | None
    unpaired_canary: int | None
    pending: int | None
    input_mismatch: int | None
    duplicates: int | None
    other_versions: int | None
    before_phase: int | None
    unpaired_examples: tuple[str, ...] = ()

    @classmethod
    def read(cls, value: Any) -> ShadowPairing | None:
        if not isinstance(value, Mapping):
            return None
        counts = {name: _count(value.get(name)) for name in _PAIRING_COUNTS}
        examples = value.get("unpaired_examples")
        return cls(
            **counts,
            unpaired_examples=tuple(e for e in examples if isinstance(e, str))
            if isinstance(examples, list)
            else (),
        )


_PAIRING_COUNTS = (
    "pairs",
    "stable_records",
    "canary_records",
    "unpaired_stable",
    "unpaired_canary",
    "pending",
    "input_mismatch",
    "duplicates",
    "other_versions",
    "before_phase",
)


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


@dataclass(frozen=True)
class ShadowStep:
    """The shadow phase (``shadow.mirror_on -> shadow.analyze -> shadow.mirror_off``).

    ``mirror_percent`` is the share of live requests mirrored to the canary; the verdict's
    checks compare the two versions' predictions on paired requests (``canary_value`` is the
    disagreement share, the delta or the PSI, ``canary_requests`` the pairs) or count the
    canary's answers to the mirrored requests from Istio telemetry (``canary_value`` the share
    that failed or was slow, ``canary_requests`` the mirrored requests), ``pairing`` counts every
    record, and ``examples`` are the pairs a FAIL keeps (request id, both predictions).
    """

    mirror_percent: float | None
    mirrored_at: str | None
    mirror_on: TaskRef | None
    analysis: TaskRef | None
    mirror_off: TaskRef | None
    verdict: str | None
    reason: str | None
    judge: str | None
    polls: int | None
    elapsed_seconds: float | None
    checks: tuple[CheckResult, ...]
    limits: tuple[tuple[str, str], ...]
    pairing: ShadowPairing | None
    examples: tuple[ShadowExample, ...]
    live: bool = False


@dataclass(frozen=True)
class PendingApproval:
    """An approval gate waiting for a person: where to answer it."""

    step: int
    weight: float | None
    task_id: str
    url: str


@dataclass(frozen=True)
class WeightPoint:
    """The canary weight from a point in time on, as written by one traffic task."""

    at: str | None
    weight: int | float
    task_id: str


@dataclass(frozen=True)
class Rollout:
    """One ``canary_rollout`` task group in one DAG run."""

    dag_id: str
    run_id: str
    group: str
    run_state: str | None
    run_type: str | None
    logical_date: str | None
    start_date: str | None
    end_date: str | None
    run_url: str
    outcome: Outcome
    virtual_service: str | None
    namespace: str | None
    stable_version: str | None
    canary_version: str | None
    stable_subset: str | None
    canary_subset: str | None
    planned_steps: tuple[int, ...] | None
    current_weight: int | float | None
    weights: tuple[WeightPoint, ...]
    steps: tuple[Step, ...]
    rollback_reason: str | None
    rolled_back_at: str | None
    tasks: tuple[TaskRef, ...]
    missing: tuple[str, ...] = field(default=())
    #: each route's split after the latest traffic task, e.g. ``tcp[0]: v1 90% v2 10%``
    routes: tuple[str, ...] = field(default=())
    pending_approvals: tuple[PendingApproval, ...] = field(default=())
    #: the shadow phase before the first step, when the rollout has one
    shadow: ShadowStep | None = None

    @classmethod
    def unreadable(cls, run: RunRow, group: str, links: UiLinks, problem: str) -> Rollout:
        """A rollout whose data could not be read at all: the run is still listed, with why."""
        return cls(
            dag_id=run.dag_id,
            run_id=run.run_id,
            group=group,
            run_state=run.state,
            run_type=run.run_type,
            logical_date=_iso(run.logical_date),
            start_date=_iso(run.start_date),
            end_date=_iso(run.end_date),
            run_url=links.run(run.dag_id, run.run_id),
            outcome=Outcome.UNKNOWN,
            virtual_service=None,
            namespace=None,
            stable_version=None,
            canary_version=None,
            stable_subset=None,
            canary_subset=None,
            planned_steps=None,
            current_weight=None,
            weights=(),
            steps=(),
            rollback_reason=None,
            rolled_back_at=None,
            tasks=(),
            missing=(problem,),
        )

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["outcome"] = self.outcome.value
        return data


@dataclass(frozen=True)
class UiLinks:
    """Builds addresses in the Airflow UI below its base path."""

    root: str = "/"

    def run(self, dag_id: str, run_id: str) -> str:
        return f"{self.root}dags/{_quote(dag_id)}/runs/{_quote(run_id)}"

    def task(self, dag_id: str, run_id: str, task_id: str) -> str:
        return f"{self.run(dag_id, run_id)}/tasks/{_quote(task_id)}"

    def required_actions(self, dag_id: str, run_id: str, task_id: str) -> str:
        """Airflow's form for a human-in-the-loop task (as ``HITLOperator.generate_link_to_ui``)."""
        return f"{self.task(dag_id, run_id, task_id)}/required_actions?map_index=-1"


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def parse_task_id(task_id: str) -> TaskId | None:
    """The group, role and step of a ``canary_rollout()`` task id, or None for any other id."""
    match = _TASK_ID.match(task_id)
    if match is None:
        return None
    group = match["group"] or ""
    if match["step_role"] is not None:
        return TaskId(group, TaskRole(match["step_role"]), int(match["step"]))
    return TaskId(group, TaskRole(match["role"]))


def classify(task_id: str, operator: str | None) -> TaskId | None:
    """The parts of a rollout task id, or None for a task that is not part of a rollout.

    A step task's id is enough; a ``plan`` or ``promote`` outside a group must also run one of
    our operators, so that an unrelated DAG's lone ``promote`` task is no rollout.
    """
    found = parse_task_id(task_id)
    if found is None:
        return None
    if found.role in STEP_ROLES or found.group or operator in ROLLOUT_OPERATORS:
        return found
    return None


def marks_rollout(found: TaskId, operator: str | None) -> bool:
    """Whether this task makes its group a rollout: a step task or one of our operators."""
    return found.role in STEP_ROLES or operator in ROLLOUT_OPERATORS


_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _split(value: Any) -> dict[str, int | float] | None:
    # Percentages are ints when whole, else floats (Istio weights are relative).
    if not isinstance(value, Mapping) or not value:
        return None
    split: dict[str, int | float] = {}
    for subset, weight in value.items():
        if (
            not isinstance(subset, str)
            or isinstance(weight, bool)
            or not isinstance(weight, int | float)
        ):
            return None
        split[subset] = weight
    return split


def route_splits(value: Any) -> tuple[str, ...]:
    """``primary: v1 90% v2 10%``, one per route of a traffic XCom's ``routes`` list."""
    routes = value.get("routes") if isinstance(value, Mapping) else None
    if not isinstance(routes, list):
        return ()
    described = []
    for route in routes:
        split = _split(route.get("split")) if isinstance(route, Mapping) else None
        if split is None or not isinstance(route.get("route"), str):
            continue
        described.append(f"{route['route']}: " + " ".join(f"{k} {v}%" for k, v in split.items()))
    return tuple(described)


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def verdict_of(xcoms: Mapping[str, Any]) -> tuple[Mapping[str, Any] | None, str | None]:
    """The verdict dict of an analysis task and, if there is none, why."""
    if VERDICT_KEY in xcoms:
        value = xcoms[VERDICT_KEY]
        if isinstance(value, Mapping) and isinstance(value.get("verdict"), str):
            return value, None
        return None, f"XCom 'verdict' is not a verdict object: {_describe(value)}"
    value = xcoms.get(RETURN_KEY)
    if isinstance(value, Mapping) and isinstance(value.get("verdict"), str):
        return value, None
    if RETURN_KEY in xcoms and isinstance(value, Mapping):
        return None, f"XCom 'return_value' has no 'verdict' field: {_describe(value)}"
    return None, "no verdict XCom"


def _checks(verdict: Mapping[str, Any]) -> tuple[tuple[CheckResult, ...], str | None]:
    raw = verdict.get("checks")
    if raw is None:
        return (), None
    if not isinstance(raw, list):
        return (), f"'checks' is not a list: {_describe(raw)}"
    checks: list[CheckResult] = []
    skipped = 0
    for item in raw:
        if not isinstance(item, Mapping) or not isinstance(item.get("name"), str):
            skipped += 1
            continue
        checks.append(
            CheckResult(
                name=item["name"],
                status=_text(item.get("status")) or "?",
                canary_value=_number(item.get("canary_value")),
                stable_value=_number(item.get("stable_value")),
                canary_requests=_number(item.get("canary_requests")),
                stable_requests=_number(item.get("stable_requests")),
                statistic=_number(item.get("statistic")),
                p_value=_number(item.get("p_value")),
                message=_text(item.get("message")) or "",
            )
        )
    problem = (
        f"{skipped} malformed check entr{'y' if skipped == 1 else 'ies'} skipped"
        if skipped
        else None
    )
    return tuple(checks), problem


@dataclass(frozen=True)
class Plan:
    """What the ``plan`` task published: the weights and who is stable and canary."""

    steps: tuple[int, ...] | None
    stable_subset: str | None
    canary_subset: str | None
    stable_version: str | None
    canary_version: str | None
    virtual_service: str | None
    namespace: str | None

    @classmethod
    def read(cls, value: Any) -> tuple[Plan | None, list[str]]:
        """The plan from the ``plan`` XCom and what was wrong with it (fields left None)."""
        if not isinstance(value, Mapping):
            what = "no XCom" if value is None else f"XCom is not an object: {_describe(value)}"
            return None, [what]
        problems: list[str] = []
        raw = value.get("steps")
        steps: tuple[int, ...] | None = None
        if isinstance(raw, list) and raw and all(_is_weight(w) for w in raw):
            steps = tuple(raw)
        else:
            problems.append(f"plan XCom 'steps' is not a list of weights 0..100: {_describe(raw)}")
        subsets = {name: _text(value.get(name)) for name in ("stable_subset", "canary_subset")}
        problems += [f"plan XCom has no {name!r}" for name, got in subsets.items() if got is None]
        return (
            cls(
                steps=steps,
                stable_subset=subsets["stable_subset"],
                canary_subset=subsets["canary_subset"],
                stable_version=_text(value.get("stable_version")),
                canary_version=_text(value.get("canary_version")),
                virtual_service=_text(value.get("virtual_service") or value.get("http_route")),
                namespace=_text(value.get("namespace")),
            ),
            problems,
        )


def _is_weight(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 100


@dataclass(frozen=True)
class _Tasks:
    """A group's task instances by role, and by step number for the step tasks."""

    by_role: dict[TaskRole, TaskRow]
    by_step: dict[int, dict[TaskRole, TaskRow]]
    refs: tuple[TaskRef, ...]


def _sort_tasks(run: RunRow, group: str, tasks: Iterable[TaskRow], links: UiLinks) -> _Tasks:
    by_role: dict[TaskRole, TaskRow] = {}
    by_step: dict[int, dict[TaskRole, TaskRow]] = {}
    refs: list[TaskRef] = []
    for row in sorted(
        tasks, key=lambda row: (row.start_date is None, row.start_date or datetime.min, row.task_id)
    ):
        found = classify(row.task_id, row.operator)
        if found is None or found.group != group:
            continue
        refs.append(
            TaskRef(row.task_id, row.state, links.task(run.dag_id, run.run_id, row.task_id))
        )
        if found.step is not None:
            by_step.setdefault(found.step, {})[found.role] = row
        else:
            by_role[found.role] = row
    return _Tasks(by_role, by_step, tuple(refs))


def assemble(
    run: RunRow,
    group: str,
    tasks: Iterable[TaskRow],
    xcoms: Mapping[str, Mapping[str, Any]],
    links: UiLinks,
    *,
    xcom_hidden: bool = False,
) -> Rollout:
    """Build one rollout from its run, its group's task instances and their XComs by key.

    Whatever is missing or malformed is named in ``missing``; nothing here raises on bad data.
    """
    prefix = f"{group}." if group else ""
    missing: list[str] = []
    if xcom_hidden:
        missing.append(
            f"you may not read XComs of DAG {run.dag_id!r}: versions, weights and verdicts are hidden"
        )
    found = _sort_tasks(run, group, tasks, links)
    by_role, by_step = found.by_role, found.by_step

    def ref(row: TaskRow | None) -> TaskRef | None:
        if row is None:
            return None
        return TaskRef(row.task_id, row.state, links.task(run.dag_id, run.run_id, row.task_id))

    def returned(row: TaskRow) -> Any:
        return xcoms.get(row.task_id, {}).get(RETURN_KEY)

    # The plan names the subsets and the weights; without it a split cannot be read.
    plan: Plan | None = None
    plan_row = by_role.get(TaskRole.PLAN)
    if plan_row is None:
        missing.append(f"no {prefix}plan task in this run: weights and versions are unknown")
    elif not xcom_hidden:
        plan, problems = Plan.read(returned(plan_row))
        if plan_row.state == "success" or plan is not None:
            missing += [f"{plan_row.task_id}: {problem}" for problem in problems]
    canary = plan.canary_subset if plan is not None else None
    planned = plan.steps if plan is not None else None

    # Traffic XComs, in the order they took effect.
    ordered: list[TaskRow] = []
    if TaskRole.HEADER_ROUTE in by_role:
        ordered.append(by_role[TaskRole.HEADER_ROUTE])
    ordered += [
        by_step[k][TaskRole.SET_WEIGHT]
        for k in sorted(by_step)
        if TaskRole.SET_WEIGHT in by_step[k]
    ]
    ordered += [by_role[role] for role in (TaskRole.PROMOTE, TaskRole.ROLLBACK) if role in by_role]
    traffic: list[tuple[TaskRow, Mapping[str, Any]]] = []
    for row in ordered if not xcom_hidden else ():
        value = returned(row)
        if isinstance(value, Mapping):
            if _split(value.get("split")) is None and row.state == "success":
                missing.append(
                    f"{row.task_id}: XCom has no valid 'split': {_describe(value.get('split'))}"
                )
            traffic.append((row, value))
        elif row.state == "success":
            what = "no XCom" if value is None else f"XCom is not an object: {_describe(value)}"
            missing.append(f"{row.task_id}: {what}")

    weights: list[WeightPoint] = []
    set_weight_of: dict[str, WeightPoint] = {}
    for row, value in traffic:
        split = _split(value.get("split"))
        if split is None or canary is None:
            continue
        if canary not in split:
            missing.append(f"{row.task_id}: split {split} has no canary subset {canary!r}")
            continue
        written = WeightPoint(
            at=_text(value.get("at")) or _iso(row.end_date),
            weight=split[canary],
            task_id=row.task_id,
        )
        weights.append(written)
        set_weight_of[row.task_id] = written
    if traffic and canary is None and plan_row is not None and not xcom_hidden:
        missing.append("the canary subset is unknown without the plan XCom: weights are not shown")

    steps: list[Step] = []
    pending: list[PendingApproval] = []
    count = max([len(planned or ()), *by_step]) if by_step or planned else 0
    for index in range(1, count + 1):
        rows = by_step.get(index, {})
        set_row, analysis_row = rows.get(TaskRole.SET_WEIGHT), rows.get(TaskRole.ANALYZE)
        planned_weight = planned[index - 1] if planned and index <= len(planned) else None
        point = set_weight_of.get(set_row.task_id) if set_row is not None else None
        if point is not None and planned_weight is not None and point.weight != planned_weight:
            missing.append(
                f"{point.task_id}: set canary weight {point.weight}% but the plan says "
                f"{planned_weight}%"
            )
        verdict: Mapping[str, Any] | None = None
        checks: tuple[CheckResult, ...] = ()
        task_xcoms = xcoms.get(analysis_row.task_id, {}) if analysis_row is not None else {}
        progress: Mapping[str, Any] | None = None
        if analysis_row is not None and not xcom_hidden:
            verdict, problem = verdict_of(task_xcoms)
            if verdict is not None:
                checks, problem = _checks(verdict)
            elif analysis_row.state in ANALYSING_STATES:
                # Still judging: the latest poll is the evidence so far.
                progress = _mapping(task_xcoms.get(PROGRESS_KEY))
                if progress is not None:
                    checks, problem = _checks(progress)
            if problem is not None and (
                verdict is not None or analysis_row.state in ("success", "failed")
            ):
                missing.append(f"{analysis_row.task_id}: {problem}")
        approve_row = rows.get(TaskRole.APPROVE)
        approval_url = answer = None
        if approve_row is not None:
            if approve_row.state in AWAITING_STATES:
                approval_url = links.required_actions(run.dag_id, run.run_id, approve_row.task_id)
                pending.append(
                    PendingApproval(
                        index,
                        point.weight if point is not None else planned_weight,
                        approve_row.task_id,
                        approval_url,
                    )
                )
            answer = _approval_answer(xcoms.get(approve_row.task_id, {}).get(APPROVAL_KEY))
        got = verdict or progress or {}
        window = got.get("window")
        window = window if isinstance(window, Mapping) else {}
        polls = got.get("polls")
        rolled_back_at = _text(got.get("rolled_back_at"))
        if rolled_back_at is not None and analysis_row is not None and canary is not None:
            # The trigger rolled back itself: traffic left the canary then, before any task ran.
            weights.append(WeightPoint(at=rolled_back_at, weight=0, task_id=analysis_row.task_id))
        steps.append(
            Step(
                index=index,
                weight=point.weight if point is not None else planned_weight,
                planned_weight=planned_weight,
                set_weight=ref(set_row),
                analysis=ref(analysis_row),
                weight_set_at=point.at if point is not None else None,
                verdict=_text(got.get("verdict")) if progress is None else None,
                reason=_text(got.get("reason")),
                judge=_text(got.get("judge")),
                polls=polls if isinstance(polls, int) and not isinstance(polls, bool) else None,
                elapsed_seconds=_number(got.get("elapsed_seconds")),
                decided_at=_text(got.get("decided_at")),
                window_start=_text(window.get("start")),
                window_end=_text(window.get("end")),
                checks=checks,
                prometheus_url=_text(task_xcoms.get(PROMETHEUS_LINK_KEY)),
                dashboard_url=_text(task_xcoms.get(DASHBOARD_LINK_KEY)),
                rolled_back_at=rolled_back_at,
                live=progress is not None,
                live_at=_text(progress.get("at")) if progress is not None else None,
                limits=_limits(task_xcoms.get(ANALYSIS_KEY)),
                approval=ref(approve_row),
                approval_url=approval_url,
                approval_answer=answer,
            )
        )
    # Points without a time keep their task order at the end (stable sort).
    weights.sort(
        key=lambda point: (
            timestamp_or_none(point.at) is None,
            timestamp_or_none(point.at) or _EPOCH,
        )
    )

    rollback_reason = rolled_back_at = None
    rollback_row = by_role.get(TaskRole.ROLLBACK)
    if rollback_row is not None and not xcom_hidden:
        value = returned(rollback_row)
        if isinstance(value, Mapping) and value.get("rolled_back"):
            rollback_reason = _text(value.get("reason"))
            rolled_back_at = _text(value.get("at"))
            if rollback_reason is None:
                missing.append(f"{rollback_row.task_id}: rollback XCom has no 'reason'")
    # The analysis's own rollback moved traffic first; the rollback task only confirmed it.
    rolled_back_at = next(
        (step.rolled_back_at for step in steps if step.rolled_back_at), rolled_back_at
    )

    outcome = _outcome(run, by_role, rollback_reason is not None)
    shadow = _shadow_step(by_role, xcoms, ref, missing, xcom_hidden)
    return Rollout(
        dag_id=run.dag_id,
        run_id=run.run_id,
        group=group,
        run_state=run.state,
        run_type=run.run_type,
        logical_date=_iso(run.logical_date),
        start_date=_iso(run.start_date),
        end_date=_iso(run.end_date),
        run_url=links.run(run.dag_id, run.run_id),
        outcome=outcome,
        virtual_service=plan.virtual_service if plan is not None else None,
        namespace=plan.namespace if plan is not None else None,
        stable_version=plan.stable_version if plan is not None else None,
        canary_version=plan.canary_version if plan is not None else None,
        stable_subset=plan.stable_subset if plan is not None else None,
        canary_subset=canary,
        planned_steps=planned,
        current_weight=weights[-1].weight if weights else None,
        weights=tuple(weights),
        steps=tuple(steps),
        rollback_reason=rollback_reason,
        rolled_back_at=rolled_back_at,
        tasks=found.refs,
        missing=tuple(missing),
        routes=next((r for r in (route_splits(v) for _, v in reversed(traffic)) if r), ()),
        pending_approvals=tuple(pending),
        shadow=shadow,
    )


def _shadow_step(
    by_role: Mapping[TaskRole, TaskRow],
    xcoms: Mapping[str, Mapping[str, Any]],
    ref: Any,
    missing: list[str],
    xcom_hidden: bool,
) -> ShadowStep | None:
    """The shadow phase from its three tasks and their XComs; None when the rollout has none."""
    rows = [
        by_role.get(role)
        for role in (TaskRole.SHADOW_MIRROR_ON, TaskRole.SHADOW_ANALYZE, TaskRole.SHADOW_MIRROR_OFF)
    ]
    mirror_on, analysis, mirror_off = rows
    if not any(rows):
        return None
    mirrored = (
        _mapping(xcoms.get(mirror_on.task_id, {}).get(RETURN_KEY))
        if mirror_on is not None and not xcom_hidden
        else None
    )
    task_xcoms = xcoms.get(analysis.task_id, {}) if analysis is not None and not xcom_hidden else {}
    verdict: Mapping[str, Any] | None = None
    checks: tuple[CheckResult, ...] = ()
    if analysis is not None and not xcom_hidden:
        verdict, problem = verdict_of(task_xcoms)
        if verdict is not None:
            checks, problem = _checks(verdict)
        if problem is not None and (verdict is not None or analysis.state in ("success", "failed")):
            missing.append(f"{analysis.task_id}: {problem}")
    got = verdict or {}
    # The sensor pushes its verdict at every poll; one that is not final is evidence so far.
    live = bool(got) and got.get("final") is False
    polls = got.get("polls")
    return ShadowStep(
        mirror_percent=_number(mirrored.get("mirror_percent")) if mirrored else None,
        mirrored_at=_text(mirrored.get("at")) if mirrored else None,
        mirror_on=ref(mirror_on),
        analysis=ref(analysis),
        mirror_off=ref(mirror_off),
        verdict=None if live else _text(got.get("verdict")),
        reason=_text(got.get("reason")),
        judge=_text(got.get("judge")),
        polls=polls if isinstance(polls, int) and not isinstance(polls, bool) else None,
        elapsed_seconds=_number(got.get("elapsed_seconds")),
        checks=checks,
        limits=_limits(task_xcoms.get(ANALYSIS_KEY)),
        pairing=ShadowPairing.read(got.get("pairing")),
        examples=_shadow_examples(got.get("examples")),
        live=live,
    )


def _shadow_examples(value: Any) -> tuple[ShadowExample, ...]:
    """The example pairs of a shadow verdict; entries that are not example pairs are left out."""
    if not isinstance(value, list):
        return ()
    found = []
    for item in value:
        if not isinstance(item, Mapping) or not isinstance(item.get("request_id"), str):
            continue
        sides = [_mapping(item.get(side)) or {} for side in ("stable", "canary")]
        stable, canary = (json.dumps(side.get("prediction"), sort_keys=True) for side in sides)
        found.append(
            ShadowExample(_text(item.get("check")) or "?", item["request_id"], stable, canary)
        )
    return tuple(found)


#: task states of an analysis that is still judging
ANALYSING_STATES = frozenset({"running", "deferred", "up_for_reschedule", "queued", "scheduled"})

# Check fields that are not limits.
_NOT_LIMITS = frozenset({"type", "name"})


def _mapping(value: Any) -> Mapping[str, Any] | None:
    return value if isinstance(value, Mapping) else None


def _limits(record: Any) -> tuple[tuple[str, str], ...]:
    """Each check's limits from the analysis record: ``(name, "max_increase=0.02, ...")``."""
    if not isinstance(record, Mapping) or not isinstance(record.get("checks"), list):
        return ()
    found = []
    for check in record["checks"]:
        if not isinstance(check, Mapping):
            continue
        name = _text(check.get("name")) or _text(check.get("type")) or "?"
        limits = ", ".join(
            f"{key}={value}"
            for key, value in check.items()
            if key not in _NOT_LIMITS and value is not None and not isinstance(value, (dict, list))
        )
        found.append((name, limits))
    return tuple(found)


def _approval_answer(value: Any) -> str | None:
    """``"Continue by alice: looks good"`` from an approval gate's XCom."""
    if not isinstance(value, Mapping) or not _text(value.get("choice")):
        return None
    who = "timeout" if value.get("timed_out") else _text(value.get("approver")) or "someone"
    comment = _text(value.get("comment"))
    return f"{value['choice']} by {who}" + (f": {comment}" if comment else "")


def _outcome(run: RunRow, by_role: Mapping[TaskRole, TaskRow], rolled_back: bool) -> Outcome:
    rollback = by_role.get(TaskRole.ROLLBACK)
    promote = by_role.get(TaskRole.PROMOTE)
    if rolled_back or (rollback is not None and rollback.state == "success"):
        return Outcome.ROLLED_BACK
    if promote is not None and promote.state == "success":
        return Outcome.PROMOTED
    if run.state in ("running", "queued"):
        return Outcome.RUNNING
    if run.state == "failed":
        return Outcome.FAILED
    return Outcome.UNKNOWN
