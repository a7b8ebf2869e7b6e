"""The router seam: what a rollout needs from a traffic backend, implemented for Istio and Gateway API.

A ``Router`` holds where a rollout's traffic goes (its stable and canary backends) and turns a
route document into a new one: read the split, set the canary weight, add or remove a header
route, mirror on or off (and read it), promote, roll back, and list the routes it manages. Like Flagger's
``pkg/router`` interface, everything mesh-specific stays in one module per mesh
(``virtual_service.py`` for Istio, ``gateway_api.py`` for Gateway API); the Airflow layer asks
``router_for(kind, ...)`` for one and never learns which it talks to.

All methods are pure: documents in, new documents out, RoutingError naming any bad value.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol

from airflow_canary.names import object_name
from airflow_canary.routing import gateway_api, istio_mirror, virtual_service
from airflow_canary.routing.split import percent
from airflow_canary.routing.values import (
    HeaderRoute,
    RouteTarget,
    RoutingError,
    validate_weight,
)
from airflow_canary.templating import is_template

Document = dict[str, Any]


class RouterKind(str, Enum):
    """The traffic backends a rollout can drive."""

    ISTIO = "istio"
    GATEWAY_API = "gateway-api"


@dataclass(frozen=True)
class RouteObject:
    """The Kubernetes object a router writes: its API group, version and plural resource name."""

    group: str
    versions: tuple[str, ...]
    plural: str
    kind: str


@dataclass(frozen=True)
class Split:
    """Percent of the rollout's traffic per backend (stable and canary), as the router reads it.

    ``stable`` and ``canary`` name the backends (Istio subsets, or Gateway API Services);
    percentages are those of the managed route sending the canary the most; ``canary_by_route``
    gives each route's canary percentage (route label, percent).
    """

    stable: str
    canary: str
    stable_percent: int | float
    canary_percent: int | float
    canary_by_route: tuple[tuple[str, float], ...] = field(default=())

    @property
    def routes(self) -> tuple[str, ...]:
        return tuple(label for label, _ in self.canary_by_route)

    def as_dict(self) -> dict[str, int | float]:
        return {self.stable: self.stable_percent, self.canary: self.canary_percent}


class Router(Protocol):
    """One traffic backend's verbs on its route document (a VirtualService, an HTTPRoute)."""

    @property
    def kind(self) -> RouterKind: ...

    @property
    def route_object(self) -> RouteObject: ...

    @property
    def stable(self) -> str: ...

    @property
    def canary(self) -> str: ...

    def read_split(self, route: Mapping[str, Any]) -> Split: ...

    def set_weight(self, route: Mapping[str, Any], canary_percent: object) -> Document: ...

    def set_header_route(self, route: Mapping[str, Any], header_route: HeaderRoute) -> Document: ...

    def remove_header_route(self, route: Mapping[str, Any], header: str) -> Document: ...

    def header_routes(self, route: Mapping[str, Any]) -> list[HeaderRoute]: ...

    def set_mirror(self, route: Mapping[str, Any], percent: object) -> Document: ...

    def remove_mirror(self, route: Mapping[str, Any]) -> Document: ...

    def mirror_percent(self, route: Mapping[str, Any]) -> float: ...

    def promote(self, route: Mapping[str, Any]) -> Document: ...

    def rollback(self, route: Mapping[str, Any]) -> Document: ...

    def managed_routes(self, route: Mapping[str, Any]) -> list[str]: ...


VIRTUAL_SERVICE = RouteObject(
    "networking.istio.io", ("v1", "v1beta1", "v1alpha3"), "virtualservices", "VirtualService"
)
HTTP_ROUTE = RouteObject(gateway_api.GROUP, ("v1",), "httproutes", "HTTPRoute")
#: The route object each router writes.
ROUTE_OBJECTS: dict[RouterKind, RouteObject] = {
    RouterKind.ISTIO: VIRTUAL_SERVICE,
    RouterKind.GATEWAY_API: HTTP_ROUTE,
}


