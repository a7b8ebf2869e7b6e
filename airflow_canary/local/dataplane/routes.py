"""Compiled routes of the local data plane, whichever API they come from (Istio or Gateway API)."""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class RequestView:
    """What routing looks at in a request."""

    authority: str
    method: str
    path: str
    headers: Mapping[str, str]
    query: Mapping[str, str] = field(default_factory=dict)


class RequestMatch(Protocol):
    """One match condition of a route (an Istio match block, a Gateway API HTTPRouteMatch)."""

    def matches(self, request: RequestView) -> bool: ...


@dataclass(frozen=True)
class Target:
    """A destination: a Service (namespace, name) and optionally a DestinationRule subset.

    ``error`` marks a backend the route names but cannot use (Gateway API: a missing Service, a
    cross-namespace reference without ReferenceGrant); requests drawn for it are answered 500.
    """

    namespace: str
    service: str
    subset: str | None = None
    error: str = ""


@dataclass(frozen=True)
class Mirror:
    target: Target
    percent: float


#: Istio's retry policy for an http route without ``retries`` (pilot's DefaultRetryPolicy:
#: 2 retries on "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"
#: with retriable status 503, each retry on another host when there is one).
DEFAULT_RETRY_ON = "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes"


@dataclass(frozen=True)
class RetryPolicy:
    """When the caller's sidecar tries a request again, as Envoy's router does."""

    attempts: int = 2
    retry_on: frozenset[str] = frozenset(DEFAULT_RETRY_ON.split(","))
    status_codes: frozenset[int] = frozenset({503})

    @classmethod
    def parse(cls, spec: Mapping[str, Any] | None) -> RetryPolicy:
        """A route's ``retries`` block; None (no block) is Istio's default policy."""
        if spec is None:
            return cls()
        attempts = int(spec.get("attempts", 2) or 0)
        text = str(spec.get("retryOn") or DEFAULT_RETRY_ON)
        words = {w.strip() for w in text.split(",") if w.strip()}
        codes = {int(w) for w in words if w.isdigit()}
        # Istio turns numeric entries into retriable-status-codes; with none, 503 stays.
        return cls(
            attempts,
            frozenset(w for w in words if not w.isdigit())
            | ({"retriable-status-codes"} if codes else set()),
            frozenset(codes or {503}),
        )

    def retries(self, status: int, flags: str) -> bool:
        """Whether an attempt that ended with ``status``/``flags`` is tried again."""
        on = self.retry_on
        if flags in ("UF", "UH") and ("connect-failure" in on or "5xx" in on):
            return True
        if flags == "UC" and ("reset" in on or "5xx" in on):
            return True
        if "5xx" in on and status >= 500:
            return True
        if "gateway-error" in on and status in (502, 503, 504):
            return True
        return "retriable-status-codes" in on and status in self.status_codes


@dataclass(frozen=True)
class Route:
    """A compiled http route: its matches (any one must hold), weighted targets and mirrors.

    ``lone_takes_all``: a single destination gets every request whatever its weight (Istio); in
    Gateway API a weight of 0 sends nothing even to a lone backend. ``no_backend_status`` is the
    answer when no destination can be drawn (Istio: 503; Gateway API: 500).
    """

    name: str
    matches: tuple[RequestMatch, ...]
    targets: tuple[Target, ...]
    cum_weights: tuple[int, ...]
    mirrors: tuple[Mirror, ...] = ()
    lone_takes_all: bool = True
    no_backend_status: int = 503
    retries: RetryPolicy = RetryPolicy()

    def matches_request(self, request: RequestView) -> bool:
        return not self.matches or any(block.matches(request) for block in self.matches)

    def choose(self, rng: random.Random) -> Target | None:
        """One destination drawn by weight, independently for each request; None if all weights are 0."""
        if len(self.targets) == 1 and self.lone_takes_all:
            return self.targets[0]
        if not self.cum_weights or self.cum_weights[-1] <= 0:
            return None
        return rng.choices(self.targets, cum_weights=self.cum_weights, k=1)[0]
