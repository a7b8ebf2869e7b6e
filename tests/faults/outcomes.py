"""The fault suite's record: one JSON line per fault test in ``artifacts/fault-outcomes.jsonl``.

Each row says which fault was injected and when (the rollout's phase or step), the verdict the
rollout reached, the final traffic split read from the VirtualService, the seconds from the
fault to a safe state (all traffic on one version, or the run finished), and whether any record
was lost, with what was checked. ``benchmarks/faults.py`` prints the rows as a table.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
OUTCOMES = REPO / "artifacts" / "fault-outcomes.jsonl"


def split_of(virtual_service: Mapping[str, Any]) -> dict[str, int]:
    """The weighted route's split as ``{subset: weight}`` (1..100), from a VirtualService.

    The weighted route is the http route without ``match`` (header routes for testers match a
    header and send them to one version). A single destination without a weight gets 100,
    as in Istio; a destination at weight 0 receives nothing and is left out. An object with
    no such route gives ``{}``.
    """
    for route in virtual_service.get("spec", {}).get("http") or []:
        if route.get("match"):
            continue
        destinations = route.get("route") or []
        split: dict[str, int] = {}
        for destination in destinations:
            subset = str(destination.get("destination", {}).get("subset", "?"))
            default = 100 if len(destinations) == 1 else 0
            split[subset] = split.get(subset, 0) + int(destination.get("weight", default))
        return {subset: weight for subset, weight in split.items() if weight}
    return {}


@dataclass
class Outcome:
    """One fault test's result; ``records_lost`` is True when any checked record was missing."""

    fault: str
    injected_at: str
    verdict: str
    final_split: dict[str, int]
    seconds_to_safe: float | None
    records_lost: bool
    records_checked: str
    test: str = ""
    run_id: str = ""
    recorded_at: float = field(default_factory=time.time)


def record(outcome: Outcome, path: Path = OUTCOMES) -> None:
    """Append ``outcome`` as one JSON line to ``path`` (default ``artifacts/fault-outcomes.jsonl``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as out:
        out.write(json.dumps(asdict(outcome), sort_keys=True) + "\n")


def read(path: Path = OUTCOMES) -> list[Outcome]:
    """Every recorded outcome, oldest first."""
    if not path.is_file():
        return []
    return [
        Outcome(**json.loads(line))
        for line in path.read_text(encoding="utf-8").splitlines()
        if line.strip()
    ]