@dataclass(frozen=True)
class IstioRouter:
    """A VirtualService's routes split between two DestinationRule subsets."""

    target: RouteTarget = field(default_factory=RouteTarget)
    kind: RouterKind = RouterKind.ISTIO

    @property
    def route_object(self) -> RouteObject:
        return VIRTUAL_SERVICE

    @property
    def stable(self) -> str:
        return self.target.stable_subset

    @property
    def canary(self) -> str:
        return self.target.canary_subset

    def read_split(self, route: Mapping[str, Any]) -> Split:
        exact = virtual_service.read_split(route, self.target)
        split = exact.as_dict()
        return Split(
            self.stable,
            self.canary,
            split.get(self.stable, 0),
            split.get(self.canary, 0),
            tuple((r.route, float(percent(r.share(self.canary)))) for r in exact.routes),
        )

    def set_weight(self, route: Mapping[str, Any], canary_percent: object) -> Document:
        return virtual_service.set_canary_weight(
            route, self.target, validate_weight(canary_percent)
        )

    def set_header_route(self, route: Mapping[str, Any], header_route: HeaderRoute) -> Document:
        return virtual_service.set_header_route(route, self.target, header_route)

    def remove_header_route(self, route: Mapping[str, Any], header: str) -> Document:
        return virtual_service.remove_header_route(route, self.target, header)

    def header_routes(self, route: Mapping[str, Any]) -> list[HeaderRoute]:
        return virtual_service.product_header_routes(route)

    def set_mirror(self, route: Mapping[str, Any], percent: object) -> Document:
        return istio_mirror.set_mirror(route, self.target, percent)

    def remove_mirror(self, route: Mapping[str, Any]) -> Document:
        return istio_mirror.remove_mirror(route, self.target)

    def mirror_percent(self, route: Mapping[str, Any]) -> float:
        return istio_mirror.mirror_percent(route, self.target)

    def promote(self, route: Mapping[str, Any]) -> Document:
        return virtual_service.promote(route, self.target)

    def rollback(self, route: Mapping[str, Any]) -> Document:
        return virtual_service.rollback(route, self.target)

    def managed_routes(self, route: Mapping[str, Any]) -> list[str]:
        return virtual_service.managed_routes(route, self.target)


@dataclass(frozen=True)
class GatewayAPIRouter:
    """An HTTPRoute's rules split between two Services' backendRefs."""

    target: gateway_api.ServiceTarget = field(default_factory=gateway_api.ServiceTarget)
    kind: RouterKind = RouterKind.GATEWAY_API

    @property
    def route_object(self) -> RouteObject:
        return HTTP_ROUTE

    @property
    def stable(self) -> str:
        return self.target.stable_service

    @property
    def canary(self) -> str:
        return self.target.canary_service

    def read_split(self, route: Mapping[str, Any]) -> Split:
        split = gateway_api.read_split(route, self.target)
        shares = split.as_dict()
        return Split(
            self.stable,
            self.canary,
            shares[self.stable],
            shares[self.canary],
            tuple((r.rule, float(percent(r.share(self.canary)))) for r in split.rules),
        )

    def set_weight(self, route: Mapping[str, Any], canary_percent: object) -> Document:
        return gateway_api.set_canary_weight(route, self.target, canary_percent)

    def set_header_route(self, route: Mapping[str, Any], header_route: HeaderRoute) -> Document:
        return gateway_api.set_header_route(route, self.target, header_route)

    def remove_header_route(self, route: Mapping[str, Any], header: str) -> Document:
        return gateway_api.remove_header_route(route, self.target, header)

    def header_routes(self, route: Mapping[str, Any]) -> list[HeaderRoute]:
        return gateway_api.product_header_routes(route)

    def set_mirror(self, route: Mapping[str, Any], percent: object) -> Document:
        return gateway_api.set_mirror(route, self.target, percent)

    def remove_mirror(self, route: Mapping[str, Any]) -> Document:
        return gateway_api.remove_mirror(route, self.target)

    def mirror_percent(self, route: Mapping[str, Any]) -> float:
        return gateway_api.mirror_percent(route, self.target)

    def promote(self, route: Mapping[str, Any]) -> Document:
        return gateway_api.promote(route, self.target)

    def rollback(self, route: Mapping[str, Any]) -> Document:
        return gateway_api.rollback(route, self.target)

    def managed_routes(self, route: Mapping[str, Any]) -> list[str]:
        return gateway_api.managed_rules(route, self.target)


