"""Which DestinationRule Istio applies to a host, following PushContext.destinationRule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.routing import (
    RouteTarget,
    RoutingError,
    find_destination_rule,
    lookup_namespaces,
    rollout_host,
)

FIELD_CASES = Path(__file__).parents[1] / "data" / "field-cases"
HOST = "model-service.team-a.svc.cluster.local"


def _rule(
    name: str,
    namespace: str,
    host: str = "model-service",
    subsets: tuple[str, ...] = ("v1", "v2"),
    export_to: list[str] | None = None,
    created: str = "2026-01-01T00:00:00Z",
) -> dict[str, Any]:
    spec: dict[str, Any] = {"host": host, "subsets": [{"name": s} for s in subsets]}
    if export_to is not None:
        spec["exportTo"] = export_to
    return {
        "metadata": {"name": name, "namespace": namespace, "creationTimestamp": created},
        "spec": spec,
    }


def test_field_case_rule_beside_the_workload_is_found_from_the_gateway_namespace() -> None:
    with open(FIELD_CASES / "14-dr-namespace-rollback.yaml", encoding="utf-8") as handle:
        vs, rule = yaml.safe_load_all(handle)
    host = rollout_host(vs, RouteTarget())
    assert host == HOST
    assert lookup_namespaces(host, "istio-gateways") == ["istio-gateways", "team-a", "istio-system"]
    found = find_destination_rule(host, "istio-gateways", [rule])
    assert found is not None
    assert (found.namespace, found.names, found.subsets) == (
        "team-a",
        ("model-service",),
        ("v1", "v2"),
    )
    found.require(["v1", "v2"])


def test_the_clients_own_namespace_wins_even_over_an_exact_match_elsewhere() -> None:
    local = _rule("local", "istio-gateways", host="*.svc.cluster.local", subsets=("v1",))
    beside = _rule("beside", "team-a")
    found = find_destination_rule(HOST, "istio-gateways", [beside, local])
    assert found is not None and found.names == ("local",)
    with pytest.raises(RoutingError, match="does not define subset 'v2'; its subsets are: 'v1'"):
        found.require(["v1", "v2"])


@pytest.mark.parametrize(
    ("export_to", "visible"),
    [
        (None, True),
        (["*"], True),
        (["istio-gateways"], True),
        (["."], False),
        (["team-a"], False),
        (["~"], False),
        (["other"], False),
    ],
)
def test_export_to_decides_visibility_from_other_namespaces(
    export_to: list[str] | None, visible: bool
) -> None:
    found = find_destination_rule(
        HOST, "istio-gateways", [_rule("dr", "team-a", export_to=export_to)]
    )
    assert (found is not None) is visible


def test_root_namespace_is_the_last_resort_and_its_private_rules_serve_only_itself() -> None:
    root = _rule("mesh-wide", "istio-system", host="*.cluster.local", subsets=("v1", "v2"))
    found = find_destination_rule(HOST, "istio-gateways", [root])
    assert found is not None and found.namespace == "istio-system"
    private = _rule("root-private", "istio-system", export_to=["."], host=HOST)
    assert find_destination_rule(HOST, "istio-gateways", [private]) is None
    from_root = find_destination_rule(HOST, "istio-system", [private])
    assert from_root is not None and from_root.names == ("root-private",)


def test_most_specific_host_wins_and_rules_for_one_host_merge_oldest_first() -> None:
    wildcard = _rule("wild", "team-a", host="*.team-a.svc.cluster.local", subsets=("v9",))
    older = _rule("a-old", "team-a", subsets=("v1",), created="2026-01-01T00:00:00Z")
    newer = _rule("b-new", "team-a", subsets=("v1", "v2"), created="2026-02-01T00:00:00Z")
    found = find_destination_rule(HOST, "team-a", [wildcard, newer, older])
    assert found is not None
    assert found.names == ("a-old", "b-new") and found.subsets == ("v1", "v2")
    assert [s["name"] for s in found.as_document()["spec"]["subsets"]] == ["v1", "v2"]


def test_short_rule_hosts_resolve_in_the_rules_own_namespace() -> None:
    # "model-service" in team-b is model-service.team-b..., not the team-a service.
    assert find_destination_rule(HOST, "team-b", [_rule("dr", "team-b")]) is None
    assert find_destination_rule("model-service", "team-b", [_rule("dr", "team-b")]) is not None
