"""Mirroring on Istio VirtualServices: set on the weighted route, removed only when it targets the canary."""

from __future__ import annotations

import copy

import pytest
import yaml

from airflow_canary.routing import RouteTarget, RoutingError
from airflow_canary.routing.istio_mirror import mirror_percent, remove_mirror, set_mirror
from tests.conftest import seed_manifest
from tests.schemas import assert_valid_istio

TARGET = RouteTarget()
VS = yaml.safe_load(seed_manifest("vs-00-all-v1").read_text())


def test_mirror_on_replace_and_off() -> None:
    out = set_mirror(VS, TARGET, 5)
    assert_valid_istio(out)
    assert out["spec"]["http"][0]["mirror"] == {"host": "model-service", "subset": "v2"}
    assert out["spec"]["http"][0]["mirrorPercentage"] == {"value": 5.0}
    assert mirror_percent(out, TARGET) == 5.0
    assert mirror_percent(set_mirror(out, TARGET, 40), TARGET) == 40.0
    assert remove_mirror(out, TARGET) == VS
    assert VS == yaml.safe_load(seed_manifest("vs-00-all-v1").read_text())  # input untouched


def test_a_users_mirror_elsewhere_is_kept_and_not_overwritten() -> None:
    vs = copy.deepcopy(VS)
    vs["spec"]["http"][0]["mirror"] = {"host": "audit-service"}
    assert remove_mirror(vs, TARGET) == vs
    with pytest.raises(RoutingError, match="already mirrors to .*audit-service"):
        set_mirror(vs, TARGET, 10)


@pytest.mark.parametrize("percent", [101, -1, "half"])
def test_percent_must_be_0_to_100(percent: object) -> None:
    with pytest.raises(RoutingError, match="0..100"):
        set_mirror(VS, TARGET, percent)
