"""The traffic target of a rollout: one VirtualService, its two subsets, its route, its connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from airflow_canary.routing.values import RouteTarget, RoutingError
from airflow_canary.templating import is_template

#: Airflow's default Kubernetes connection id (cncf-kubernetes provider).
KUBERNETES_CONN_ID = "kubernetes_default"


@dataclass(frozen=True)
class TrafficTarget:
    """Where a rollout moves traffic: the object every traffic task, the analysis and the rollback share.

    :param virtual_service: name of the Istio VirtualService carrying the split (may be a template)
    :param namespace: its namespace (may be a template)
    :param stable_subset: DestinationRule subset serving the current model
    :param canary_subset: DestinationRule subset serving the new model
    :param route_name: the routes to manage: an http route name, a position such as ``tcp[0]``,
        or a list of them; ``None`` = every http, tcp and tls route of the two subsets
    :param kubernetes_conn_id: cncf-kubernetes connection id reaching the cluster

    Literal values are checked when the target is built (DAG parse time), templated ones by the
    task that renders them. Raises :class:`~airflow_canary.routing.RoutingError` naming the value.
    """

    virtual_service: str
    namespace: str = "default"
    stable_subset: str = "v1"
    canary_subset: str = "v2"
    route_name: str | Sequence[str] | None = None
    kubernetes_conn_id: str = KUBERNETES_CONN_ID

    def __post_init__(self) -> None:
        for what in ("virtual_service", "namespace", "kubernetes_conn_id"):
            value = getattr(self, what)
            if not isinstance(value, str) or not value.strip():
                raise RoutingError(f"{what} must be a non-empty string, got {value!r}")
        if isinstance(self.route_name, list):
            object.__setattr__(self, "route_name", tuple(self.route_name))
        if not any(
            is_template(v) for v in (self.stable_subset, self.canary_subset, self.route_name)
        ):
            self.route_target()

    def route_target(self) -> RouteTarget:
        """The routing layer's view: the two subsets and the weighted route."""
        # A template rendered to "" means every route; an empty list is refused.
        route_name = None if self.route_name == "" else self.route_name
        return RouteTarget(self.stable_subset, self.canary_subset, route_name)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (trigger serialisation, XCom); :meth:`from_dict` reads it back."""
        data = asdict(self)
        if isinstance(self.route_name, tuple):
            data["route_name"] = list(self.route_name)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrafficTarget:
        return cls(**dict(data))

    def operator_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of every ``CanaryTrafficOperator`` (templated fields there)."""
        return self.to_dict()


__all__ = ["KUBERNETES_CONN_ID", "TrafficTarget"]
