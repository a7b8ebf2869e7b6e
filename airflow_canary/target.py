"""The traffic target of a rollout: one route object, its stable and canary backends, its router, its connection."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from airflow_canary.names import namespace_name
from airflow_canary.routing.router import (
    Router,
    RouterKind,
    route_object_name,
    route_parameter,
    router_for,
    router_kind,
)
from airflow_canary.routing.values import RouteTarget, RoutingError
from airflow_canary.templating import is_template

#: Airflow's default Kubernetes connection id (cncf-kubernetes provider).
KUBERNETES_CONN_ID = "kubernetes_default"


@dataclass(frozen=True)
class TrafficTarget:
    """Where a rollout moves traffic: the object every traffic task, the analysis and the rollback share.

    :param route: name of the route object carrying the split (may be a template): the Istio
        VirtualService, or with ``router="gateway-api"`` the Gateway API HTTPRoute
    :param namespace: its namespace (may be a template)
    :param stable_subset: what serves the current model: a DestinationRule subset (Istio) or a
        Service name (Gateway API)
    :param canary_subset: what serves the new model, likewise
    :param route_name: the routes to manage. Istio: an http route name, a position such as
        ``tcp[0]``, or a list of them (``None`` = every http, tcp and tls route of the two
        subsets); Gateway API: rule names (``None`` = every rule of the two Services)
    :param kubernetes_conn_id: cncf-kubernetes connection id reaching the cluster
    :param router: the traffic backend, ``"istio"`` or ``"gateway-api"``
    :param backend_namespace: Gateway API only: the Services' namespace when it is not the
        HTTPRoute's (a ReferenceGrant there must allow the reference); ``None`` = the HTTPRoute's

    Literal values are checked when the target is built (DAG parse time), templated ones by the
    task that renders them. Raises :class:`~airflow_canary.routing.RoutingError` naming the value.
    """

    route: str
    namespace: str = "default"
    stable_subset: str = "v1"
    canary_subset: str = "v2"
    route_name: str | Sequence[str] | None = None
    kubernetes_conn_id: str = KUBERNETES_CONN_ID
    router: str = RouterKind.ISTIO.value
    backend_namespace: str | None = None

    def __post_init__(self) -> None:
        for what in ("stable_subset", "canary_subset"):
            if getattr(self, what) is None:  # the router's default would hide the mistake
                raise RoutingError(f"{what} must be a non-empty string, got None")
        for what in ("route", "namespace", "kubernetes_conn_id"):
            value = getattr(self, what)
            if not isinstance(value, str) or not value.strip():
                raise RoutingError(f"{what} must be a non-empty string, got {value!r}")
        if isinstance(self.route_name, list):
            object.__setattr__(self, "route_name", tuple(self.route_name))
        object.__setattr__(self, "router", router_kind(self.router).value)
        if not is_template(self.namespace):
            namespace_name("namespace", self.namespace, RoutingError)
        route_object_name(self.router, **{route_parameter(self.router): self.route})
        if not any(
            is_template(v)
            for v in (
                self.stable_subset,
                self.canary_subset,
                self.route_name,
                self.backend_namespace,
            )
        ):
            self.traffic_router()

    def route_target(self) -> RouteTarget:
        """The routing layer's view: the two subsets and the weighted route."""
        # A template rendered to "" means every route; an empty list is refused.
        route_name = None if self.route_name == "" else self.route_name
        return RouteTarget(self.stable_subset, self.canary_subset, route_name)

    def traffic_router(self) -> Router:
        """The router seam for this target (its verbs act on the route object's documents)."""
        return router_for(
            self.router,
            stable=self.stable_subset,
            canary=self.canary_subset,
            routes=None if self.route_name == "" else self.route_name,
            # A template rendered to "" means the HTTPRoute's own namespace.
            backend_namespace=None if self.backend_namespace == "" else self.backend_namespace,
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form (trigger serialisation, XCom); :meth:`from_dict` reads it back."""
        data = asdict(self)
        if isinstance(self.route_name, tuple):
            data["route_name"] = list(self.route_name)
        if self.backend_namespace is None:
            del data["backend_namespace"]  # Gateway API only: Istio targets never carry it
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TrafficTarget:
        fields = dict(data)
        # Triggers serialised before the route object had a router-neutral name.
        if "virtual_service" in fields:
            fields["route"] = fields.pop("virtual_service")
        return cls(**fields)

    def operator_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of every ``CanaryTrafficOperator`` (templated fields there): the
        route object under its router's parameter, ``virtual_service`` or ``http_route``."""
        kwargs = self.to_dict()
        kwargs[route_parameter(self.router)] = kwargs.pop("route")
        return kwargs


__all__ = ["KUBERNETES_CONN_ID", "TrafficTarget"]
