"""Airflow operators that move canary traffic on an Istio VirtualService: weights, header routes, promote, rollback."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator

from airflow_canary.routing import (
    HeaderRoute,
    RouteTarget,
    RoutingError,
    defined_subsets,
    promote,
    read_split,
    remove_header_route,
    rollback,
    set_canary_weight,
    set_header_route,
    validate_header_name,
    validate_header_route,
    validate_subsets,
    validate_weight,
)
from airflow_canary.templating import is_template

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_canary.hooks.istio import UpdateResult

# The Istio hook (and with it the Kubernetes client) is imported when a task runs, not when the
# DAG file is parsed.
Document = dict[str, Any]


def _literal(*values: object) -> bool:
    return not any(is_template(v) for v in values)


class CanaryTrafficOperator(BaseOperator):
    """Common base: one VirtualService, a stable and a canary subset, one pure transformation.

    Subclasses supply ``transform`` (a function from ``airflow_canary.routing``) and may check
    their own parameters in ``validate``; this class renders, validates the subsets against the
    DestinationRule before any write, applies the change conflict-safely and returns the XCom
    value described in docs/architecture.md.

    :param virtual_service: name of the VirtualService carrying the split (templated)
    :param namespace: its namespace (templated)
    :param stable_subset: DestinationRule subset serving the current model (templated)
    :param canary_subset: DestinationRule subset serving the new model (templated)
    :param route_name: the http route carrying the weights; default the catch-all route (templated)
    :param kubernetes_conn_id: the cncf-kubernetes connection to use (templated)
    """

    template_fields: Sequence[str] = (
        "virtual_service",
        "namespace",
        "stable_subset",
        "canary_subset",
        "route_name",
        "kubernetes_conn_id",
    )
    ui_color = "#e8f4fd"

    def __init__(
        self,
        *,
        virtual_service: str,
        namespace: str = "default",
        stable_subset: str = "v1",
        canary_subset: str = "v2",
        route_name: str | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.virtual_service = virtual_service
        self.namespace = namespace
        self.stable_subset = stable_subset
        self.canary_subset = canary_subset
        self.route_name = route_name
        self.kubernetes_conn_id = kubernetes_conn_id
        # Fail at DAG parse time for literal mistakes; templated values are checked in execute.
        for what, value in (("virtual_service", virtual_service), ("namespace", namespace)):
            if not isinstance(value, str) or not value.strip():
                raise RoutingError(f"{what} must be a non-empty string, got {value!r}")
        if _literal(stable_subset, canary_subset, route_name):
            self.route_target()

    def route_target(self) -> RouteTarget:
        return RouteTarget(
            stable_subset=self.stable_subset,
            canary_subset=self.canary_subset,
            route_name=self.route_name or None,
        )

    def validate(self) -> None:
        """Check this operator's own rendered parameters; raise RoutingError naming the value."""

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        raise NotImplementedError(f"{type(self).__name__} must define transform()")

    def check_subsets(self, destination_rule: Document, target: RouteTarget) -> None:
        """Raise unless the DestinationRule defines the subsets this step sends traffic to."""
        validate_subsets(destination_rule, target)

    def result(self, update: UpdateResult, target: RouteTarget) -> dict[str, Any]:
        from airflow_canary.hooks.istio import traffic_result

        return traffic_result(self.namespace, target, update)

    def execute(self, context: Context) -> dict[str, Any]:
        target = self.route_target()
        self.validate()
        from airflow_canary.hooks.istio import IstioHook, destination_host

        hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
        current = hook.get_virtual_service(self.virtual_service, self.namespace)
        host = destination_host(current, target)
        self.check_subsets(hook.get_destination_rule_for_host(host, self.namespace), target)
        update = hook.update_virtual_service(
            self.virtual_service, self.namespace, lambda vs: self.transform(vs, target)
        )
        result = self.result(update, target)
        self.log.info(
            "VirtualService %r in %r: split %s, header routes %s (%s after %d attempt(s))",
            self.virtual_service,
            self.namespace,
            result["split"],
            [r["name"] for r in result["header_routes"]],
            "changed" if update.changed else "already in place, nothing written",
            update.attempts,
        )
        return result


class SetCanaryWeightOperator(CanaryTrafficOperator):
    """Send ``weight`` percent of the weighted route to the canary subset, the rest to stable.

    :param weight: integer 0..100 (templated)
    """

    template_fields: Sequence[str] = (*CanaryTrafficOperator.template_fields, "weight")

    def __init__(self, *, weight: int | str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.weight = weight
        if _literal(weight):
            validate_weight(weight)

    def validate(self) -> None:
        validate_weight(self.weight)

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        return set_canary_weight(vs, target, validate_weight(self.weight))


class SetHeaderRouteOperator(CanaryTrafficOperator):
    """Route requests whose ``header`` matches ``value`` to the canary subset, ahead of the weights.

    With ``remove=True`` the product route for ``header`` is removed instead.

    :param header: HTTP header name (templated)
    :param value: value to match (templated)
    :param match_type: ``exact``, ``prefix`` or ``regex`` (templated)
    :param remove: remove the route instead of adding it
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

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        if self.remove:
            return remove_header_route(vs, target, self.header)
        return set_header_route(vs, target, self.header_route())


class PromoteCanaryOperator(CanaryTrafficOperator):
    """Send all traffic to the canary subset and remove the product's header routes."""

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        return promote(vs, target)


class RollbackCanaryOperator(CanaryTrafficOperator):
    """Send all traffic back to the stable subset and remove the product's header routes.

    Only the stable subset has to exist in the DestinationRule: a rollback must still work when
    the canary's subset is what went wrong.

    :param reason: why the rollback happened; logged at WARNING and returned (templated)
    """

    template_fields: Sequence[str] = (*CanaryTrafficOperator.template_fields, "reason")
    ui_color = "#fde8e8"

    def __init__(self, *, reason: str = "rollback requested", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.reason = reason

    def check_subsets(self, destination_rule: Document, target: RouteTarget) -> None:
        if target.stable_subset not in defined_subsets(destination_rule):
            validate_subsets(destination_rule, target)

    def transform(self, vs: Document, target: RouteTarget) -> Document:
        return rollback(vs, target)

    def result(self, update: UpdateResult, target: RouteTarget) -> dict[str, Any]:
        before = read_split(update.before, target).as_dict()
        after = read_split(update.after, target).as_dict()
        self.log.warning(
            "Rolling back VirtualService %r in %r: %s -> %s. Reason: %s",
            self.virtual_service,
            self.namespace,
            before,
            after,
            self.reason,
        )
        from airflow_canary.hooks.istio import traffic_result

        return traffic_result(
            self.namespace, target, update, reason=str(self.reason), rolled_back=True
        )


__all__ = [
    "CanaryTrafficOperator",
    "PromoteCanaryOperator",
    "RollbackCanaryOperator",
    "SetCanaryWeightOperator",
    "SetHeaderRouteOperator",
]
