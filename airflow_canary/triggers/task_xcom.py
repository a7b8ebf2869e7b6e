"""A waiting task's XComs written from the triggerer, where the running trigger has no task instance."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def waiting_task(context: Any) -> dict[str, Any] | None:
    """Where a trigger of this task writes its XComs: ``{"dag_id", "task_id", "run_id",
    "map_index"}`` of the context's task instance (JSON, as a trigger's kwargs must be), or None
    when the context has none."""
    ti = context.get("ti") if isinstance(context, Mapping) else None
    if ti is None:
        return None
    return {
        "dag_id": ti.dag_id,
        "task_id": ti.task_id,
        "run_id": ti.run_id,
        "map_index": getattr(ti, "map_index", -1),
    }


async def push_task_xcom(task: Mapping[str, Any], key: str, value: Any) -> None:
    """Store ``value`` as XCom ``key`` of ``task`` (from :func:`waiting_task`), off the event
    loop; the rollouts page reads it while the task is deferred."""
    from airflow.sdk.execution_time.xcom import XCom
    from asgiref.sync import sync_to_async

    await sync_to_async(XCom.set)(
        key=key,
        value=value,
        dag_id=task["dag_id"],
        task_id=task["task_id"],
        run_id=task["run_id"],
        map_index=int(task.get("map_index", -1)),
    )


__all__ = ["push_task_xcom", "waiting_task"]
