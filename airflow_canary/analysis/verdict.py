"""The outcome of an analysis poll: one result per check and the combined verdict."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from airflow_canary.analysis.values import AnalysisError, Status


def _json_number(value: float | None) -> float | None:
    # JSON has no NaN or infinity; an unbounded statistic is reported as missing.
    if value is None or not math.isfinite(value):
        return None
    return float(value)


@dataclass(frozen=True)
class CheckResult:
    """How one check stands at one poll, with the numbers and a sentence behind it."""

    name: str
    status: Status
    canary_value: float | None
    stable_value: float | None
    canary_requests: int
    stable_requests: int
    statistic: float | None
    p_value: float | None
    message: str
    #: requests callers' sidecars answered themselves (503 UH/UF/URX) since the step began,
    #: headed for either arm; error-rate checks count them, others report 0
    unreachable_requests: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "canary_value": _json_number(self.canary_value),
            "stable_value": _json_number(self.stable_value),
            "canary_requests": self.canary_requests,
            "stable_requests": self.stable_requests,
            "statistic": _json_number(self.statistic),
            "p_value": _json_number(self.p_value),
            "message": self.message,
            "unreachable_requests": self.unreachable_requests,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CheckResult:
        try:
            return cls(
                name=data["name"],
                status=Status(data["status"]),
                canary_value=data.get("canary_value"),
                stable_value=data.get("stable_value"),
                canary_requests=int(data.get("canary_requests", 0)),
                stable_requests=int(data.get("stable_requests", 0)),
                statistic=data.get("statistic"),
                p_value=data.get("p_value"),
                message=data.get("message", ""),
                unreachable_requests=int(data.get("unreachable_requests") or 0),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AnalysisError(f"not a check result: {data!r} ({exc})") from exc


@dataclass(frozen=True)
class Verdict:
    """The analysis's answer at one poll; ``final`` once PASS or FAIL is decided."""

    status: Status
    final: bool
    reason: str
    checks: tuple[CheckResult, ...]
    polls: int
    elapsed_seconds: float
    judge: str = "sequential"

    def to_dict(self) -> dict[str, Any]:
        """The ``verdict`` JSON of docs/architecture.md; the driver adds wall-clock fields."""
        return {
            "verdict": self.status.value,
            "final": self.final,
            "judge": self.judge,
            "reason": self.reason,
            "checks": [check.to_dict() for check in self.checks],
            "polls": self.polls,
            "elapsed_seconds": self.elapsed_seconds,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Verdict:
        """Rebuild from ``to_dict()`` output; extra keys (timestamps, window) are ignored."""
        try:
            return cls(
                status=Status(data["verdict"]),
                final=bool(data["final"]),
                reason=str(data["reason"]),
                checks=tuple(CheckResult.from_dict(c) for c in data.get("checks", ())),
                polls=int(data.get("polls", 0)),
                elapsed_seconds=float(data.get("elapsed_seconds", 0.0)),
                judge=str(data.get("judge", "sequential")),
            )
        except (KeyError, ValueError, TypeError) as exc:
            raise AnalysisError(f"not a verdict: {data!r} ({exc})") from exc
