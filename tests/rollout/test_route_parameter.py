"""Every public surface names the route object in its router's own term, checked at parse time.

Istio's route object is a VirtualService (``virtual_service=``), Gateway API's an HTTPRoute
(``http_route=``). A DAG that passes the other one, both or neither fails when it is parsed,
naming the value and the parameter expected; templated names pass and render as before.
"""

from __future__ import annotations

from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_canary.analysis import AnalysisError, ErrorRateCheck
from airflow_canary.operators.analysis import BranchCanaryHealthOperator
from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
)
from airflow_canary.rollout import canary_rollout
from airflow_canary.rollout.operators import RolloutPlanOperator
from airflow_canary.routing import RoutingError
from airflow_canary.sensors.health import CanaryHealthSensor
from airflow_canary.target import TrafficTarget

CHECKS = [ErrorRateCheck(max_increase=0.02)]
GATEWAY = {"router": "gateway-api", "stable_subset": "model-v1", "canary_subset": "model-v2"}
WRONG_NAME = (
    "router='gateway-api' manages an HTTPRoute: pass http_route='model-route' instead of "
    "virtual_service=..."
)


def _dag() -> DAG:
    return DAG("t", start_date=pendulum.datetime(2026, 1, 1), schedule=None)


def test_canary_rollout_takes_http_route_with_gateway_api_and_passes_it_on() -> None:
    with _dag() as dag:
        canary_rollout(
            http_route="model-route", checks=CHECKS, bake_time=10, poll_interval=1, **GATEWAY
        )
    plan = dag.task_dict["canary.plan"]
    weight = dag.task_dict["canary.step_1.set_weight"]
    analyze = dag.task_dict["canary.step_1.analyze"]
    assert (plan.http_route, plan.virtual_service) == ("model-route", None)
    assert (weight.route, weight.http_route, weight.virtual_service) == ("model-route",) * 2 + (
        None,
    )
    assert analyze.http_route == "model-route" and analyze.virtual_service is None
    assert analyze.analysis.rollback is not None
    assert analyze.analysis.rollback.route == "model-route"
    assert dag.task_dict["canary.rollback"].route == "model-route"


