"""Deployment readiness, judged from the Deployment's status and explained from its pods."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Readiness:
    ready: bool
    message: str


def deployment_readiness(deployment: Mapping[str, Any]) -> Readiness:
    """Ready when the controller saw the current generation and every wanted replica is available."""
    meta = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    name = meta.get("name", "?")
    wanted = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
    generation = int(meta.get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0)
    available = int(status.get("availableReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0) if "updatedReplicas" in status else available
    if observed < generation:
        return Readiness(
            False,
            f"Deployment {name!r}: generation {generation} not yet observed (observed {observed})",
        )
    if available < wanted or updated < wanted:
        return Readiness(
            False,
            f"Deployment {name!r}: {available}/{wanted} replicas available, {updated} updated",
        )
    return Readiness(True, f"Deployment {name!r}: {available}/{wanted} replicas available")


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
