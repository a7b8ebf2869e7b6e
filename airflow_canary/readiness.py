"""Deployment readiness, judged from the Deployment's status the way ``kubectl rollout status`` does, and explained from its pods."""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

#: The Progressing condition's reason once ``spec.progressDeadlineSeconds`` passed without progress
#: (``TimedOutReason`` in k8s.io/kubectl/pkg/util/deployment).
PROGRESS_DEADLINE_EXCEEDED = "ProgressDeadlineExceeded"


class RolloutState(enum.Enum):
    """Where a Deployment's rollout stands: still going, finished, or stuck for good."""

    PROGRESSING = "progressing"
    COMPLETE = "complete"
    FAILED = "failed"


@dataclass(frozen=True)
class Readiness:
    """The verdict on one Deployment and the sentence ``kubectl rollout status`` would print."""

    state: RolloutState
    message: str

    @property
    def ready(self) -> bool:
        return self.state is RolloutState.COMPLETE

    @property
    def failed(self) -> bool:
        return self.state is RolloutState.FAILED


def _count(status: Mapping[str, Any], field: str) -> int:
    # The API server omits zero-valued status integers (``omitempty``): missing means 0.
    value = status.get(field)
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else 0


def progressing_condition(deployment: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The Deployment's ``Progressing`` condition, or None when the controller has not set one."""
    for condition in (deployment.get("status") or {}).get("conditions") or []:
        if isinstance(condition, Mapping) and condition.get("type") == "Progressing":
            return condition
    return None


def deployment_readiness(deployment: Mapping[str, Any]) -> Readiness:
    """Judge a Deployment exactly as ``kubectl rollout status`` does.

    The order of the checks is kubectl's ``DeploymentStatusViewer.Status``
    (k8s.io/kubectl/pkg/polymorphichelpers/rollout_status.go):

    1. ``status.observedGeneration < metadata.generation``: the controller has not seen the
       current spec yet (progressing);
    2. the ``Progressing`` condition has reason ``ProgressDeadlineExceeded``: failed, with the
       condition's message;
    3. ``status.updatedReplicas < spec.replicas``: new pods still to be created;
    4. ``status.replicas > status.updatedReplicas``: old pods pending termination (they still
       serve, and count in ``availableReplicas``, so availability alone says nothing);
    5. ``status.availableReplicas < status.updatedReplicas``: new pods not yet available;
    6. otherwise complete.

    Integer status fields the server omitted count as 0; a missing ``spec.replicas`` is skipped
    as kubectl does (the server defaults it to 1).
    """
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    generation = int(meta.get("generation") or 0)
    observed = _count(status, "observedGeneration")
    if generation > observed:
        return Readiness(
            RolloutState.PROGRESSING,
            f'Waiting for deployment "{name}" spec update to be observed '
            f"(generation {generation}, observed {observed})",
        )
    condition = progressing_condition(deployment)
    if condition is not None and condition.get("reason") == PROGRESS_DEADLINE_EXCEEDED:
        detail = condition.get("message") or ""
        return Readiness(
            RolloutState.FAILED,
            f'deployment "{name}" exceeded its progress deadline'
            + (f": {detail}" if detail else ""),
        )
    updated = _count(status, "updatedReplicas")
    replicas = _count(status, "replicas")
    available = _count(status, "availableReplicas")
    wanted = spec.get("replicas")
    if isinstance(wanted, int) and updated < wanted:
        return Readiness(
            RolloutState.PROGRESSING,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{updated} out of {wanted} new replicas have been updated",
        )
    if replicas > updated:
        return Readiness(
            RolloutState.PROGRESSING,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{replicas - updated} old replicas are pending termination",
        )
    if available < updated:
        return Readiness(
            RolloutState.PROGRESSING,
            f'Waiting for deployment "{name}" rollout to finish: '
            f"{available} of {updated} updated replicas are available",
        )
    return Readiness(
        RolloutState.COMPLETE,
        f'deployment "{name}" successfully rolled out ({available} available)',
    )


def describe_pods(pods: Iterable[Mapping[str, Any]]) -> str:
    """One line per pod: phase, readiness, restarts and the waiting/termination reason with its message."""
    lines = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        status = pod.get("status") or {}
        parts = [f"pod {meta.get('name', '?')}: {status.get('phase', 'Unknown')}"]
        for cs in status.get("containerStatuses") or []:
            state = cs.get("state") or {}
            detail = ""
            for key in ("waiting", "terminated"):
                if state.get(key):
                    reason = state[key].get("reason") or key
                    message = state[key].get("message")
                    detail = f"{reason}" + (f" ({message})" if message else "")
            parts.append(
                f"container {cs.get('name', '?')} ready={bool(cs.get('ready'))} "
                f"restarts={cs.get('restartCount', 0)}" + (f" {detail}" if detail else "")
            )
        if status.get("reason") or status.get("message"):
            parts.append(f"{status.get('reason', '')} {status.get('message', '')}".strip())
        lines.append("; ".join(parts))
    return "\n".join(lines) if lines else "no pods found"
