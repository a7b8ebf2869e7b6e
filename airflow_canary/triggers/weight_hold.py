"""Holding a step's canary weight while it is judged: re-read the route object each poll, test the share.

The statistics and the wording live in ``airflow_canary.analysis.weight_hold`` (pure); this
module reads the VirtualService through the async Istio hook and, when asked to, writes the
step's weight back.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow_canary.analysis.values import AnalysisError
from airflow_canary.analysis.weight_hold import WeightHold, describe_change, describe_deficit
from airflow_canary.routing import RoutingError
from airflow_canary.target import TrafficTarget

if TYPE_CHECKING:
    from airflow_canary.hooks.istio import AsyncIstioHook

#: What a step does when another writer changed its weight.
ON_WEIGHT_CHANGE = ("end_step", "reassert")


@dataclass(frozen=True)
class WeightHoldSpec:
    """The weight a step wrote, where, and whether to re-assert it when someone changes it."""

    target: TrafficTarget
    weight: int
    reassert: bool = False
    alpha: float = 0.001

    def to_dict(self) -> dict[str, Any]:
        return {
            "target": self.target.to_dict(),
            "weight": self.weight,
            "reassert": self.reassert,
            "alpha": self.alpha,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> WeightHoldSpec:
        return cls(
            target=TrafficTarget.from_dict(data["target"]),
            weight=int(data["weight"]),
            reassert=bool(data.get("reassert", False)),
            alpha=float(data.get("alpha", 0.001)),
        )


def on_weight_change_reasserts(value: object) -> bool:
    """``"reassert"`` -> True, ``"end_step"`` -> False; anything else is refused."""
    if value not in ON_WEIGHT_CHANGE:
        raise AnalysisError(
            f"on_weight_change must be one of {', '.join(ON_WEIGHT_CHANGE)}, got {value!r}"
        )
    return value == "reassert"


#: The share test starts from the counts of the last poll before this many seconds of a step:
#: right after a weight change, in-flight requests and the first scrapes of the canary's series
#: under-count its share.
SHARE_WARMUP_SECONDS = 10.0


class WeightWatch:
    """Per-poll check that the step's weight holds; ``poll`` returns why the step must end."""

    def __init__(
        self,
        spec: WeightHoldSpec,
        max_polls: int,
        logger: logging.Logger | Any,
        counted_checks: tuple[str, ...] | None = None,
    ) -> None:
        """``counted_checks``: names of the checks whose request counts the share test reads
        (None: every check's; empty: no share test, only the VirtualService re-read)."""
        self.spec = spec
        self.counted_checks = counted_checks
        self.hold = WeightHold(spec.weight, spec.alpha, max(1, max_polls))
        self.log = logger
        self.resource_version: str | None = None
        self.corrections: list[dict[str, Any]] = []
        # The first poll's counts: the share test reads only what arrived after it, whether
        # the checks report counts since the step began or since their series appeared.
        self._baseline: tuple[float, float, float] | None = None

    @cached_property
    def hook(self) -> AsyncIstioHook:
        from airflow_canary.hooks.istio import AsyncIstioHook

        return AsyncIstioHook(kubernetes_conn_id=self.spec.target.kubernetes_conn_id)

    async def aclose(self) -> None:
        """Give back the hook's share of the shared Kubernetes client, if it took one."""
        if "hook" in self.__dict__:
            await self.hook.aclose()

    async def poll(self, elapsed: float, verdict: Mapping[str, Any]) -> str | None:
        """Check the route object (when its resourceVersion moved) and the observed share."""
        target = self.spec.target
        router = target.traffic_router()
        try:
            vs = await self.hook.aget_route(router, target.route, target.namespace)
        except Exception as err:  # judged on the share alone this poll; the next read may work
            self.log.warning(
                "Weight hold: cannot re-read %s/%s: %s",
                target.namespace,
                target.route,
                err,
            )
            vs = None
        counts = _request_counts(verdict, self.counted_checks)
        if vs is not None:
            version = (vs.get("metadata") or {}).get("resourceVersion")
            if version != self.resource_version:
                try:
                    split = router.read_split(vs)
                except RoutingError as err:
                    return f"the {router.route_object.kind}'s split is no longer readable after {elapsed:.0f} s: {err}"
                changed = self.hold.changed_routes(dict(split.canary_by_route))
                if changed and not self.spec.reassert:
                    return describe_change(self.spec.weight, changed, elapsed)
                if changed:
                    version = await self._reassert(changed, elapsed)
                    self._baseline = counts
                self.resource_version = version
        if self._baseline is None or self.counted_checks == () or elapsed < SHARE_WARMUP_SECONDS:
            self._baseline = counts
            return None
        canary, stable, unreachable = (
            now - then for now, then in zip(counts, self._baseline, strict=True)
        )
        test = self.hold.share_test(canary, stable, unreachable)
        if test.deficit:
            return describe_deficit(test, elapsed)
        return None

    async def _reassert(self, changed: Mapping[str, float], elapsed: float) -> str | None:
        target = self.spec.target
        router = target.traffic_router()
        update = await self.hook.aupdate_route(
            router,
            target.route,
            target.namespace,
            lambda doc: router.set_weight(doc, self.spec.weight),
        )
        what = describe_change(self.spec.weight, changed, elapsed)
        self.log.warning("Weight hold: %s; re-asserted %s%%", what, self.spec.weight)
        self.corrections.append(
            {
                "elapsed_seconds": round(elapsed, 3),
                "found": dict(changed),
                "restored": self.spec.weight,
                "message": what,
            }
        )
        version = (update.after.get("metadata") or {}).get("resourceVersion")
        return str(version) if version is not None else None


def end_step(verdict: Mapping[str, Any], reason: str) -> dict[str, Any]:
    """The verdict that ends a step whose weight did not hold: never PASS."""
    return {
        **verdict,
        "verdict": "INCONCLUSIVE",
        "final": True,
        "reason": reason,
        "weight_changed": True,
    }


def max_polls(timeout_seconds: float, poll_interval_seconds: float) -> int:
    return math.ceil(timeout_seconds / poll_interval_seconds) + 1


def _request_counts(
    verdict: Mapping[str, Any], names: tuple[str, ...] | None = None
) -> tuple[float, float, float]:
    """The canary's, the stable arm's and the unattributed (503 UH/UF/URX) request counts."""
    checks = [c for c in verdict.get("checks") or [] if names is None or c.get("name") in names]

    def most(key: str) -> float:
        return max((float(c.get(key) or 0) for c in checks), default=0.0)

    return most("canary_requests"), most("stable_requests"), most("unreachable_requests")
