"""TrafficTarget: the one value every traffic task, the analysis and the rollback share."""

from __future__ import annotations

import dataclasses

import pytest

from airflow_canary.routing import RoutingError
from airflow_canary.target import TrafficTarget


def test_round_trips_through_its_json_form() -> None:
    target = TrafficTarget("model-vs", "ml", "stable", "canary", "primary", "k8s_prod")
    assert TrafficTarget.from_dict(target.to_dict()) == target
    assert target.route_target().route_names == ("primary",)
    several = TrafficTarget("model-vs", route_name=["primary", "tcp[0]"])
    assert several.to_dict()["route_name"] == ["primary", "tcp[0]"]
    assert TrafficTarget.from_dict(several.to_dict()) == several
    assert several.route_target().route_names == ("primary", "tcp[0]")
    with pytest.raises(dataclasses.FrozenInstanceError):
        target.namespace = "other"  # type: ignore[misc]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"route": ""}, "route must be a non-empty string, got ''"),
        ({"route": "vs", "namespace": " "}, "namespace must be a non-empty string"),
        ({"route": "vs", "canary_subset": "v1"}, "must differ, both are 'v1'"),
    ],
)
def test_literal_mistakes_fail_when_built(kwargs: dict, message: str) -> None:
    with pytest.raises(RoutingError, match=message):
        TrafficTarget(**kwargs)


def test_templated_values_wait_for_rendering() -> None:
    target = TrafficTarget("{{ params.vs }}", "{{ params.ns }}", canary_subset="{{ params.s }}")
    assert target.operator_kwargs()["virtual_service"] == "{{ params.vs }}"