def test_istio_users_code_is_unchanged() -> None:
    with _dag() as dag:
        canary_rollout(virtual_service="model-vs", checks=CHECKS, bake_time=10, poll_interval=1)
    weight = dag.task_dict["canary.step_1.set_weight"]
    assert (weight.virtual_service, weight.http_route, weight.route) == (
        "model-vs",
        None,
        "model-vs",
    )
    assert dag.task_dict["canary.plan"].virtual_service == "model-vs"


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"virtual_service": "model-route", **GATEWAY}, WRONG_NAME),
        (
            {"http_route": "model-route"},
            "router='istio' manages a VirtualService: pass virtual_service='model-route' instead of "
            "http_route=...",
        ),
        ({"virtual_service": "vs", "http_route": "r"}, "pass only virtual_service=, got"),
        ({**GATEWAY}, "router='gateway-api' manages an HTTPRoute: pass its name as http_route="),
        ({}, "router='istio' manages a VirtualService: pass its name as virtual_service="),
    ],
)
def test_canary_rollout_refuses_a_route_object_named_for_the_other_router(
    given: dict[str, Any], message: str
) -> None:
    with pytest.raises(
        RoutingError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        with _dag():
            canary_rollout(checks=CHECKS, bake_time=10, poll_interval=1, **given)


@pytest.mark.parametrize(
    "operator",
    [
        lambda **kw: SetCanaryWeightOperator(task_id="w", weight=10, **kw),
        lambda **kw: SetHeaderRouteOperator(task_id="h", **kw),
        lambda **kw: PromoteCanaryOperator(task_id="p", **kw),
        lambda **kw: RollbackCanaryOperator(task_id="r", **kw),
        lambda **kw: RolloutPlanOperator(
            task_id="plan",
            steps=[10, 100],
            steps_param=None,
            stable_version="v1",
            canary_version="v2",
            namespace="default",
            **{"stable_subset": "v1", "canary_subset": "v2", **kw},
        ),
    ],
    ids=["set_weight", "header_route", "promote", "rollback", "plan"],
)
def test_traffic_operators_refuse_virtual_service_with_gateway_api(operator: Any) -> None:
    with pytest.raises(
        RoutingError, match=r"pass http_route='model-route' instead of virtual_service="
    ):
        operator(virtual_service="model-route", **GATEWAY)
    with pytest.raises(RoutingError, match=r"pass virtual_service='vs' instead of http_route="):
        operator(http_route="vs")
    assert operator(http_route="model-route", **GATEWAY).route == "model-route"
    assert operator(virtual_service="vs").route == "vs"


@pytest.mark.parametrize("analysis", [CanaryHealthSensor, BranchCanaryHealthOperator])
def test_the_analysis_names_the_route_object_it_rolls_back_in_its_routers_term(
    analysis: Any,
) -> None:
    common: dict[str, Any] = {
        "task_id": "analyze",
        "namespace": "default",
        "checks": CHECKS,
        "bake_time": 10,
        "poll_interval": 1,
        "rollback_on_failure": True,
        **GATEWAY,
    }
    if analysis is BranchCanaryHealthOperator:
        common |= {"follow_task_ids_if_healthy": "a", "follow_task_ids_if_unhealthy": "b"}
    with pytest.raises(
        AnalysisError, match=r"pass http_route='model-route' instead of virtual_service="
    ):
        analysis(virtual_service="model-route", **common)
    with pytest.raises(
        AnalysisError,
        match=r"rollback_on_failure=True needs http_route, the name of the HTTPRoute to roll back",
    ):
        analysis(**common)
    with pytest.raises(
        AnalysisError, match=r"canary_weight needs virtual_service, the name of the VirtualService"
    ):
        analysis(
            **{
                **common,
                "router": "istio",
                "stable_subset": "v1",
                "canary_subset": "v2",
                "rollback_on_failure": False,
                "canary_weight": 10,
            }
        )
    task = analysis(http_route="model-route", canary_weight=10, **common)
    assert task.analysis.rollback.route == "model-route"
    assert task.analysis.weight_hold.target.route == "model-route"


def test_templated_route_names_are_checked_by_parameter_and_rendered_later() -> None:
    with _dag() as dag:
        canary_rollout(
            http_route="{{ params.route }}",
            namespace="{{ params.ns }}",
            checks=CHECKS,
            bake_time=10,
            poll_interval=1,
            **GATEWAY,
        )
    weight = dag.task_dict["canary.step_1.set_weight"]
    assert "http_route" in weight.template_fields
    weight.render_template_fields({"params": {"route": "model-route", "ns": "ml"}})
    assert (weight.route, weight.namespace) == ("model-route", "ml")
    analyze = dag.task_dict["canary.step_1.analyze"]
    assert analyze.analysis_templated
    analyze.render_template_fields({"params": {"route": "model-route", "ns": "ml"}})
    assert analyze.resolve_analysis().rollback.route == "model-route"
    # A template given under the other router's parameter is refused before it renders.
    with pytest.raises(RoutingError, match=r"pass http_route='\{\{ params.route \}\}' instead"):
        with _dag():
            canary_rollout(
                virtual_service="{{ params.route }}",
                checks=CHECKS,
                bake_time=10,
                poll_interval=1,
                **GATEWAY,
            )


def test_the_traffic_target_passes_the_route_object_under_its_routers_parameter() -> None:
    target = TrafficTarget("model-route", **GATEWAY)
    assert target.operator_kwargs()["http_route"] == "model-route"
    assert "virtual_service" not in target.operator_kwargs()
    assert TrafficTarget("vs").operator_kwargs()["virtual_service"] == "vs"


def test_backend_namespace_reaches_every_traffic_task_and_the_analysis() -> None:
    with _dag() as dag:
        canary_rollout(
            http_route="model-route",
            backend_namespace="models",
            checks=CHECKS,
            bake_time=10,
            poll_interval=1,
            **GATEWAY,
        )
    for task_id in (
        "canary.plan",
        "canary.header_route",
        "canary.step_1.set_weight",
        "canary.rollback",
    ):
        assert dag.task_dict[task_id].backend_namespace == "models", task_id
    analysis = dag.task_dict["canary.step_1.analyze"].analysis
    assert analysis.rollback.backend_namespace == "models"
    assert analysis.rollback.traffic_router().target.namespace == "models"
    with pytest.raises(RoutingError, match="backend_namespace is a Gateway API setting"):
        with _dag():
            canary_rollout(
                virtual_service="vs",
                backend_namespace="models",
                checks=CHECKS,
                bake_time=10,
                poll_interval=1,
            )
