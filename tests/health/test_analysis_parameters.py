"""One list of analysis parameters: ``HealthAnalysisConfig.from_params``.

The sensor and the branch operator declare the same parameters explicitly (Airflow's
rendered-templates view and their ``:param`` docs need real keyword-only parameters), so these
tests hold the three signatures, the attributes the operators keep, the config's fields and
the trigger's serialised form to that one list.
"""

from __future__ import annotations

import dataclasses
import inspect
from datetime import timedelta
from typing import Any

import pytest

from airflow_canary.analysis import ErrorRateCheck, LatencyCheck
from airflow_canary.operators.analysis import BranchCanaryHealthOperator
from airflow_canary.sensors.health import (
    ANALYSIS_PARAMS,
    ANALYSIS_TEMPLATE_FIELDS,
    CanaryHealthSensor,
)
from airflow_canary.triggers.health import CanaryHealthTrigger, HealthAnalysisConfig

SOURCE = inspect.signature(HealthAnalysisConfig.from_params).parameters
#: what each operator takes beyond the analysis parameters
OWN_PARAMETERS = {
    CanaryHealthSensor: {"deferrable", "dashboard_url_template"},
    BranchCanaryHealthOperator: {
        "follow_task_ids_if_healthy",
        "follow_task_ids_if_unhealthy",
        "deferrable",
        "dashboard_url_template",
    },
}
OPERATORS = list(OWN_PARAMETERS)


def _parameters(cls: type) -> dict[str, inspect.Parameter]:
    parameters = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    return {
        name: p for name, p in parameters.items() if name != "self" and p.kind is not p.VAR_KEYWORD
    }


def test_the_source_lists_the_parameters_the_operators_document() -> None:
    assert ANALYSIS_PARAMS == tuple(SOURCE)
    assert "namespace" in ANALYSIS_PARAMS and "checks" in ANALYSIS_PARAMS
    assert set(ANALYSIS_TEMPLATE_FIELDS) <= set(ANALYSIS_PARAMS)


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_the_operator_declares_exactly_the_analysis_parameters(cls: type) -> None:
    declared = _parameters(cls)
    assert set(declared) - OWN_PARAMETERS[cls] == set(SOURCE)
    for name, source in SOURCE.items():
        parameter = declared[name]
        assert parameter.kind is parameter.KEYWORD_ONLY, name
        assert (parameter.default, parameter.annotation) == (source.default, source.annotation), (
            f"{cls.__name__}({name}) differs from HealthAnalysisConfig.from_params"
        )


# Every analysis parameter away from its default, so a value lost on the way shows.
VALUES: dict[str, Any] = {
    "namespace": "models",
    "checks": [ErrorRateCheck(max_increase=0.02), LatencyCheck(quantile=0.99, max_ms=250)],
    "stable_version": "blue",
    "canary_version": "green",
    "judge": "threshold",
    "judge_options": {"failure_threshold": 2},
    "bake_time": timedelta(seconds=40),
    "poll_interval": 4,
    "max_inconclusive_polls": 5,
    "prometheus_conn_id": "prom",
    "timeout": 300,
    "rollback_on_failure": True,
    "virtual_service": None,  # Gateway API's route object is http_route; see ISTIO_VALUES
    "http_route": "model-route",
    "stable_subset": "blue-service",
    "canary_subset": "green-service",
    "route_name": ["primary"],
    "kubernetes_conn_id": "k8s",
    "canary_weight": 25,
    "on_weight_change": "reassert",
    "router": "gateway-api",
    "backend_namespace": "model-backends",
}
#: The same with Istio: virtual_service names the route object (it and http_route exclude each
#: other, so one of them is at its default in each set).
ISTIO_VALUES: dict[str, Any] = {
    **VALUES,
    "virtual_service": "model-vs",
    "http_route": None,
    "backend_namespace": None,
    "stable_subset": "blue-subset",
    "canary_subset": "green-subset",
    "router": "istio",
}
EXTRA: dict[type, dict[str, Any]] = {
    CanaryHealthSensor: {},
    BranchCanaryHealthOperator: {
        "follow_task_ids_if_healthy": "next",
        "follow_task_ids_if_unhealthy": "gate",
    },
}


def test_the_values_cover_every_parameter_with_a_non_default() -> None:
    assert set(VALUES) == set(ISTIO_VALUES) == set(SOURCE)
    assert all(
        VALUES[name] != p.default or ISTIO_VALUES[name] != p.default for name, p in SOURCE.items()
    )


@pytest.mark.parametrize("values", [VALUES, ISTIO_VALUES], ids=["gateway-api", "istio"])
@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_the_operator_keeps_every_parameter_and_builds_the_same_config(
    cls: type, values: dict[str, Any]
) -> None:
    operator = cls(task_id="judge", deferrable=True, **EXTRA[cls], **values)
    # one helper reads the parameters back from the attributes (the rendered values at run time)
    assert operator.analysis_values() == values
    assert operator.analysis == HealthAnalysisConfig.from_params(**values)
    assert operator.resolve_analysis() == HealthAnalysisConfig.from_params(**values)
    for name in ANALYSIS_TEMPLATE_FIELDS:
        assert name in cls.template_fields


@pytest.mark.parametrize("cls", OPERATORS, ids=lambda cls: cls.__name__)
def test_templated_parameters_are_resolved_from_the_rendered_attributes(cls: type) -> None:
    templated = {**VALUES, "namespace": "{{ params.ns }}", "bake_time": "{{ params.bake }}"}
    operator = cls(task_id="judge", deferrable=True, **EXTRA[cls], **templated)
    assert operator.analysis_templated
    operator.namespace = "models"  # what rendering the templates does
    operator.bake_time = "40"
    assert operator.resolve_analysis() == HealthAnalysisConfig.from_params(**VALUES)


def test_the_trigger_takes_the_configs_fields_and_serialises_exactly_its_parameters() -> None:
    fields = {f.name for f in dataclasses.fields(HealthAnalysisConfig) if f.init}
    trigger_parameters = set(_parameters(CanaryHealthTrigger))
    assert trigger_parameters == fields | {"started_at", "progress_xcom"}
    config = HealthAnalysisConfig.from_params(**VALUES)
    trigger = config.trigger(started_at=1_700_000_000.0)
    classpath, kwargs = trigger.serialize()
    assert set(kwargs) == trigger_parameters
    assert classpath == "airflow_canary.triggers.health.CanaryHealthTrigger"
    # the triggerer rebuilds it from serialize(): the same analysis, nothing lost
    rebuilt = CanaryHealthTrigger(**kwargs)
    assert rebuilt.serialize() == (classpath, kwargs)
    assert rebuilt.config == config
