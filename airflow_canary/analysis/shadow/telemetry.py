"""v2's mirrored requests from Istio telemetry: cumulative counters, the phase's first poll the baseline.

The shadow sensor runs ``queries()`` against Prometheus at every poll and hands the readings to
``observe()``. Counters are read raw and cumulative (``sum(istio_requests_total{...})``), as the
live analysis reads them (``airflow_canary.analysis.checks``), and each poll's increase is folded
in with ``advance_counters``: the first successful poll is the baseline, a pod's restart adds
nothing instead of its whole history, and v2's bad requests never rise faster than its
requests (a series back from a scrape gap adds nothing instead of its whole history). So the counts are exactly the requests since the phase's
first poll, with no range window to extrapolate.

A reading where v1's counter is absent too comes from a Prometheus with no data at that time
(a gap in its history, or no traffic at all): it is not taken as the baseline, or the next poll
would count every request v2 ever served as mirrored. A query that fails makes the poll
INCONCLUSIVE; ``max_inconclusive_polls`` in a row FAIL the phase, and a query Prometheus
rejects (bad PromQL) FAILs it at once, as in the live analysis.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from airflow_canary.analysis.observations import advance_counters, clean_number
from airflow_canary.analysis.shadow.checks import MirroredRequestsCheck, ShadowCheck
from airflow_canary.analysis.values import (
    Arms,
    QueryFailure,
    query_failures,
    require_max_inconclusive_polls,
)


@dataclass(frozen=True)
class MirroredCounts:
    """v2's mirrored requests since the phase's baseline, and the bad ones among them.

    ``bad`` is None when its series never answered while requests were counted (e.g. a
    histogram without the bucket bound a latency check counts against): no data, not zero.
    """

    requests: float
    bad: float | None


@dataclass(frozen=True)
class TelemetryPoll:
    """What one poll of Prometheus gave the shadow judge.

    ``counts`` (by check name) are empty until the baseline is taken; ``failure`` is this
    poll's failed query, ``failed_polls`` the failures in a row, ``rejected`` a query
    Prometheus refused (permanent).
    """

    counts: Mapping[str, MirroredCounts] = field(default_factory=dict)
    baseline: bool = False
    failure: str | None = None
    failed_polls: int = 0
    max_failed_polls: int = 3
    rejected: str | None = None
    note: str | None = None

    @property
    def exhausted(self) -> bool:
        """Whether Prometheus failed ``max_failed_polls`` polls in a row."""
        return self.failed_polls >= self.max_failed_polls


def _query_id(check: ShadowCheck, role: str) -> str:
    return f"{check.name}/{role}"


class MirroredTelemetry:
    """The counters of the shadow phase's mirrored-requests checks, poll after poll.

    :param arms: the namespace and the two versions (v2's requests are counted, v1's only
        tell an idle Prometheus from one with data)
    :param checks: the phase's checks; those that are not ``MirroredRequestsCheck`` are ignored
    :param max_inconclusive_polls: failed polls in a row that FAIL the phase, an integer >= 1
    :raises AnalysisError: naming a bad value
    """

    def __init__(
        self, arms: Arms, checks: Sequence[ShadowCheck], max_inconclusive_polls: int = 3
    ) -> None:
        require_max_inconclusive_polls(max_inconclusive_polls)
        self.arms = arms
        self.checks = tuple(c for c in checks if isinstance(c, MirroredRequestsCheck))
        self.max_inconclusive_polls = max_inconclusive_polls
        self._queries = {
            _query_id(check, role): promql
            for check in self.checks
            for role, promql in check.counters(arms).items()
        }
        self._tracks: dict[str, dict[str, Any]] = {}
        self._failed = 0
        self._last = TelemetryPoll(max_failed_polls=max_inconclusive_polls)

    def queries(self) -> dict[str, str]:
        """The instant queries of every poll, by id (``<check>/<role>``); evaluate them at one
        instant."""
        return dict(self._queries)

    def observe(self, samples: Mapping[str, float | None | QueryFailure]) -> TelemetryPoll:
        """Fold one poll's readings (a number, None for no series, or a ``QueryFailure``)."""
        failures, rejected = query_failures(self._queries, samples)
        if failures:
            self._failed += 1
            self._last = TelemetryPoll(
                counts=self._last.counts,
                baseline=self._last.baseline,
                failure=failures[0],
                failed_polls=self._failed,
                max_failed_polls=self.max_inconclusive_polls,
                rejected=rejected[0] if rejected else None,
            )
            return self._last
        self._failed = 0
        if not self._tracks and not self._has_data(samples):
            self._last = TelemetryPoll(
                max_failed_polls=self.max_inconclusive_polls,
                note=(
                    "no baseline yet: Prometheus has no request of either version at this time "
                    "(no traffic yet, or a gap in its history)"
                ),
            )
            return self._last
        subsets = {_query_id(c, "bad"): _query_id(c, "total") for c in self.checks}
        self._tracks.update(
            advance_counters(self._tracks, {qid: samples[qid] for qid in self._queries}, subsets)
        )
        counts = {}
        for check in self.checks:
            total = self._tracks[_query_id(check, "total")]
            bad = self._tracks[_query_id(check, "bad")]
            requests = float(total["total"])
            counts[check.name] = MirroredCounts(
                requests,
                min(float(bad["total"]), requests) if bad["seen"] or not total["seen"] else None,
            )
        self._last = TelemetryPoll(
            counts=counts, baseline=True, max_failed_polls=self.max_inconclusive_polls
        )
        return self._last

    def _has_data(self, samples: Mapping[str, Any]) -> bool:
        """Whether any counter of either version has a reading (absent v2 series are normal
        before its first mirrored request; absent v1 series too mean Prometheus had nothing)."""
        return any(
            clean_number(samples.get(_query_id(check, role))) is not None
            for check in self.checks
            for role in ("total", "stable")
        )
