"""Traffic splits read exactly: each route's shares of its traffic, per destination subset.

Istio destination weights are relative: a route sends ``weight / sum(weights)`` of its
requests to each destination, any non-negative integers are allowed, and a route with a
single destination sends it everything whatever its ``weight`` says (Istio's
``VirtualService`` reference, ``RouteDestination.weight``). Shares are kept as exact
fractions; the JSON form gives percentages, an ``int`` when exact and otherwise a float with
enough digits that a live canary never reads as 0 (or a live stable as 100).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

Percent = int | float


def percent(share: Fraction) -> Percent:
    """``share`` (0..1) as a percentage: exact int when whole, else 4 decimals, never 0 or 100."""
    value = share * 100
    if value.denominator == 1:
        return int(value)
    rounded = round(float(value), 4)
    if rounded in (0.0, 100.0):
        # 1/100001 of the traffic is still traffic: keep every digit a float can hold.
        return float(value)
    return rounded


@dataclass(frozen=True)
class RouteSplit:
    """One route's shares of its traffic by destination key (a subset name, or ``host/subset``).

    ``route`` is the route's label: the name of an http route, else ``http[i]``, ``tcp[i]`` or
    ``tls[i]`` (Istio's tcp and tls routes have no names).
    """

    route: str
    protocol: str
    shares: tuple[tuple[str, Fraction], ...]

    def share(self, key: str) -> Fraction:
        return sum((s for k, s in self.shares if k == key), Fraction(0))

    def as_dict(self) -> dict[str, Any]:
        return {
            "route": self.route,
            "protocol": self.protocol,
            "split": {key: percent(share) for key, share in self.shares},
        }


@dataclass(frozen=True)
class TrafficSplit:
    """The split of every route of a VirtualService that sends to the rollout's subsets.

    ``as_dict()`` is the headline split: the stable and canary percentages of the route that
    sends the canary the largest share (so a single route still sending to a canary that was
    rolled back shows up, never hidden behind the others). ``routes`` lists each route.
    """

    stable_subset: str
    canary_subset: str
    routes: tuple[RouteSplit, ...]

    @property
    def headline(self) -> RouteSplit | None:
        if not self.routes:
            return None
        return max(self.routes, key=lambda r: r.share(self.canary_subset))

    @property
    def canary_share(self) -> Fraction:
        """The largest share any route sends to the canary subset (0 when no route does)."""
        head = self.headline
        return head.share(self.canary_subset) if head is not None else Fraction(0)

    @property
    def stable_share(self) -> Fraction:
        """The stable share of the headline route."""
        head = self.headline
        return head.share(self.stable_subset) if head is not None else Fraction(0)

    @property
    def canary_weight(self) -> Percent:
        return percent(self.canary_share)

    @property
    def stable_weight(self) -> Percent:
        return percent(self.stable_share)

    @property
    def uniform(self) -> bool:
        """Whether every route gives the canary (and stable) the same share."""
        pairs = {(r.share(self.stable_subset), r.share(self.canary_subset)) for r in self.routes}
        return len(pairs) <= 1

    def routes_sending_to(self, subset: str) -> list[str]:
        return [r.route for r in self.routes if r.share(subset) > 0]

    def as_dict(self) -> dict[str, Percent]:
        return {self.stable_subset: self.stable_weight, self.canary_subset: self.canary_weight}

    def routes_as_list(self) -> list[dict[str, Any]]:
        return [route.as_dict() for route in self.routes]

    def describe(self) -> str:
        """``http primary: v1 90% v2 10%; tcp[0]: v1 100%`` for logs and error messages."""
        if not self.routes:
            return "no route sends to the rollout's subsets"
        return "; ".join(
            (r.route if r.route.startswith(r.protocol + "[") else f"{r.protocol} {r.route}")
            + ": "
            + " ".join(f"{k} {v}%" for k, v in r.as_dict()["split"].items())
            for r in self.routes
        )


def effective_weights(entries: list[Mapping[str, Any]]) -> list[int] | None:
    """Each destination's relative weight as Istio applies it; None if a weight is not an int.

    A lone destination gets everything; an absent weight is 0 (``RouteDestination.weight``).
    """
    if len(entries) == 1:
        return [1]
    weights: list[int] = []
    for entry in entries:
        raw = entry.get("weight", 0)
        if raw is None:
            raw = 0
        if isinstance(raw, bool) or not isinstance(raw, int) or raw < 0:
            return None
        weights.append(raw)
    return weights


def shares_of(weights: list[int]) -> list[Fraction]:
    total = sum(weights)
    if total == 0:
        return [Fraction(0) for _ in weights]
    return [Fraction(w, total) for w in weights]
