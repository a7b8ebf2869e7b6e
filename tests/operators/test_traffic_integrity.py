"""The whole service moves together and a rollback always rolls back, on the local mesh.

Pins Istio's behaviour that a DestinationRule is found from the client's namespace, then the
service's, then the root namespace (pilot/pkg/model/push_context.go, destinationRule), and
that a VirtualService's tcp and tls routes carry traffic exactly like its http routes.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.hooks.istio import IstioNotFoundError
from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    RollbackFailedError,
    SetCanaryWeightOperator,
)
from airflow_canary.rollout.operators import RolloutPlanOperator
from airflow_canary.routing import RouteTarget, RoutingError, read_split
from tests.fixtures.mesh import Mesh, Seeded

FIELD_CASES = Path(__file__).parents[1] / "data" / "field-cases"
TARGET = RouteTarget()


def _field_case(name: str) -> list[dict[str, Any]]:
    with open(FIELD_CASES / name, encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc]


def _apply(mesh: Mesh, doc: dict[str, Any]) -> None:
    run = mesh.kubectl("apply", "-f", "-", input=json.dumps(doc))
    assert run.returncode == 0, run.stderr


def _stored(mesh: Mesh, name: str, namespace: str) -> dict[str, Any]:
    run = mesh.kubectl("-n", namespace, "get", "virtualservice", name, "-o", "json")
    assert run.returncode == 0, run.stderr
    loaded: dict[str, Any] = json.loads(run.stdout)
    return loaded


@pytest.fixture
def tcp_and_http(seeded: Seeded) -> Seeded:
    """Field case 01: an http and a tcp route, both 90/10, beside the seed's DestinationRule."""
    vs = _field_case("01-tcp-tls-routes.yaml")[0]
    vs["metadata"] = {"name": "model-virtual-service", "namespace": seeded.namespace}
    _apply(seeded.mesh, vs)
    return seeded


