"""Pairing prediction records: v1's and v2's answers to the same request, joined by request id.

A pair is a stable record and a canary record with the same key (request id and instance) whose
times are at most ``window_seconds`` apart. Nothing is dropped silently: every record ends up in
a pair or in one of the counted outcomes below, and ``Pairing.accounted`` says so.

- ``unpaired_stable`` / ``unpaired_canary``: no partner within the window (a canary that failed
  on a mirrored request leaves its stable record unpaired; so does a mirror below 100%);
- ``pending_stable`` / ``pending_canary``: no partner *yet*, but younger than the window at the
  newest record seen, so the partner may still arrive (mirrored copies land after the answer);
- ``input_mismatch``: a partner was found but the input hashes differ (not the same input, so
  not comparable);
- ``duplicates``: a second record of a version for a key already seen (the first is kept);
- ``other_versions``: records of neither version;
- ``before_phase``: records older than ``since`` (a log kept across phases holds them).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from airflow_canary.analysis.shadow.records import PredictionRecord
from airflow_canary.analysis.values import AnalysisError

#: How many request ids of each unpaired kind a Pairing keeps as examples.
EXAMPLES = 5


@dataclass(frozen=True)
class Pair:
    """v1's (stable) and v2's (canary) record for the same request instance."""

    stable: PredictionRecord
    canary: PredictionRecord

    @property
    def request_id(self) -> str:
        return self.stable.request_id


@dataclass(frozen=True)
class Pairing:
    """The pairs, and a count (with a few request ids) of every record that is not in one."""

    pairs: tuple[Pair, ...]
    stable_records: int
    canary_records: int
    unpaired_stable: int = 0
    unpaired_canary: int = 0
    pending_stable: int = 0
    pending_canary: int = 0
    input_mismatch: int = 0
    duplicates: int = 0
    other_versions: int = 0
    before_phase: int = 0
    unpaired_examples: tuple[str, ...] = ()

    @property
    def accounted(self) -> bool:
        """Every record read is in a pair or in exactly one counted outcome."""
        stable = len(self.pairs) + self.unpaired_stable + self.pending_stable + self.input_mismatch
        canary = len(self.pairs) + self.unpaired_canary + self.pending_canary + self.input_mismatch
        return stable + canary + self.duplicates == self.stable_records + self.canary_records

    def describe(self) -> str:
        """``2,310 pairs; unpaired: 12 of v1's records, 0 of v2's; ...`` (only what is non-zero)."""
        parts = [
            f"{len(self.pairs):,} pair(s) of {self.stable_records:,} v1 and {self.canary_records:,} v2 record(s)"
        ]
        for count, what in (
            (self.unpaired_stable, "stable record(s) without a canary answer"),
            (self.unpaired_canary, "canary record(s) without a stable answer"),
            (self.pending_stable + self.pending_canary, "record(s) still within the window"),
            (self.input_mismatch, "pair(s) with different input hashes, not compared"),
            (self.duplicates, "duplicate record(s), first kept"),
            (self.other_versions, "record(s) of other versions"),
            (self.before_phase, "record(s) from before the phase, not used"),
        ):
            if count:
                parts.append(f"{count:,} {what}")
        if self.unpaired_examples:
            parts.append(f"e.g. unpaired {', '.join(self.unpaired_examples)}")
        return "; ".join(parts)

    def to_dict(self) -> dict[str, object]:
        return {
            "pairs": len(self.pairs),
            "stable_records": self.stable_records,
            "canary_records": self.canary_records,
            "unpaired_stable": self.unpaired_stable,
            "unpaired_canary": self.unpaired_canary,
            "pending": self.pending_stable + self.pending_canary,
            "input_mismatch": self.input_mismatch,
            "duplicates": self.duplicates,
            "other_versions": self.other_versions,
            "before_phase": self.before_phase,
            "unpaired_examples": list(self.unpaired_examples),
        }


def pair_records(
    records: Iterable[PredictionRecord],
    *,
    stable_version: str,
    canary_version: str,
    window_seconds: float,
    now: datetime | None = None,
    since: datetime | None = None,
) -> Pairing:
    """Join stable and canary records by (request id, instance) within ``window_seconds``.

    ``records`` may hold both logs together; each record's ``version`` says which side it is.
    ``now`` (default: the newest record's time) decides which lone records are still pending;
    records older than ``since`` (timezone-aware) are counted as ``before_phase`` and not used.
    Raises AnalysisError for equal versions or a window that is not a positive number of seconds.
    """
    if stable_version == canary_version:
        raise AnalysisError(f"stable and canary versions must differ, both are {stable_version!r}")
    if (
        isinstance(window_seconds, bool)
        or not isinstance(window_seconds, (int, float))
        or not math.isfinite(window_seconds)
        or window_seconds <= 0
    ):
        raise AnalysisError(
            f"pairing window must be a positive number of seconds, got {window_seconds!r}"
        )
    window = timedelta(seconds=window_seconds)
    sides: dict[str, dict[tuple[str, int], PredictionRecord]] = {
        stable_version: {},
        canary_version: {},
    }
    counts = {stable_version: 0, canary_version: 0}
    duplicates = others = before = 0
    newest: datetime | None = None
    for record in records:
        side = sides.get(record.version)
        if side is None:
            others += 1
            continue
        if since is not None and record.time < since:
            before += 1
            continue
        counts[record.version] += 1
        if record.key in side:
            duplicates += 1
            continue
        side[record.key] = record
        if newest is None or record.time > newest:
            newest = record.time
    reference = now or newest
    horizon = reference - window if reference is not None else None
    stable_side, canary_side = sides[stable_version], sides[canary_version]
    pairs: list[Pair] = []
    mismatch = unpaired_s = unpaired_c = pending_s = pending_c = 0
    examples: list[str] = []

    def lone(record: PredictionRecord) -> bool:
        """True when a lone record is still pending (its partner may arrive)."""
        return horizon is not None and record.time > horizon

    for key, stable in stable_side.items():
        canary = canary_side.get(key)
        if canary is not None and abs(canary.time - stable.time) <= window:
            if canary.input_hash != stable.input_hash:
                mismatch += 1
            else:
                pairs.append(Pair(stable, canary))
            continue
        if lone(stable):
            pending_s += 1
        else:
            unpaired_s += 1
            if len(examples) < EXAMPLES:
                examples.append(stable.request_id)
    for key, canary in canary_side.items():
        stable_match = stable_side.get(key)
        if stable_match is not None and abs(canary.time - stable_match.time) <= window:
            continue  # paired or counted as a mismatch above
        if lone(canary):
            pending_c += 1
        else:
            unpaired_c += 1
            if len(examples) < 2 * EXAMPLES:
                examples.append(canary.request_id)
    pairs.sort(key=lambda p: (p.stable.time, p.stable.key))
    return Pairing(
        pairs=tuple(pairs),
        stable_records=counts[stable_version],
        canary_records=counts[canary_version],
        unpaired_stable=unpaired_s,
        unpaired_canary=unpaired_c,
        pending_stable=pending_s,
        pending_canary=pending_c,
        input_mismatch=mismatch,
        duplicates=duplicates,
        other_versions=others,
        before_phase=before,
        unpaired_examples=tuple(examples),
    )
