"""Templated parameters rendered to hostile values: refused when the task runs, nothing written.

Against the local mesh's Kubernetes API with the seed's VirtualService: each operator is built
with a Jinja template, rendered by Airflow with a generated value, then executed. A value the
reference rule refuses must raise naming it, before any write: the VirtualService's
``resourceVersion`` (which kube-apiserver bumps on every stored change) stays the same.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings

from airflow_canary.analysis import ErrorRateCheck
from airflow_canary.operators.deploy import DeployModelVersionOperator, ScaleDeploymentOperator
from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    RollbackFailedError,
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
)
from airflow_canary.sensors.health import CanaryHealthSensor
from tests.fixtures.mesh import VIRTUAL_SERVICE, Seeded
from tests.hostile import values as rules
from tests.hostile.values import TEXT

RENDERED = settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.filter_too_much],
)

TRAFFIC_CASES: list[tuple[type, str, Callable[[Any], bool]]] = [
    (SetCanaryWeightOperator, "namespace", rules.dns1123_label),
    (SetCanaryWeightOperator, "virtual_service", rules.dns1123_subdomain),
    (SetCanaryWeightOperator, "weight", rules.weight),
    (SetCanaryWeightOperator, "canary_subset", rules.dns1123_label),
    (SetHeaderRouteOperator, "value", rules.field_value),
    (SetHeaderRouteOperator, "header", rules.header_name),
    (PromoteCanaryOperator, "stable_subset", rules.dns1123_label),
    (RollbackCanaryOperator, "namespace", rules.dns1123_label),
    (RollbackCanaryOperator, "virtual_service", rules.dns1123_subdomain),
]


def _rendered(operator: Any, value: str) -> Any:
    """Render the operator's templates as a task run does, with ``params.value`` = ``value``."""
    operator.render_template_fields({"params": {"value": value}})
    return operator


def _resource_version(seeded: Seeded) -> str:
    path = f"/apis/networking.istio.io/v1/namespaces/{seeded.namespace}/virtualservices/{VIRTUAL_SERVICE}"
    with seeded.mesh.http() as client:
        answer = client.get(path)
    answer.raise_for_status()
    version: str = answer.json()["metadata"]["resourceVersion"]
    return version


def _deployments(seeded: Seeded) -> list[str]:
    with seeded.mesh.http() as client:
        answer = client.get(f"/apis/apps/v1/namespaces/{seeded.namespace}/deployments")
    answer.raise_for_status()
    return sorted(
        f"{d['metadata']['name']}@{d['metadata']['resourceVersion']}"
        for d in answer.json()["items"]
    )


@pytest.mark.parametrize(
    "cls,param,rule", TRAFFIC_CASES, ids=[f"{c.__name__}.{p}" for c, p, _ in TRAFFIC_CASES]
)
@RENDERED
@given(value=TEXT)
def test_traffic_operators_refuse_rendered_values_and_write_nothing(
    seeded: Seeded, cls: type, param: str, rule: Callable[[Any], bool], value: str
) -> None:
    assume(not rule(value) and value.strip() != "")
    kwargs: dict[str, Any] = {
        "task_id": "t",
        "virtual_service": VIRTUAL_SERVICE,
        "namespace": seeded.namespace,
        param: "{{ params.value }}",
    }
    if cls is SetCanaryWeightOperator:
        kwargs.setdefault("weight", 10) if param != "weight" else None
    operator = _rendered(cls(**kwargs), value)
    assert getattr(operator, param) == value
    before = _resource_version(seeded)
    with pytest.raises((ValueError, RollbackFailedError)) as raised:
        operator.execute(context={})
    assert repr(value) in str(raised.value)
    assert _resource_version(seeded) == before


@pytest.mark.parametrize(
    "param,rule",
    [("namespace", rules.dns1123_label), ("virtual_service", rules.dns1123_subdomain)],
)
@RENDERED
@given(value=TEXT)
def test_the_analysis_refuses_rendered_values_before_any_rollback(
    seeded: Seeded, param: str, rule: Callable[[Any], bool], value: str
) -> None:
    assume(not rule(value) and value.strip() != "")
    names = {"namespace": seeded.namespace, "virtual_service": VIRTUAL_SERVICE}
    sensor = CanaryHealthSensor(
        task_id="analyze",
        **{**names, param: "{{ params.value }}"},
        checks=[ErrorRateCheck(max_rate=0.01)],
        rollback_on_failure=True,
        bake_time=30,
        poll_interval=10,
        deferrable=False,
    )
    _rendered(sensor, value)
    before = _resource_version(seeded)
    with pytest.raises(ValueError) as raised:
        sensor.execute(context={})
    assert repr(value) in str(raised.value)
    assert _resource_version(seeded) == before


@RENDERED
@given(value=TEXT)
def test_deploy_operators_refuse_rendered_names_and_apply_nothing(
    seeded: Seeded, value: str
) -> None:
    deploy = DeployModelVersionOperator(
        task_id="deploy",
        manifest={"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "m"}},
        namespace="{{ params.value }}",
        wait_for_ready=False,
    )
    scale = ScaleDeploymentOperator(
        task_id="scale", deployment="{{ params.value }}", namespace=seeded.namespace, replicas=0
    )
    before = _deployments(seeded)
    for operator, rule in ((deploy, rules.dns1123_label), (scale, rules.dns1123_subdomain)):
        if rule(value):
            continue
        with pytest.raises(ValueError) as raised:
            _rendered(operator, value).execute(context={})
        assert repr(value) in str(raised.value)
    assert _deployments(seeded) == before


@RENDERED
@given(
    text=TEXT.map(
        lambda v: f"apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: m\n  name: {v!r}\n"
    )
)
def test_a_rendered_manifest_with_a_key_twice_applies_nothing(seeded: Seeded, text: str) -> None:
    deploy = DeployModelVersionOperator(
        task_id="deploy",
        manifest="{{ params.value }}",
        namespace=seeded.namespace,
        wait_for_ready=False,
    )
    before = _deployments(seeded)
    with pytest.raises(ValueError, match="mapping key 'name' defined twice|not valid YAML"):
        _rendered(deploy, text).execute(context={})
    assert _deployments(seeded) == before
