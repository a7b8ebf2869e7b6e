"""The rollout plan: weight steps validated once, at DAG parse time or before the first traffic move."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass


class RolloutPlanError(ValueError):
    """A rollout parameter is invalid; the message names the value and what is expected."""


def validate_steps(steps: object, *, expected_count: int | None = None) -> tuple[int, ...]:
    """Return ``steps`` as a tuple of ints: strictly increasing, each in 1..100.

    Int-like strings (``"10"``, as rendered from a DAG param) are accepted; booleans, floats with a
    fraction and anything else are refused with a message naming the value.
    """
    if isinstance(steps, (str, bytes)) or not isinstance(steps, Sequence):
        raise RolloutPlanError(
            f"steps must be a list of integers in 1..100, strictly increasing (e.g. [1, 10, 50, 100]), got {steps!r}"
        )
    if not steps:
        raise RolloutPlanError("steps must contain at least one weight in 1..100, got []")
    weights: list[int] = []
    for raw in steps:
        weight = _as_int(raw)
        if weight is None or not 1 <= weight <= 100:
            raise RolloutPlanError(
                f"each step must be an integer in 1..100, got {raw!r} in steps {list(steps)!r}"
            )
        if weights and weight <= weights[-1]:
            raise RolloutPlanError(
                f"steps must be strictly increasing, got {weight} after {weights[-1]} in {list(steps)!r}"
            )
        weights.append(weight)
    if expected_count is not None and len(weights) != expected_count:
        raise RolloutPlanError(
            f"this rollout has {expected_count} steps, got {len(weights)} weights in {list(steps)!r}; "
            f"give exactly {expected_count} strictly increasing weights"
        )
    return tuple(weights)


def _as_int(raw: object) -> int | None:
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, str) and raw.strip().lstrip("+-").isdigit():
        return int(raw.strip())
    return None


@dataclass(frozen=True)
class RolloutPlan:
    """Steps of one rollout plus the names that tie traffic subsets to metric versions."""

    steps: tuple[int, ...]
    stable_subset: str = "v1"
    canary_subset: str = "v2"
    stable_version: str = "v1"
    canary_version: str = "v2"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", validate_steps(self.steps))
        for field in ("stable_subset", "canary_subset", "stable_version", "canary_version"):
            value = getattr(self, field)
            if not isinstance(value, str) or not value:
                raise RolloutPlanError(f"{field} must be a non-empty string, got {value!r}")
        if self.stable_subset == self.canary_subset:
            raise RolloutPlanError(
                f"stable_subset and canary_subset must differ, both are {self.stable_subset!r}"
            )
