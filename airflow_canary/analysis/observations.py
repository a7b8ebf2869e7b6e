"""Cleaning raw samples into per-check observations: counter deltas, resets, bad numbers."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from airflow_canary.analysis.checks import Check
from airflow_canary.analysis.values import Arm


def clean_number(sample: object) -> float | None:
    """A finite, non-negative float, or None for no data (None, NaN, infinity, negative)."""
    if isinstance(sample, bool) or not isinstance(sample, (int, float)):
        return None
    value = float(sample)
    if not math.isfinite(value) or value < 0:
        return None
    return value


def clean_value(sample: object) -> float | None:
    """A finite float (may be negative, e.g. a custom query), or None."""
    if isinstance(sample, bool) or not isinstance(sample, (int, float)):
        return None
    value = float(sample)
    return value if math.isfinite(value) else None


def clean_series(sample: object) -> tuple[float, ...]:
    """The finite points of a range sample; NaN (e.g. 0/0 in an idle step) is dropped."""
    if not isinstance(sample, (list, tuple)):
        return ()
    return tuple(v for v in (clean_value(x) for x in sample) if v is not None)


def advance_counter(
    track: dict[str, Any] | None, raw: object, ceiling: float | None = None
) -> dict[str, Any]:
    """Fold one cumulative reading into ``{"last", "total", "seen"}``.

    ``total`` is the increase since the first reading. An absent series counts as zero
    until it first appears (a counter nobody incremented has not been created yet); after
    that, absence or a bad number (NaN, negative) is no data and changes nothing.

    ``ceiling`` is the most this counter can have risen since the previous reading: the
    increase, over the same interval, of the counter it counts a subset of (an arm's bad
    requests are a subset of its requests). A rise above it cannot all be new: a series was
    missing from the previous reading (a pod's scrape gap, read as 0 through an
    ``or vector(0)`` fallback) and is back with its history. The reading becomes the new
    reference and the interval adds zero, as for a restart below; counting it would add the
    series' whole history to the comparison.

    A reading below the previous one means a pod restarted and its counters began again.
    The readings are sums over pods, so the drop says nothing about how many events the
    restarted pod served since: the interval adds zero and the new reading becomes the
    reference. That loses at most one poll of one pod, where counting the whole reading
    (what ``increase()`` does per series) would add every other pod's history.
    """
    value = clean_number(raw)
    if track is None:
        return {"last": value or 0.0, "total": 0.0, "seen": value is not None}
    if value is None:
        return dict(track)
    last = float(track["last"])
    step = value - last if value >= last else 0.0
    if ceiling is not None and step > ceiling:
        step = 0.0
    return {"last": value, "total": float(track["total"]) + step, "seen": True}


def advance_counters(
    tracks: Mapping[str, dict[str, Any]],
    samples: Mapping[str, object],
    subsets: Mapping[str, str],
) -> dict[str, dict[str, Any]]:
    """Fold one poll's cumulative readings (by query id) into their tracks (``advance_counter``).

    ``subsets`` maps the id of a counter that counts a subset of another's events (an arm's
    bad requests) to that other counter's id (the arm's requests). Such a counter's rise in
    the interval is bounded by the other's rise (the ``ceiling`` of ``advance_counter``), when
    the other has a reading at this poll. Returns new tracks for every id in ``samples``.
    """
    out = {
        qid: advance_counter(tracks.get(qid), raw)
        for qid, raw in samples.items()
        if qid not in subsets
    }
    for qid, parent in subsets.items():
        if qid not in samples:
            continue
        ceiling = None
        before = tracks.get(parent)
        if before is not None and parent in out and clean_number(samples.get(parent)) is not None:
            ceiling = float(out[parent]["total"]) - float(before["total"])
        out[qid] = advance_counter(tracks.get(qid), samples[qid], ceiling)
    return out


def parse_le(text: str) -> float | None:
    """A histogram bucket bound from its ``le`` label: ``"250"``, ``"250.0"``, ``"+Inf"``.

    Prometheus 2 keeps the exporter's spelling (Envoy writes ``250``, Python clients
    ``250.0``); Prometheus 3 normalises classic-histogram ``le`` to the float form on
    ingestion. Both name the same bound. Anything else is None (not a bucket bound).
    """
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if not math.isnan(value) and value > 0 else None


def format_le(bound: float) -> str:
    """A bucket bound the way people write it: ``250``, ``0.5``, ``+Inf``."""
    return "+Inf" if math.isinf(bound) else f"{bound:.10g}"


def advance_buckets(tracks: dict[str, Any] | None, raw: object) -> dict[str, Any]:
    """Fold one ``sum by (le)`` reading into ``{le: counter track}`` (see ``advance_counter``).

    Keys are the bounds formatted by ``format_le``, so ``"250"`` and ``"250.0"`` are one
    bucket. A bucket first seen after the baseline counts from zero, like any new counter.
    """
    first = tracks is None
    tracks = dict(tracks or {})
    readings: dict[str, float] = {}
    if isinstance(raw, dict):
        for le, value in raw.items():
            bound = parse_le(le)
            number = clean_number(value)
            if bound is not None and number is not None:
                key = format_le(bound)
                readings[key] = readings.get(key, 0.0) + number
    for key, value in readings.items():
        if key in tracks:
            tracks[key] = advance_counter(tracks[key], value)
        elif first:
            tracks[key] = advance_counter(None, value)
        else:  # a bucket born after the baseline: its whole reading is new
            tracks[key] = advance_counter({"last": 0.0, "total": 0.0, "seen": True}, value)
    return tracks


@dataclass(frozen=True)
class Counts:
    """Events of one arm over some interval: all of them, and the bad ones."""

    requests: float
    bad: float | None = None

    @property
    def rate(self) -> float | None:
        if self.bad is None or self.requests <= 0:
            return None
        return min(1.0, max(0.0, self.bad / self.requests))


@dataclass(frozen=True)
class ArmObservation:
    """What one arm showed: counts since the step started and over the judge's window."""

    since_start: Counts
    window: Counts
    seen: bool
    value: float | None = None
    series: tuple[float, ...] = ()
    #: Requests at or below each bucket bound since the step started (latency checks).
    buckets: Mapping[float, float] = field(default_factory=dict)
    #: Extra counters a check asked for, by role, since the step started.
    extra: Mapping[str, float] = field(default_factory=dict)

    def slower_than(self, bound: float) -> Counts:
        """Requests slower than ``bound`` (a bucket bound of this arm) among all of them."""
        total = self.since_start.requests
        return Counts(total, max(0.0, min(total, total - self.buckets[bound])))


@dataclass(frozen=True)
class Observation:
    """Everything a judge needs to classify one check at one poll."""

    check: Check
    canary: ArmObservation
    stable: ArmObservation
    elapsed_seconds: float
    bake_done: bool
    has_series: bool = False

    def arm(self, arm: Arm) -> ArmObservation:
        return self.canary if arm is Arm.CANARY else self.stable
