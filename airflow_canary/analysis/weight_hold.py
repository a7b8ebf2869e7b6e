"""Whether a step's canary weight held while it was judged: the route's split and the observed share.

Two independent signs that another writer changed the traffic under a step:

* **The VirtualService's split.** Every poll compares the canary percentage of each managed
  route (read from the VirtualService) with the step's weight. Any difference is a change.
* **The observed share of requests.** Envoy picks a weighted destination independently per
  request, so with ``n`` requests on the two arms and the canary at weight ``w`` the canary's
  count ``X`` is Binomial(n, w) (Istio ``RouteDestination.weight``). Requests the product's
  header route sends to the canary come on top (they go there whatever the weight), so header
  traffic can only *raise* the canary's share: the test is one-sided, for a deficit only,
  ``P(X <= k | n, w) = scipy.stats.binom.cdf(k, n, w)``. A canary with too many requests is
  never flagged, since header routing explains it.

  The counters are cumulative over the step, so the same data is looked at every poll; the
  false-alarm rate is held at ``alpha`` over the whole step with a Bonferroni bound over its
  polls (``alpha / max_polls`` per poll). Prometheus's ``increase()`` extrapolates, so counts
  are rounded to whole requests first.

  Requests that no canary pod could take (its pods restarting: Envoy answers the caller itself
  with 503 and response flag UH, UF or URX) reach no destination sidecar and are missing from
  the canary's count. Only the caller's sidecar reports them, with destination workload labels
  "unknown" (istio/istio#28387), so they cannot be told apart from the stable arm's. They are
  counted as the canary's: the test only ever gets more lenient, and a canary that was down
  is not mistaken for a changed weight (the error checks judge the 503s).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from airflow_canary.analysis.values import AnalysisError


@dataclass(frozen=True)
class ShareTest:
    """The one-sided binomial test of the canary's request count against the step's weight."""

    canary_requests: int
    total_requests: int
    weight_percent: float
    p_value: float
    threshold: float

    @property
    def observed_percent(self) -> float:
        return 100.0 * self.canary_requests / self.total_requests if self.total_requests else 0.0

    @property
    def deficit(self) -> bool:
        return self.p_value < self.threshold


@dataclass(frozen=True)
class WeightHold:
    """The weight a step holds and how surely a deficit must show before the step ends.

    :param weight_percent: the canary weight the step wrote, 0..100
    :param alpha: chance over the whole step of calling an unchanged weight changed
    :param max_polls: how many polls the step can take (Bonferroni denominator)
    """

    weight_percent: float
    alpha: float = 0.001
    max_polls: int = 100

    def __post_init__(self) -> None:
        if isinstance(self.weight_percent, bool) or not 0 <= self.weight_percent <= 100:
            raise AnalysisError(
                f"canary_weight must be a percentage 0..100, got {self.weight_percent!r}"
            )
        if not 0 < self.alpha < 1:
            raise AnalysisError(f"weight-hold alpha must be in (0, 1), got {self.alpha!r}")
        if self.max_polls < 1:
            raise AnalysisError(f"max_polls must be at least 1, got {self.max_polls!r}")

    @property
    def poll_threshold(self) -> float:
        return self.alpha / self.max_polls

    def changed_routes(self, canary_percent_by_route: Mapping[str, float]) -> dict[str, float]:
        """The routes whose canary percentage is not the step's weight, with what they have."""
        return {
            route: percent
            for route, percent in canary_percent_by_route.items()
            if not math.isclose(percent, self.weight_percent, abs_tol=1e-9)
        }

    def share_test(
        self, canary_requests: float, stable_requests: float, unreachable_requests: float = 0.0
    ) -> ShareTest:
        """Test the observed canary count for a deficit against the weight (see module doc).

        :param canary_requests: requests the canary's pods received
        :param stable_requests: requests the stable arm's pods received
        :param unreachable_requests: requests callers' sidecars answered themselves (503
            UH/UF/URX) that may have been meant for either arm; counted as the canary's
        """
        canary = max(0, round(canary_requests)) + max(0, round(unreachable_requests))
        total = canary + max(0, round(stable_requests))
        weight = self.weight_percent / 100.0
        if total == 0 or weight == 0:
            p_value = 1.0  # no requests, or nothing expected: no evidence of a deficit
        else:
            from scipy import stats  # loaded when a step is judged, not when a DAG is parsed

            p_value = float(stats.binom.cdf(canary, total, weight))
        return ShareTest(canary, total, self.weight_percent, p_value, self.poll_threshold)


def describe_change(
    weight_percent: float, changed: Mapping[str, float], elapsed_seconds: float
) -> str:
    """``canary weight changed from 10% to 0% by another writer after 45 s`` (+ the routes)."""
    first = next(iter(changed.values()))
    text = (
        f"canary weight changed from {_pct(weight_percent)} to {_pct(first)} by another writer "
        f"after {elapsed_seconds:.0f} s"
    )
    if len(changed) > 1 or set(changed.values()) != {first}:
        text += " (" + "; ".join(f"{r}: {_pct(p)}" for r, p in changed.items()) + ")"
    elif changed:
        text += f" (route {next(iter(changed))})"
    return text


def describe_deficit(test: ShareTest, elapsed_seconds: float) -> str:
    """Why a share deficit ends the step, with the counts and the bound."""
    return (
        f"canary received {test.observed_percent:.2f}% of requests ({test.canary_requests:,} of "
        f"{test.total_requests:,}) at a {_pct(test.weight_percent)} weight after "
        f"{elapsed_seconds:.0f} s: fewer than the weight allows (binomial P(X<={test.canary_requests}) "
        f"= {test.p_value:.2g} < {test.threshold:.2g}); another writer or a route outside the "
        f"rollout changed the split"
    )


def _pct(value: float) -> str:
    return f"{value:g}%"
