"""Checks of Istio DestinationRule documents against a rollout's subsets."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from airflow_canary.routing.values import RouteTarget, RoutingError


def defined_subsets(destination_rule: Mapping[str, Any]) -> list[str]:
    """Names of the subsets the DestinationRule defines, in document order."""
    spec = destination_rule.get("spec")
    subsets = spec.get("subsets") if isinstance(spec, Mapping) else None
    if not isinstance(subsets, list):
        return []
    return [s["name"] for s in subsets if isinstance(s, Mapping) and isinstance(s.get("name"), str)]


def validate_subsets(destination_rule: Mapping[str, Any], target: RouteTarget) -> None:
    """Raise RoutingError unless the stable and canary subsets are both defined."""
    defined = defined_subsets(destination_rule)
    missing = [s for s in (target.stable_subset, target.canary_subset) if s not in defined]
    if not missing:
        return
    metadata = destination_rule.get("metadata")
    name = metadata.get("name") if isinstance(metadata, Mapping) else None
    listed = ", ".join(repr(s) for s in defined) or "none"
    which = " and ".join(repr(s) for s in missing)
    noun = "subsets" if len(missing) > 1 else "subset"
    raise RoutingError(
        f"DestinationRule {name or '<unnamed>'!r} does not define {noun} {which}; "
        f"its subsets are: {listed}"
    )