@pytest.fixture
def gateway_layout(mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """Field case 14: the VirtualService in a gateway namespace, the DestinationRule beside the
    workload in another; yields (gateway namespace, workload namespace)."""
    for key, value in mesh.env.items():
        monkeypatch.setenv(key, value)
    suffix = secrets.token_hex(3)
    gateways, team = f"gw-{suffix}", f"team-{suffix}"
    for namespace in (gateways, team):
        mesh.create_namespace(namespace)
    vs, rule = _field_case("14-dr-namespace-rollback.yaml")
    vs["metadata"]["namespace"] = gateways
    for entry in vs["spec"]["http"][0]["route"]:
        entry["destination"]["host"] = f"model-service.{team}.svc.cluster.local"
    rule["metadata"]["namespace"] = team
    _apply(mesh, rule)
    _apply(mesh, vs)
    yield gateways, team
    for namespace in (gateways, team):
        mesh.delete_namespace(namespace)


def _routes(vs: dict[str, Any]) -> list[dict[str, Any]]:
    return read_split(vs, TARGET).routes_as_list()


def test_field_case_01_rollback_moves_the_tcp_route_too(tcp_and_http: Seeded) -> None:
    common = {"virtual_service": "model-virtual-service", "namespace": tcp_and_http.namespace}
    result = RollbackCanaryOperator(task_id="rb", reason="errors", **common).execute(context={})  # type: ignore[arg-type]
    assert result["rolled_back"] is True
    assert result["routes"] == [
        {"route": "primary", "protocol": "http", "split": {"v1": 100}},
        {"route": "tcp[0]", "protocol": "tcp", "split": {"v1": 100}},
    ]
    assert _routes(tcp_and_http.stored()) == result["routes"]


def test_field_case_01_promote_leaves_nothing_on_stable(tcp_and_http: Seeded) -> None:
    common = {"virtual_service": "model-virtual-service", "namespace": tcp_and_http.namespace}
    result = PromoteCanaryOperator(task_id="p", **common).execute(context={})  # type: ignore[arg-type]
    assert [r["split"] for r in result["routes"]] == [{"v2": 100}, {"v2": 100}]
    assert read_split(tcp_and_http.stored(), TARGET).routes_sending_to("v1") == []


def test_plan_names_the_routes_route_name_leaves_out(tcp_and_http: Seeded) -> None:
    plan = RolloutPlanOperator(
        task_id="plan",
        steps=[10, 50],
        steps_param=None,
        virtual_service="model-virtual-service",
        namespace=tcp_and_http.namespace,
        stable_subset="v1",
        canary_subset="v2",
        stable_version="v1",
        canary_version="v2",
        route_name="primary",
    )
    before = tcp_and_http.stored()
    with pytest.raises(Exception, match=r"no traffic was moved: .*route\(s\) 'tcp\[0\]'"):
        plan.execute(context={"params": {}})
    assert tcp_and_http.stored() == before
    plan.route_name = ["primary", "tcp[0]"]
    published = plan.execute(context={"params": {}})
    assert [r["route"] for r in published["routes"]] == ["primary", "tcp[0]"]


def test_destination_rule_in_the_services_namespace_is_found_and_rollback_needs_none(
    mesh: Mesh, gateway_layout: tuple[str, str]
) -> None:
    gateways, team = gateway_layout
    common = {"virtual_service": "model-service", "namespace": gateways}
    stepped = SetCanaryWeightOperator(task_id="w", weight=50, **common).execute(context={})  # type: ignore[arg-type]
    assert stepped["routes"] == [
        {"route": "primary", "protocol": "http", "split": {"v1": 50, "v2": 50}}
    ]
    mesh.kubectl("-n", team, "delete", "destinationrule", "model-service")
    with pytest.raises(
        IstioNotFoundError, match=f"searched '{gateways}', '{team}', 'istio-system'"
    ):
        SetCanaryWeightOperator(task_id="w2", weight=60, **common).execute(context={})  # type: ignore[arg-type]
    result = RollbackCanaryOperator(task_id="rb", **common).execute(context={})  # type: ignore[arg-type]
    assert result["rolled_back"] is True and result["split"] == {"v1": 100, "v2": 0}
    assert _routes(_stored(mesh, "model-service", gateways)) == [
        {"route": "primary", "protocol": "http", "split": {"v1": 100}}
    ]


def test_nothing_to_roll_back_only_when_nothing_reaches_the_canary(seeded: Seeded) -> None:
    common = {"virtual_service": "model-virtual-service", "namespace": seeded.namespace}
    result = RollbackCanaryOperator(task_id="rb", **common).execute(context={})  # type: ignore[arg-type]
    assert result["rolled_back"] is False and result["changed"] is False


def test_a_rollback_that_cannot_write_fails_loudly(seeded: Seeded) -> None:
    operator = RollbackCanaryOperator(
        task_id="rb", virtual_service="gone", namespace=seeded.namespace, reason="p99 doubled"
    )
    with pytest.raises(RollbackFailedError) as info:
        operator.execute(context={})  # type: ignore[arg-type]
    message = str(info.value)
    assert "rollback of VirtualService 'gone'" in message and "could not write" in message
    assert "Current split: unknown (IstioNotFoundError" in message
    assert "Reason for the rollback: p99 doubled" in message


def test_a_weight_step_without_the_canary_subset_moves_nothing(tcp_and_http: Seeded) -> None:
    before = tcp_and_http.stored()
    tcp_and_http.kubectl("delete", "destinationrule", "model-destination")
    with pytest.raises(IstioNotFoundError, match="no DestinationRule for host 'model-service"):
        SetCanaryWeightOperator(
            task_id="w",
            weight=50,
            virtual_service="model-virtual-service",
            namespace=tcp_and_http.namespace,
        ).execute(context={})  # type: ignore[arg-type]
    assert tcp_and_http.stored() == before
    with pytest.raises(RoutingError, match="route_name must name at least one route"):
        SetCanaryWeightOperator(
            task_id="w", weight=10, virtual_service="model-virtual-service", route_name=[]
        )


DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    from airflow.providers.standard.operators.bash import BashOperator
    from airflow.sdk import DAG

    from airflow_canary.rollout.operators import RolloutRollbackOperator
    from airflow_canary.operators.traffic import SetCanaryWeightOperator

    with DAG("canary_dr_deleted", schedule=None, params={"ns": "default"}) as dag:
        common = {"virtual_service": "model-virtual-service", "namespace": "{{ params.ns }}"}
        step = SetCanaryWeightOperator(task_id="step", weight=10, **common)
        delete = BashOperator(
            task_id="delete_destination_rule",
            bash_command="/usr/bin/kubectl -n {{ params.ns }} delete destinationrule model-destination",
        )
        rollback = RolloutRollbackOperator(
            task_id="rollback", analysis_task_ids=[], reason="", **common
        )
        step >> delete >> rollback
    """
)


def test_rollout_rollback_with_the_destination_rule_deleted_mid_rollout(
    tcp_and_http: Seeded, airflow_db: Path
) -> None:
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "canary_dr_deleted.py").write_text(DAG_FILE)
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "canary_dr_deleted",
            "-c",
            json.dumps({"ns": tcp_and_http.namespace}),
        ],
        env={**os.environ, **tcp_and_http.mesh.env},
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert (
        "http primary: v1 90% v2 10%; tcp[0]: v1 90% v2 10% -> http primary: v1 100%; "
        "tcp[0]: v1 100%"
    ) in output
    assert _routes(tcp_and_http.stored()) == [
        {"route": "primary", "protocol": "http", "split": {"v1": 100}},
        {"route": "tcp[0]", "protocol": "tcp", "split": {"v1": 100}},
    ]
