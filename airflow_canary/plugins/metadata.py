"""Reads rollouts from Airflow's metadata database, limited to the DAGs a user may read."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel
from sqlalchemy import and_, or_, select, tuple_
from sqlalchemy.orm import Session

from airflow_canary.plugins.model import (
    ANALYSIS_KEY,
    APPROVAL_KEY,
    DASHBOARD_LINK_KEY,
    PROGRESS_KEY,
    PROMETHEUS_LINK_KEY,
    RETURN_KEY,
    ROLLOUT_OPERATORS,
    VERDICT_KEY,
    Rollout,
    RunRow,
    TaskRow,
    UiLinks,
    assemble,
    classify,
    marks_rollout,
)

log = logging.getLogger(__name__)

_XCOM_KEYS = (
    RETURN_KEY,
    VERDICT_KEY,
    PROMETHEUS_LINK_KEY,
    DASHBOARD_LINK_KEY,
    PROGRESS_KEY,
    ANALYSIS_KEY,
    APPROVAL_KEY,
)


@dataclass(frozen=True)
class Access:
    """What a user may read: DAG ids, and among them those whose XComs are readable."""

    dag_ids: frozenset[str]
    xcom_dag_ids: frozenset[str]


def _rollout_task_clause() -> Any:
    # Cheap pre-filter in SQL; classify() makes the exact decision in Python.
    return or_(
        TaskInstance.operator.in_(sorted(ROLLOUT_OPERATORS)),
        TaskInstance.task_id.like("%step\\_%.set\\_weight", escape="\\"),
        TaskInstance.task_id.like("%step\\_%.analyze", escape="\\"),
    )


def find_rollout_runs(
    session: Session, access: Access, *, dag_id: str | None = None, limit: int = 25
) -> list[RunRow]:
    """The most recent DAG runs that contain a canary rollout, newest first."""
    dag_ids = access.dag_ids if dag_id is None else access.dag_ids & {dag_id}
    if not dag_ids:
        return []
    has_rollout = (
        select(TaskInstance.dag_id, TaskInstance.run_id)
        .where(TaskInstance.dag_id.in_(sorted(dag_ids)), _rollout_task_clause())
        .distinct()
        .subquery()
    )
    stmt = (
        select(
            DagRun.dag_id,
            DagRun.run_id,
            DagRun.state,
            DagRun.run_type,
            DagRun.logical_date,
            DagRun.start_date,
            DagRun.end_date,
        )
        .join(
            has_rollout,
            and_(has_rollout.c.dag_id == DagRun.dag_id, has_rollout.c.run_id == DagRun.run_id),
        )
        .order_by(DagRun.run_after.desc(), DagRun.id.desc())
        .limit(limit)
    )
    return [RunRow(*row) for row in session.execute(stmt).all()]


def get_run(session: Session, dag_id: str, run_id: str) -> RunRow | None:
    row = session.execute(
        select(
            DagRun.dag_id,
            DagRun.run_id,
            DagRun.state,
            DagRun.run_type,
            DagRun.logical_date,
            DagRun.start_date,
            DagRun.end_date,
        ).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)
    ).first()
    return RunRow(*row) if row is not None else None


def load_rollouts(
    session: Session, runs: Collection[RunRow], access: Access, links: UiLinks
) -> list[Rollout]:
    """Assemble every rollout group in ``runs``; XComs only for DAGs whose XComs are readable."""
    if not runs:
        return []
    keys = [(run.dag_id, run.run_id) for run in runs]
    tasks: dict[tuple[str, str], list[TaskRow]] = defaultdict(list)
    for row in session.execute(
        select(
            TaskInstance.dag_id,
            TaskInstance.run_id,
            TaskInstance.task_id,
            TaskInstance.operator,
            TaskInstance.state,
            TaskInstance.start_date,
            TaskInstance.end_date,
        ).where(
            tuple_(TaskInstance.dag_id, TaskInstance.run_id).in_(keys),
            TaskInstance.map_index == -1,
        )
    ).all():
        task = TaskRow(*row)
        if classify(task.task_id, task.operator) is not None:
            tasks[(task.dag_id, task.run_id)].append(task)

    xcoms: dict[tuple[str, str], dict[str, dict[str, Any]]] = defaultdict(lambda: defaultdict(dict))
    readable = [key for key in keys if key[0] in access.xcom_dag_ids]
    if readable:
        for dag_id, run_id, task_id, key, value in session.execute(
            select(
                XComModel.dag_id,
                XComModel.run_id,
                XComModel.task_id,
                XComModel.key,
                XComModel.value,
            ).where(
                tuple_(XComModel.dag_id, XComModel.run_id).in_(readable),
                XComModel.key.in_(_XCOM_KEYS),
                XComModel.map_index == -1,
            )
        ).all():
            xcoms[(dag_id, run_id)][task_id][key] = _decode(value)

    rollouts: list[Rollout] = []
    for run in runs:
        run_tasks = tasks.get((run.dag_id, run.run_id), [])
        # Only groups with a step task or one of our operators: a "promote" in some other
        # task group of the same run is not a second rollout.
        groups = sorted(
            {
                found.group
                for task in run_tasks
                if (found := classify(task.task_id, task.operator))
                and marks_rollout(found, task.operator)
            }
        )
        for group in groups:
            try:
                rollout = assemble(
                    run,
                    group,
                    run_tasks,
                    xcoms.get((run.dag_id, run.run_id), {}),
                    links,
                    xcom_hidden=run.dag_id not in access.xcom_dag_ids,
                )
            except Exception as error:  # one odd run must not take the whole page down
                log.exception("could not assemble rollout %s/%s/%s", run.dag_id, run.run_id, group)
                rollout = Rollout.unreadable(
                    run, group, links, f"could not read this rollout: {error}"
                )
            rollouts.append(rollout)
    return rollouts


class _Undecodable:
    """Stands in for an XCom value that could not be decoded, so the page can say so."""

    def __init__(self, error: str) -> None:
        self.error = error

    def __repr__(self) -> str:
        return f"<undecodable XCom: {self.error}>"


def _decode(value: Any) -> Any:
    try:
        return XComModel.deserialize_value(_Result(value))
    except Exception as error:  # a custom XCom backend or corrupt row must not break the page
        log.warning("could not decode an XCom value: %s", error)
        return _Undecodable(str(error))


@dataclass(frozen=True)
class _Result:
    """The shape ``XComModel.deserialize_value`` reads (a row with ``.value``)."""

    value: Any
