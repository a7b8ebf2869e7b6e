"""Pure traffic routing on Istio VirtualService and DestinationRule documents."""

from __future__ import annotations

from airflow_canary.routing.destination_rule import (
    ROOT_NAMESPACE,
    ResolvedDestinationRule,
    defined_subsets,
    find_destination_rule,
    lookup_namespaces,
    validate_subsets,
)
from airflow_canary.routing.split import RouteSplit, TrafficSplit, percent
from airflow_canary.routing.values import (
    PRODUCT_ROUTE_PREFIX,
    HeaderRoute,
    MatchType,
    RouteTarget,
    RoutingError,
    product_route_name,
    validate_header_name,
    validate_header_route,
    validate_subset_name,
    validate_weight,
)
from airflow_canary.routing.virtual_service import (
    PROTOCOLS,
    check_target,
    managed_routes,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    remove_product_routes,
    rollback,
    rollout_host,
    set_canary_weight,
    set_header_route,
)

__all__ = [
    "ROOT_NAMESPACE",
    "ResolvedDestinationRule",
    "find_destination_rule",
    "lookup_namespaces",
    "PROTOCOLS",
    "RouteSplit",
    "check_target",
    "managed_routes",
    "percent",
    "rollout_host",
    "PRODUCT_ROUTE_PREFIX",
    "HeaderRoute",
    "MatchType",
    "RouteTarget",
    "RoutingError",
    "TrafficSplit",
    "defined_subsets",
    "product_header_routes",
    "product_route_name",
    "promote",
    "read_split",
    "remove_header_route",
    "remove_product_routes",
    "rollback",
    "set_canary_weight",
    "set_header_route",
    "validate_header_name",
    "validate_header_route",
    "validate_subset_name",
    "validate_subsets",
    "validate_weight",
]
