"""Traffic operators against the local mesh: the seed's rollout manifests, validation, a real DAG run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
)
from airflow_canary.routing import RoutingError
from tests.conftest import seed_manifest
from tests.fixtures.mesh import Seeded
from tests.schemas import assert_valid_istio

VS = "model-virtual-service"
COMMON: dict[str, Any] = {"virtual_service": VS, "namespace": "default"}


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _without_route_names(spec: dict[str, Any]) -> dict[str, Any]:
    return {**spec, "http": [{k: v for k, v in r.items() if k != "name"} for r in spec["http"]]}


@pytest.mark.parametrize("weight", [150, -1, "ten", 2.5, True, None])
def test_invalid_weight_fails_when_the_dag_is_parsed(weight: Any) -> None:
    with pytest.raises(RoutingError, match=f"weight must be an integer 0..100, got {weight!r}"):
        SetCanaryWeightOperator(task_id="w", weight=weight, **COMMON)


def test_invalid_literals_fail_at_parse_and_templates_wait_for_rendering() -> None:
    with pytest.raises(RoutingError, match="match_type must be one of exact, prefix, regex"):
        SetHeaderRouteOperator(task_id="h", match_type="glob", **COMMON)
    with pytest.raises(RoutingError, match="header must be an HTTP header name"):
        SetHeaderRouteOperator(task_id="h", header="bad header", **COMMON)
    with pytest.raises(RoutingError, match="stable_subset and canary_subset must differ"):
        PromoteCanaryOperator(task_id="p", stable_subset="v2", **COMMON)
    with pytest.raises(RoutingError, match="virtual_service must be a non-empty string"):
        PromoteCanaryOperator(task_id="p", virtual_service="")
    templated = SetCanaryWeightOperator(task_id="w", weight="{{ params.weight }}", **COMMON)
    assert (
        "weight" in templated.template_fields and "reason" in RollbackCanaryOperator.template_fields
    )


def test_operators_reproduce_the_seed_rollout(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    steps = [
        (SetCanaryWeightOperator(task_id="w1", weight=1, **common), "vs-01-canary-1.yaml"),
        (SetCanaryWeightOperator(task_id="w10", weight="10", **common), "vs-02-canary-10.yaml"),
        (SetCanaryWeightOperator(task_id="w50", weight=50, **common), "vs-03-canary-50.yaml"),
        (PromoteCanaryOperator(task_id="promote", **common), "vs-04-all-v2.yaml"),
    ]
    for operator, manifest in steps:
        result = operator.execute(context={})  # type: ignore[arg-type]
        stored = seeded.stored()
        assert stored["spec"] == _load(seed_manifest(manifest))["spec"], manifest
        assert_valid_istio(stored)
        assert result["changed"] is True and result["virtual_service"] == VS
        assert sum(result["split"].values()) == 100
    assert result["split"] == {"v1": 0, "v2": 100}


def test_header_route_matches_the_seed_and_is_idempotent(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    operator = SetHeaderRouteOperator(task_id="h", **common)
    result = operator.execute(context={})  # type: ignore[arg-type]
    stored = seeded.stored()
    assert stored["spec"]["http"][0]["name"] == "airflow-canary-header-x-canary-version"
    assert (
        _without_route_names(stored["spec"]) == _load(seed_manifest("vs-05-header-v2.yaml"))["spec"]
    )
    assert_valid_istio(stored)
    assert result["header_routes"] == [
        {
            "name": "airflow-canary-header-x-canary-version",
            "header": "x-canary-version",
            "value": "v2",
            "match_type": "exact",
            "subset": "v2",
        }
    ]
    version = stored["metadata"]["resourceVersion"]
    assert operator.execute(context={})["changed"] is False  # type: ignore[arg-type]
    assert seeded.stored()["metadata"]["resourceVersion"] == version
    removed = SetHeaderRouteOperator(task_id="r", remove=True, **common).execute(context={})  # type: ignore[arg-type]
    assert removed["header_routes"] == [] and removed["changed"] is True


def test_missing_subset_lists_the_defined_ones_and_leaves_traffic(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    before = seeded.stored()
    operator = SetCanaryWeightOperator(task_id="w", weight=10, canary_subset="v3", **common)
    with pytest.raises(
        RoutingError, match="does not define subset 'v3'; its subsets are: 'v1', 'v2'"
    ):
        operator.execute(context={})  # type: ignore[arg-type]
    assert seeded.stored() == before


def test_unrendered_template_is_rejected_at_execute(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    operator = SetCanaryWeightOperator(task_id="w", weight="{{ params.weight }}", **common)
    with pytest.raises(RoutingError, match="got '\\{\\{ params.weight \\}\\}'"):
        operator.execute(context={})  # type: ignore[arg-type]


def test_rollback_returns_reason_and_removes_header_routes(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    SetHeaderRouteOperator(task_id="h", **common).execute(context={})  # type: ignore[arg-type]
    SetCanaryWeightOperator(task_id="w", weight=10, **common).execute(context={})  # type: ignore[arg-type]
    result = RollbackCanaryOperator(task_id="rb", reason="p99 latency doubled", **common).execute(
        context={}  # type: ignore[arg-type]
    )
    assert result["split"] == {"v1": 100, "v2": 0}
    assert result["header_routes"] == []
    assert result["rolled_back"] is True and result["reason"] == "p99 latency doubled"
    assert set(result) == {
        "virtual_service",
        "namespace",
        "split",
        "routes",
        "header_routes",
        "changed",
        "at",
        "reason",
        "rolled_back",
        "live_traffic",
    }
    assert result["live_traffic"] is True  # v2 had 10% and the testers' header route
    assert result["routes"] == [{"route": "http[0]", "protocol": "http", "split": {"v1": 100}}]
    assert seeded.stored()["spec"]["http"] == [
        {"route": [{"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}]}
    ]


DAG_FILE = textwrap.dedent(
    """
    from __future__ import annotations

    from airflow.sdk import DAG

    from airflow_canary.operators.traffic import (
        RollbackCanaryOperator,
        SetCanaryWeightOperator,
        SetHeaderRouteOperator,
    )

    with DAG(
        "canary_traffic_test",
        schedule=None,
        params={"weight": 10, "vs": "model-virtual-service", "ns": "default"},
    ) as dag:
        header = SetHeaderRouteOperator(task_id="header", virtual_service="{{ params.vs }}", namespace="{{ params.ns }}")
        step = SetCanaryWeightOperator(
            task_id="step", virtual_service="{{ params.vs }}", namespace="{{ params.ns }}", weight="{{ params.weight }}"
        )
        rollback = RollbackCanaryOperator(
            task_id="rollback",
            virtual_service="{{ params.vs }}", namespace="{{ params.ns }}",
            reason="rolled back by {{ dag.dag_id }} at {{ params.weight }}%",
        )
        header >> step >> rollback
    """
)


def test_real_dag_run_renders_templates_and_moves_traffic(seeded: Seeded, airflow_db: Path) -> None:
    dags = Path(os.environ["AIRFLOW__CORE__DAGS_FOLDER"])
    dags.mkdir(parents=True, exist_ok=True)
    (dags / "canary_traffic_test.py").write_text(DAG_FILE)
    env = {**os.environ, **seeded.mesh.env}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "airflow",
            "dags",
            "test",
            "canary_traffic_test",
            "-c",
            json.dumps({"weight": 25, "ns": seeded.namespace}),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    output = run.stdout + run.stderr
    assert run.returncode == 0, output[-4000:]
    assert "rolled back by canary_traffic_test at 25%" in output
    assert "http[0]: v1 75% v2 25%" in output
    assert seeded.stored()["spec"]["http"] == [
        {"route": [{"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}]}
    ]