def router_kind(value: object) -> RouterKind:
    """``value`` ("istio", "gateway-api") as a RouterKind; RoutingError listing the choices."""
    if isinstance(value, RouterKind):
        return value
    try:
        return RouterKind(str(value).strip().lower())
    except ValueError:
        choices = ", ".join(repr(k.value) for k in RouterKind)
        raise RoutingError(f"router must be one of {choices}, got {value!r}") from None


#: Each router's route object: its kind and the parameter naming it, in the field's own terms.
ROUTE_PARAMETERS: dict[RouterKind, tuple[str, str]] = {
    RouterKind.ISTIO: ("virtual_service", "a VirtualService"),
    RouterKind.GATEWAY_API: ("http_route", "an HTTPRoute"),
}


def route_parameter(router: object) -> str:
    """The parameter naming ``router``'s route object: ``virtual_service`` or ``http_route``."""
    return ROUTE_PARAMETERS[router_kind(router)][0]


def route_object_name(
    router: object, *, virtual_service: object = None, http_route: object = None
) -> str:
    """The route object's name, given under the parameter of ``router``'s own term.

    Istio's route object is a VirtualService (``virtual_service=``), Gateway API's an HTTPRoute
    (``http_route=``): exactly one must be given and it must be ``router``'s. The name may be a
    template (checked as given; a template renders later). Raises RoutingError naming the value
    and the parameter expected, e.g. ``router='gateway-api' manages an HTTPRoute: pass
    http_route='model-route' instead of virtual_service=...``.
    """
    kind = router_kind(router)
    expected, article_kind = ROUTE_PARAMETERS[kind]
    given = {
        name: value
        for name, value in (("virtual_service", virtual_service), ("http_route", http_route))
        if value is not None
    }
    if len(given) == 2:
        raise RoutingError(
            f"router={kind.value!r} manages {article_kind}: pass only {expected}=, got "
            f"virtual_service={virtual_service!r} and http_route={http_route!r}"
        )
    if not given:
        raise RoutingError(
            f"router={kind.value!r} manages {article_kind}: pass its name as {expected}="
        )
    ((name, value),) = given.items()
    if name != expected:
        other = next(k for k, (param, _) in ROUTE_PARAMETERS.items() if param == name)
        raise RoutingError(
            f"router={kind.value!r} manages {article_kind}: pass {expected}={value!r} instead "
            f"of {name}=... ({name} names {ROUTE_PARAMETERS[other][1]}, with "
            f"router={other.value!r})"
        )
    if not isinstance(value, str) or not value.strip():
        raise RoutingError(f"{name} must be a non-empty string, got {value!r}")
    if is_template(value):
        return value  # checked once rendered
    return object_name(name, value, RoutingError, kind=f"{article_kind} name")


def router_for(
    kind: object,
    *,
    stable: str | None = None,
    canary: str | None = None,
    routes: str | Sequence[str] | None = None,
    backend_namespace: str | None = None,
) -> Router:
    """The router of ``kind`` between ``stable`` and ``canary``.

    Istio: subsets (default ``v1``/``v2``), ``routes`` the routes to manage (default every
    route of the two subsets).
    Gateway API: Services (default ``model-v1``/``model-v2``), ``routes`` the rule names to
    manage, ``backend_namespace`` the Services' namespace when not the HTTPRoute's.
    Raises RoutingError naming a bad value.
    """
    chosen = router_kind(kind)
    if chosen is RouterKind.ISTIO:
        if backend_namespace is not None:
            raise RoutingError(
                f"backend_namespace is a Gateway API setting (Services in another namespace); "
                f"Istio subsets live in the DestinationRule, got {backend_namespace!r}"
            )
        return IstioRouter(
            RouteTarget(
                "v1" if stable is None else stable, "v2" if canary is None else canary, routes
            )
        )
    names = (routes,) if isinstance(routes, str) else (None if routes is None else tuple(routes))
    return GatewayAPIRouter(
        gateway_api.ServiceTarget(
            "model-v1" if stable is None else stable,
            "model-v2" if canary is None else canary,
            backend_namespace,
            names,
        )
    )


__all__ = [
    "HTTP_ROUTE",
    "VIRTUAL_SERVICE",
    "GatewayAPIRouter",
    "IstioRouter",
    "ROUTE_OBJECTS",
    "ROUTE_PARAMETERS",
    "RouteObject",
    "Router",
    "RouterKind",
    "Split",
    "route_object_name",
    "route_parameter",
    "router_for",
    "router_kind",
]
