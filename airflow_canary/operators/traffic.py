"""Airflow operators that move canary traffic on an Istio VirtualService or a Gateway API HTTPRoute: weights, header routes, mirrors, promote, rollback."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_canary.names import namespace_name, object_name
from airflow_canary.routing import (
    HeaderRoute,
    RouteTarget,
    RoutingError,
    check_target,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    rollback,
    rollout_host,
    set_canary_weight,
    set_header_route,
    validate_header_name,
    validate_header_route,
    validate_mirror_percent,
    validate_weight,
)
from airflow_canary.routing.istio_mirror import mirror_percent, remove_mirror, set_mirror
from airflow_canary.routing.router import (
    GatewayAPIRouter,
    Router,
    RouterKind,
    route_object_name,
    route_parameter,
    router_for,
    router_kind,
)
from airflow_canary.templating import is_template

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_canary.hooks.istio import IstioHook, UpdateResult

# The Istio hook (and with it the Kubernetes client) is imported when a task runs, not when the
# DAG file is parsed.
Document = dict[str, Any]


def _literal(*values: object) -> bool:
    return not any(is_template(v) for v in values)


class CanaryTrafficOperator(BaseOperator):
    """Common base: one route object, a stable and a canary backend, one pure transformation.

    Subclasses supply ``transform`` (a function from ``airflow_canary.routing``), name the
    subsets they send traffic to in ``subsets_receiving`` and may check their own parameters in
    ``validate``; this class renders, checks those subsets against the DestinationRule Istio
    applies (found in Istio's lookup order) before any write, applies the change to every
    managed route in one conflict-safe write and returns the XCom value described in
    docs/architecture.md.

    Every subclass takes these parameters, and its own:

    :param virtual_service: name of the VirtualService carrying the split, with
        ``router="istio"``, a non-empty string (templated)
    :param http_route: name of the HTTPRoute carrying the split, with ``router="gateway-api"``,
        a non-empty string (templated); exactly one of ``virtual_service`` and ``http_route`` is
        given, the one of ``router`` (RoutingError at parse time otherwise)
    :param namespace: its namespace, a non-empty string (templated)
    :param stable_subset: DestinationRule subset serving the current model (templated)
    :param canary_subset: DestinationRule subset serving the new model; must differ from
        ``stable_subset`` (templated)
    :param route_name: the routes to manage: an http route name, ``tcp[0]``-style positions or a
        list of them; default (None, or a template rendering to ``""``) every route of the two
        subsets (templated)
    :param kubernetes_conn_id: id of an Airflow connection of type ``kubernetes`` (the
        cncf-kubernetes provider's) (templated)
    :param router: ``"istio"`` (default) or ``"gateway-api"``; with Gateway API,
        ``stable_subset``/``canary_subset`` name the two Services the HTTPRoute's rules send to,
        ``route_name`` the rule to manage (default: every rule of the two Services)
    :param backend_namespace: Gateway API only: the two Services' namespace when it is not the
        HTTPRoute's; a ReferenceGrant there must allow the reference (templated)
    :raises RoutingError: at DAG parse time for literal values (an empty name, the route object
        named by the other router's parameter, equal subsets, a malformed ``route_name``, an
        unknown ``router``), else when the task runs; at run time also when the route object has
        no route to the subsets or would leave one unmanaged. Nothing is written then.
    :raises LookupError: (run time, an ``IstioNotFoundError``) when the route object, the
        DestinationRule defining a receiving subset, or a Gateway API backend Service is missing
    """

    template_fields: Sequence[str] = (
        "virtual_service",
        "http_route",
        "namespace",
        "stable_subset",
        "canary_subset",
        "route_name",
        "kubernetes_conn_id",
        "backend_namespace",
    )
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        virtual_service: str | None = None,
        http_route: str | None = None,
        namespace: str = "default",
        stable_subset: str = "v1",
        canary_subset: str = "v2",
        route_name: str | Sequence[str] | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        router: str = RouterKind.ISTIO.value,
        backend_namespace: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.router = router_kind(router).value
        self.backend_namespace = backend_namespace
        self.virtual_service = virtual_service
        self.http_route = http_route
        self.namespace = namespace
        self.stable_subset = stable_subset
        self.canary_subset = canary_subset
        self.route_name = route_name
        self.kubernetes_conn_id = kubernetes_conn_id
        # Fail at DAG parse time for literal mistakes; templated values are checked in execute.
        route_object_name(self.router, virtual_service=virtual_service, http_route=http_route)
        if not isinstance(namespace, str) or not namespace.strip():
            raise RoutingError(f"namespace must be a non-empty string, got {namespace!r}")
        if _literal(namespace):
            namespace_name("namespace", namespace, RoutingError)
        for what, subset in (("stable_subset", stable_subset), ("canary_subset", canary_subset)):
            if subset is None:  # the router's default would hide the mistake
                raise RoutingError(f"{what} must be a non-empty string, got None")
        if _literal(stable_subset, canary_subset, route_name, backend_namespace):
            self.traffic_router()

    @property
    def route(self) -> str:
        """The route object's name: ``virtual_service`` (Istio) or ``http_route`` (Gateway API).

        Raises RoutingError unless exactly the router's own parameter is a non-empty string.
        """
        return route_object_name(
            self.router, virtual_service=self.virtual_service, http_route=self.http_route
        )

    def route_target(self) -> RouteTarget:
        return RouteTarget(
            stable_subset=self.stable_subset,
            canary_subset=self.canary_subset,
            # A template rendered to "" means "every route"; an empty list is refused.
            route_name=None if self.route_name == "" else self.route_name,
        )

    def traffic_router(self) -> Router:
        """The router seam for this task's (rendered) parameters."""
        return router_for(
            self.router,
            stable=self.stable_subset,
            canary=self.canary_subset,
            routes=None if self.route_name == "" else self.route_name,
            backend_namespace=None if self.backend_namespace == "" else self.backend_namespace,
        )

    def validate(self) -> None:
        """Check this operator's own rendered parameters; raise RoutingError naming the value."""

    def change(self, router: Router, route: Document) -> Document:
        """This step's change through the router seam (any router)."""
        raise NotImplementedError(f"{type(self).__name__} must define change()")

    def services_receiving(self, router: Router) -> tuple[str, ...]:
        """Gateway API: the Services this step sends traffic to; they must exist first."""
        return (router.stable, router.canary)

    def check_backends(self, hook: IstioHook, router: Router, route: Document) -> None:
        """Gateway API: the rules name both Services, cross-namespace refs are granted, and the
        Services this step sends to exist; RoutingError / LookupError naming what is wrong."""
        from airflow_canary.routing import gateway_api

        target = router.target  # type: ignore[attr-defined]
        backend_ns = target.namespace or self.namespace
        grants = hook.list_reference_grants(backend_ns) if backend_ns != self.namespace else None
        gateway_api.check_target(route, target, grants)
        for service in self.services_receiving(router):
            hook.get_service(service, backend_ns)

    def execute_on_router(self, router: Router) -> dict[str, Any]:
        """Any router other than Istio: read, check the backends, one conflict-safe write."""
        from airflow_canary.hooks.istio import IstioHook

        hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
        current = hook.get_route(router, self.route, self.namespace)
        self.check_backends(hook, router, current)
        update = hook.update_route(
            router, self.route, self.namespace, lambda doc: self.change(router, doc)
        )
        result = self.router_result(router, update)
        self.log.info(
            "%s %r in %r: split %s, header routes %s (%s after %d attempt(s))",
            router.route_object.kind,
            self.route,
            self.namespace,
            result["split"],
            [r["name"] for r in result["header_routes"]],
            "changed" if update.changed else "already in place, nothing written",
            update.attempts,
        )
        return result

    def router_result(self, router: Router, update: UpdateResult) -> dict[str, Any]:
        """The XCom value of a write through any router other than Istio."""
        from airflow_canary.hooks.istio import route_result

        return route_result(router, self.route, self.namespace, update)

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        raise NotImplementedError(f"{type(self).__name__} must define transform()")

    def subsets_receiving(self, target: RouteTarget) -> tuple[str, ...]:
        """The subsets this step sends traffic to: they must exist before it moves any."""
        return (target.stable_subset, target.canary_subset)

    def check_subsets(self, hook: IstioHook, vs: Document, target: RouteTarget) -> None:
        """Raise unless the DestinationRule Istio applies defines every receiving subset."""
        receiving = self.subsets_receiving(target)
        if not receiving:
            return
        check_target(vs, target)  # a bad target is reported before a missing DestinationRule
        hook.find_destination_rule(rollout_host(vs, target), self.namespace).require(receiving)

    def result(self, update: UpdateResult, target: RouteTarget) -> dict[str, Any]:
        from airflow_canary.hooks.istio import traffic_result

        return traffic_result(self.namespace, target, update)

    def check_rendered(self) -> tuple[RouteTarget, Router]:
        """Check every parameter as rendered, before any request: RoutingError naming a bad one."""
        namespace_name("namespace", self.namespace, RoutingError)
        # Rendered: even a value that still looks like a template is checked as a name now.
        object_name(route_parameter(self.router), self.route, RoutingError)
        target = self.route_target()
        self.validate()
        return target, self.traffic_router()

    def execute(self, context: Context) -> dict[str, Any]:
        target, router = self.check_rendered()
        if router.kind is not RouterKind.ISTIO:
            return self.execute_on_router(router)
        from airflow_canary.hooks.istio import IstioHook

        hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
        current = hook.get_virtual_service(self.route, self.namespace)
        self.check_subsets(hook, current, target)
        update = hook.update_virtual_service(
            self.route, self.namespace, lambda vs: self.transform(vs, target)
        )
        result = self.result(update, target)
        self.log.info(
            "VirtualService %r in %r: %s; header routes %s (%s after %d attempt(s))",
            self.route,
            self.namespace,
            read_split(update.after, target).describe(),
            [r["name"] for r in result["header_routes"]],
            "changed" if update.changed else "already in place, nothing written",
            update.attempts,
        )
        return result


class SetCanaryWeightOperator(CanaryTrafficOperator):
    """Send ``weight`` percent of the weighted route to the canary subset, the rest to stable.

    Takes the parameters of :class:`CanaryTrafficOperator`, and:

    :param weight: the canary's share in percent, an integer 0..100 (an int, or a string or
        template rendering to one); the stable subset gets ``100 - weight``; anything else
        raises ``RoutingError`` (at parse time when literal)
    """

    template_fields: Sequence[str] = (*CanaryTrafficOperator.template_fields, "weight")

    def __init__(self, *, weight: int | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = weight
        if _literal(weight):
            validate_weight(weight)

    def validate(self) -> None:
        validate_weight(self.weight)

    def subsets_receiving(self, target: RouteTarget) -> tuple[str, ...]:
        weight = validate_weight(self.weight)
        return tuple(
            subset
            for subset, share in (
                (target.stable_subset, 100 - weight),
                (target.canary_subset, weight),
            )
            if share > 0
        )

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        return set_canary_weight(vs, target, validate_weight(self.weight))

    def change(self, router: Router, route: Document) -> Document:
        return router.set_weight(route, validate_weight(self.weight))

    def services_receiving(self, router: Router) -> tuple[str, ...]:
        weight = validate_weight(self.weight)
        return tuple(
            s for s, share in ((router.stable, 100 - weight), (router.canary, weight)) if share
        )


class SetMirrorOperator(CanaryTrafficOperator):
    """Mirror ``percent`` of the rollout's weighted route(s) to the canary, or remove the mirror.

    The shadow phase's traffic step: Istio (``mirror`` + ``mirrorPercentage`` on every managed
    http route) or Gateway API (a ``RequestMirror`` filter on every managed rule) copies that
    share of live requests to the canary and discards its answers, so no user is served by it.
    The product's header routes are never mirrored; promote and rollback remove the mirror.
    One conflict-safe write, like every traffic step. Takes the parameters of
    :class:`CanaryTrafficOperator`, and:

    :param percent: share of requests to copy, a number 0..100 (e.g. ``100`` or ``12.5``; an
        int or float, or a template rendering to one); 0 removes the mirror (templated)
    :param remove: remove the canary mirror instead of setting it, a bool
    :raises RoutingError: for a percent that is not a number 0..100 (a bool, a string that is
        not a template, NaN, 150), at DAG parse time when literal; for a route that already
        mirrors elsewhere with Istio's single ``mirror`` field; nothing is written then
    :returns: the traffic step's XCom value with ``mirror_percent`` (float, 0.0 when none)
        and, when a mirror is on afterwards, ``mirrored_since``: the UTC time (ISO 8601) just
        before this attempt's write, before which it mirrored no request (a shadow analysis's
        ``since``). When the mirror was already in place (a retry after an earlier try wrote)
        it is this attempt's time, so the requests mirrored since that earlier write are
        counted as from before the phase, never paired with records from before the mirror
    """

    template_fields: Sequence[str] = (*CanaryTrafficOperator.template_fields, "percent")

    def __init__(self, *, percent: float | str = 100, remove: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(remove, bool):
            raise RoutingError(f"remove must be True or False, got {remove!r}")
        self.remove = remove
        self.percent = percent
        if not (isinstance(percent, str) and is_template(percent)):
            validate_mirror_percent(percent)

    def mirror_share(self) -> float:
        """The rendered percent as a float 0..100; a template renders to a string of a number."""
        value: object = self.percent
        if not isinstance(value, str) or is_template(value):
            return validate_mirror_percent(value)
        try:
            return validate_mirror_percent(float(value))
        except (ValueError, RoutingError):
            raise RoutingError(
                f"mirror percent must be a number 0..100, got {self.percent!r}"
            ) from None

    def validate(self) -> None:
        if not self.remove:
            self.mirror_share()

    def subsets_receiving(self, target: RouteTarget) -> tuple[str, ...]:
        return () if self.remove else (target.canary_subset,)

    def services_receiving(self, router: Router) -> tuple[str, ...]:
        return () if self.remove else (router.canary,)

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        if self.remove:
            return remove_mirror(vs, target)
        return set_mirror(vs, target, self.mirror_share())

    def change(self, router: Router, route: Document) -> Document:
        if self.remove:
            return router.remove_mirror(route)
        return router.set_mirror(route, self.mirror_share())

    def execute(self, context: Context) -> dict[str, Any]:
        before_write = datetime.now(timezone.utc)
        result = super().execute(context)
        if result["mirror_percent"] > 0:
            result["mirrored_since"] = before_write.isoformat()
        return result

    def result(self, update: UpdateResult, target: RouteTarget) -> dict[str, Any]:
        return {
            **super().result(update, target),
            "mirror_percent": mirror_percent(update.after, target),
        }

    def router_result(self, router: Router, update: UpdateResult) -> dict[str, Any]:
        return {
            **super().router_result(router, update),
            "mirror_percent": router.mirror_percent(update.after),
        }


class SetHeaderRouteOperator(CanaryTrafficOperator):
    """Route requests whose ``header`` matches ``value`` to the canary subset, ahead of the weights.

    With ``remove=True`` the product route for ``header`` is removed instead. Takes the
    parameters of :class:`CanaryTrafficOperator`, and:

    :param header: HTTP header name, e.g. ``x-canary-version`` (matched lower-cased), a
        pseudo-header such as ``:authority``, or a JWT claim ``@request.auth.claims.<name>``
        (templated)
    :param value: the value to match, a string; non-empty for ``prefix``, a valid RE2
        expression of at most Istio's length limit for ``regex`` (templated)
    :param match_type: ``exact``, ``prefix`` or ``regex`` (templated)
    :param remove: remove the route instead of adding it, a bool
    :raises RoutingError: for an invalid header name, value or match type, or a non-bool
        ``remove`` (at parse time when literal)
    """

    template_fields: Sequence[str] = (
        *CanaryTrafficOperator.template_fields,
        "header",
        "value",
        "match_type",
    )

    def __init__(
        self,
        *,
        header: str = "x-canary-version",
        value: str = "v2",
        match_type: str = "exact",
        remove: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.header = header
        self.value = value
        self.match_type = match_type
        if not isinstance(remove, bool):
            raise RoutingError(f"remove must be True or False, got {remove!r}")
        self.remove = remove
        if _literal(header, value, match_type, self.canary_subset):
            self.validate()

    def header_route(self) -> HeaderRoute:
        return validate_header_route(
            self.header, self.value, self.match_type, subset=self.canary_subset
        )

    def validate(self) -> None:
        if self.remove:
            validate_header_name(self.header)
        else:
            self.header_route()

    def subsets_receiving(self, target: RouteTarget) -> tuple[str, ...]:
        return () if self.remove else (self.canary_subset,)

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        if self.remove:
            return remove_header_route(vs, target, self.header)
        return set_header_route(vs, target, self.header_route())

    def change(self, router: Router, route: Document) -> Document:
        if self.remove:
            return router.remove_header_route(route, self.header)
        return router.set_header_route(route, self.header_route())

    def services_receiving(self, router: Router) -> tuple[str, ...]:
        return () if self.remove else (router.canary,)


class PromoteCanaryOperator(CanaryTrafficOperator):
    """Send all traffic to the canary subset and remove the product's header routes.

    Takes only the parameters of :class:`CanaryTrafficOperator`; the canary subset must exist
    in the DestinationRule (``LookupError`` otherwise, nothing written).
    """

    def subsets_receiving(self, target: RouteTarget) -> tuple[str, ...]:
        return (target.canary_subset,)

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        return promote(vs, target)

    def change(self, router: Router, route: Document) -> Document:
        return router.promote(route)

    def services_receiving(self, router: Router) -> tuple[str, ...]:
        return (router.canary,)


class RollbackCanaryOperator(CanaryTrafficOperator):
    """Move every route's canary share back to the stable subset and remove the header routes.

    A rollback needs only the VirtualService: no DestinationRule is read (traffic goes back to
    the subset it came from), and routes outside ``route_name`` are rolled back too, so that
    afterwards no route sends to the canary. A rollback that cannot write raises
    ``RollbackFailedError`` with the reason and the VirtualService's split as last read.
    Takes the parameters of :class:`CanaryTrafficOperator`, and:

    :param reason: why the rollback happened, a string; logged at WARNING and returned in the
        XCom value under ``reason`` (templated)
    """

    template_fields: Sequence[str] = (*CanaryTrafficOperator.template_fields, "reason")
    ui_color = "#fde8e8"

    def __init__(self, *, reason: str = "rollback requested", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason

    def subsets_receiving(self, target: RouteTarget) -> tuple[str, ...]:
        return ()

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        return rollback(vs, target)

    def execute(self, context: Context) -> dict[str, Any]:
        # A bad rendered value is the DAG's mistake, not a failed write: no request is made.
        self.check_rendered()
        try:
            return super().execute(context)
        except Exception as err:
            raise RollbackFailedError(self._failure(err)) from err

    def _failure(self, err: Exception) -> str:
        """Why the rollback could not write, with the split the route object has now."""
        from airflow_canary.hooks.istio import IstioHook
        from airflow_canary.routing import gateway_api

        router = self.traffic_router()
        # As given: the name itself may be what was wrong.
        name = self.http_route if router.kind is RouterKind.GATEWAY_API else self.virtual_service
        message = (
            f"rollback of {router.route_object.kind} {name!r} in "
            f"{self.namespace!r} could not write: {type(err).__name__}: {err}"
        )
        try:
            route = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id).get_route(
                router, self.route, self.namespace
            )
            if isinstance(router, GatewayAPIRouter):
                current = gateway_api.read_split(route, router.target).describe()
            else:
                current = read_split(route, self.route_target()).describe()
        except Exception as read_err:  # the write's reason matters most; say why no split
            current = f"unknown ({type(read_err).__name__}: {read_err})"
        return f"{message}. Current split: {current}. Reason for the rollback: {self.reason}"

    def change(self, router: Router, route: Document) -> Document:
        return router.rollback(route)

    def check_backends(self, hook: IstioHook, router: Router, route: Document) -> None:
        """A rollback needs only the route: nothing is checked, so it works whatever broke."""

    def execute_on_router(self, router: Router) -> dict[str, Any]:
        result = super().execute_on_router(router)
        self.log.warning(
            "Rolled back %s %r in %r to %s. Reason: %s",
            router.route_object.kind,
            self.route,
            self.namespace,
            result["split"],
            self.reason,
        )
        return {**result, "reason": str(self.reason)}

    def router_result(self, router: Router, update: UpdateResult) -> dict[str, Any]:
        before = update.before
        live = router.read_split(before).canary_percent > 0 or bool(router.header_routes(before))
        return {
            **super().router_result(router, update),
            "rolled_back": live or router.mirror_percent(before) > 0,
            "live_traffic": live,
        }

    def result(self, update: UpdateResult, target: RouteTarget) -> dict[str, Any]:
        before = read_split(update.before, target)
        after = read_split(update.after, target)
        self.log.warning(
            "Rolling back VirtualService %r in %r: %s -> %s. Reason: %s",
            self.route,
            self.namespace,
            before.describe(),
            after.describe(),
            self.reason,
        )
        from airflow_canary.hooks.istio import traffic_result

        live = before.canary_share > 0 or bool(product_header_routes(update.before))
        had_canary = live or mirror_percent(update.before, target) > 0
        return traffic_result(
            self.namespace,
            target,
            update,
            reason=str(self.reason),
            rolled_back=had_canary,
            live_traffic=live,
        )


class RollbackFailedError(RuntimeError):
    """A rollback could not be written; the message has the reason and the current split."""


__all__ = [
    "CanaryTrafficOperator",
    "RollbackFailedError",
    "PromoteCanaryOperator",
    "RollbackCanaryOperator",
    "SetCanaryWeightOperator",
    "SetHeaderRouteOperator",
    "SetMirrorOperator",
]
