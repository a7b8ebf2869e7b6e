"""What the rollouts page shows: rollouts assembled from plain DAG-run, task-instance and XCom rows."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import Enum
from typing import Any

#: Operator class names that mark a task as part of a canary rollout.
ROLLOUT_OPERATORS = frozenset(
    {
        "SetHeaderRouteOperator",
        "SetCanaryWeightOperator",
        "BranchCanaryHealthOperator",
        "CanaryHealthSensor",
        "PromoteCanaryOperator",
        "RollbackCanaryOperator",
    }
)

#: ``<group>.<role>`` task ids created by ``canary_rollout()``.
_TASK_ID = re.compile(
    r"^(?:(?P<group>.+)\.)?(?P<role>header_route|set_weight_(?P<sw>\d+)|analyze_(?P<aw>\d+)|promote|rollback|fail_rollout)$"
)

VERDICT_KEY = "verdict"
RETURN_KEY = "return_value"
PROMETHEUS_LINK_KEY = "_link_PrometheusLink"
DASHBOARD_LINK_KEY = "_link_DashboardLink"


class TaskRole(str, Enum):
    """The part a task plays in a rollout, read from its task id."""

    HEADER_ROUTE = "header_route"
    SET_WEIGHT = "set_weight"
    ANALYZE = "analyze"
    PROMOTE = "promote"
    ROLLBACK = "rollback"
    FAIL_ROLLOUT = "fail_rollout"


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
    """One traffic step: the weight task and the analysis that judged it."""

    weight: int
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


@dataclass(frozen=True)
class WeightPoint:
    """The canary weight from a point in time on, as written by one traffic task."""

    at: str | None
    weight: int
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
    current_weight: int | None
    weights: tuple[WeightPoint, ...]
    steps: tuple[Step, ...]
    rollback_reason: str | None
    rolled_back_at: str | None
    tasks: tuple[TaskRef, ...]
    missing: tuple[str, ...] = field(default=())

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


def _quote(part: str) -> str:
    from urllib.parse import quote

    return quote(part, safe="")


def classify(task_id: str, operator: str | None) -> tuple[str, TaskRole, int | None] | None:
    """``(group, role, weight)`` for a rollout task id, or None for any other task."""
    match = _TASK_ID.match(task_id)
    if match is None:
        return None
    role_text = match["role"]
    weight_text = match["sw"] or match["aw"]
    role = TaskRole(re.sub(r"_\d+$", "", role_text))
    group = match["group"] or ""
    # A lone "promote" task in an unrelated DAG is not a rollout; weight steps or our
    # operators are what make one.
    if operator not in ROLLOUT_OPERATORS and role not in (TaskRole.SET_WEIGHT, TaskRole.ANALYZE):
        return (group, role, None) if group else None
    return group, role, int(weight_text) if weight_text is not None else None


def is_rollout_task(task_id: str, operator: str | None) -> bool:
    return operator in ROLLOUT_OPERATORS or (
        (found := classify(task_id, operator)) is not None
        and found[1] in (TaskRole.SET_WEIGHT, TaskRole.ANALYZE)
    )


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _split(value: Any) -> dict[str, int] | None:
    if not isinstance(value, Mapping) or not value:
        return None
    split: dict[str, int] = {}
    for subset, weight in value.items():
        if not isinstance(subset, str) or isinstance(weight, bool) or not isinstance(weight, int):
            return None
        split[subset] = weight
    return split


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


def _canary_weight(split: Mapping[str, int], canary: str | None) -> int | None:
    if canary is not None and canary in split:
        return split[canary]
    return None


def _infer_versions(
    traffic: Sequence[tuple[TaskRole, int | None, Mapping[str, Any]]],
) -> tuple[str | None, str | None]:
    """Stable and canary subsets from the traffic tasks' XComs.

    The header route names the canary subset outright; otherwise a weight step whose
    weight is not 50 tells the two subsets apart (the canary holds the step's weight).
    """
    canary: str | None = None
    subsets: list[str] = []
    for role, weight, value in traffic:
        split = _split(value.get("split")) or {}
        for subset in split:
            if subset not in subsets:
                subsets.append(subset)
        routes = value.get("header_routes")
        if canary is None and isinstance(routes, list):
            for route in routes:
                if isinstance(route, Mapping) and isinstance(route.get("subset"), str):
                    canary = route["subset"]
                    break
        if canary is None and role is TaskRole.SET_WEIGHT and weight is not None and weight != 50:
            holders = [subset for subset, share in split.items() if share == weight]
            if len(holders) == 1:
                canary = holders[0]
        if canary is None and role is TaskRole.PROMOTE:
            holders = [subset for subset, share in split.items() if share == 100]
            if len(holders) == 1:
                canary = holders[0]
    others = [subset for subset in subsets if subset != canary]
    stable = others[0] if canary is not None and len(others) == 1 else None
    return stable, canary


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

    by_role: dict[TaskRole, TaskRow] = {}
    set_weight: dict[int, TaskRow] = {}
    analyze: dict[int, TaskRow] = {}
    refs: list[TaskRef] = []
    for row in sorted(
        tasks, key=lambda row: (row.start_date is None, row.start_date or datetime.min, row.task_id)
    ):
        found = classify(row.task_id, row.operator)
        if found is None or found[0] != group:
            continue
        _, role, weight = found
        refs.append(
            TaskRef(row.task_id, row.state, links.task(run.dag_id, run.run_id, row.task_id))
        )
        if role is TaskRole.SET_WEIGHT and weight is not None:
            set_weight[weight] = row
        elif role is TaskRole.ANALYZE and weight is not None:
            analyze[weight] = row
        else:
            by_role[role] = row

    def ref(row: TaskRow | None) -> TaskRef | None:
        if row is None:
            return None
        return TaskRef(row.task_id, row.state, links.task(run.dag_id, run.run_id, row.task_id))

    # Traffic XComs, in the order they took effect.
    traffic: list[tuple[TaskRole, int | None, TaskRow, Mapping[str, Any]]] = []
    ordered: list[tuple[TaskRole, int | None, TaskRow]] = []
    if TaskRole.HEADER_ROUTE in by_role:
        ordered.append((TaskRole.HEADER_ROUTE, None, by_role[TaskRole.HEADER_ROUTE]))
    ordered += [(TaskRole.SET_WEIGHT, weight, set_weight[weight]) for weight in sorted(set_weight)]
    for role in (TaskRole.PROMOTE, TaskRole.ROLLBACK):
        if role in by_role:
            ordered.append((role, None, by_role[role]))
    for role, weight, row in ordered:
        if xcom_hidden:
            continue
        value = xcoms.get(row.task_id, {}).get(RETURN_KEY)
        if isinstance(value, Mapping):
            if _split(value.get("split")) is None and row.state == "success":
                missing.append(
                    f"{row.task_id}: XCom has no valid 'split': {_describe(value.get('split'))}"
                )
            traffic.append((role, weight, row, value))
        elif row.state == "success":
            what = "no XCom" if value is None else f"XCom is not an object: {_describe(value)}"
            missing.append(f"{row.task_id}: {what}")
    traffic.sort(key=lambda item: _text(item[3].get("at")) or _iso(item[2].end_date) or "~")

    stable, canary = _infer_versions([(role, weight, value) for role, weight, _, value in traffic])
    if not xcom_hidden and traffic and canary is None:
        missing.append("could not tell the canary subset from the traffic XComs")

    virtual_service = namespace = None
    weights: list[WeightPoint] = []
    for _, _, row, value in traffic:
        virtual_service = virtual_service or _text(value.get("virtual_service"))
        namespace = namespace or _text(value.get("namespace"))
        split = _split(value.get("split"))
        weight = _canary_weight(split, canary) if split else None
        if weight is not None:
            at = _text(value.get("at")) or _iso(row.end_date)
            weights.append(WeightPoint(at=at, weight=weight, task_id=row.task_id))

    rollback_reason = rolled_back_at = None
    rollback_row = by_role.get(TaskRole.ROLLBACK)
    if rollback_row is not None and not xcom_hidden:
        value = xcoms.get(rollback_row.task_id, {}).get(RETURN_KEY)
        if isinstance(value, Mapping) and value.get("rolled_back"):
            rollback_reason = _text(value.get("reason"))
            rolled_back_at = _text(value.get("at"))
            if rollback_reason is None:
                missing.append(f"{rollback_row.task_id}: rollback XCom has no 'reason'")

    steps: list[Step] = []
    for weight in sorted(set(set_weight) | set(analyze)):
        analysis_row = analyze.get(weight)
        verdict: Mapping[str, Any] | None = None
        checks: tuple[CheckResult, ...] = ()
        task_xcoms = xcoms.get(analysis_row.task_id, {}) if analysis_row is not None else {}
        if analysis_row is not None and not xcom_hidden:
            verdict, problem = verdict_of(task_xcoms)
            if verdict is not None:
                checks, problem = _checks(verdict)
            if problem is not None and (
                verdict is not None or analysis_row.state in ("success", "failed")
            ):
                missing.append(f"{analysis_row.task_id}: {problem}")
        window = verdict.get("window") if verdict is not None else None
        window = window if isinstance(window, Mapping) else {}
        polls = verdict.get("polls") if verdict is not None else None
        point = next((p for p in weights if p.task_id == prefix + f"set_weight_{weight}"), None)
        steps.append(
            Step(
                weight=weight,
                set_weight=ref(set_weight.get(weight)),
                analysis=ref(analysis_row),
                weight_set_at=point.at if point else None,
                verdict=_text(verdict.get("verdict")) if verdict is not None else None,
                reason=_text(verdict.get("reason")) if verdict is not None else None,
                judge=_text(verdict.get("judge")) if verdict is not None else None,
                polls=polls if isinstance(polls, int) and not isinstance(polls, bool) else None,
                elapsed_seconds=_number(verdict.get("elapsed_seconds"))
                if verdict is not None
                else None,
                decided_at=_text(verdict.get("decided_at")) if verdict is not None else None,
                window_start=_text(window.get("start")),
                window_end=_text(window.get("end")),
                checks=checks,
                prometheus_url=_text(task_xcoms.get(PROMETHEUS_LINK_KEY)),
                dashboard_url=_text(task_xcoms.get(DASHBOARD_LINK_KEY)),
            )
        )

    outcome = _outcome(run, by_role, rollback_reason is not None or rolled_back_at is not None)
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
        virtual_service=virtual_service,
        namespace=namespace,
        stable_version=stable,
        canary_version=canary,
        current_weight=weights[-1].weight if weights else None,
        weights=tuple(weights),
        steps=tuple(steps),
        rollback_reason=rollback_reason,
        rolled_back_at=rolled_back_at,
        tasks=tuple(refs),
        missing=tuple(missing),
    )


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
