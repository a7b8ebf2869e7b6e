"""SetMirrorOperator against the local mesh: the shadow phase's mirror on, changed and off.

Istio (the seed's VirtualService) and Gateway API (the example HTTPRoute, stored by the mesh
serving the Gateway API CRDs) through the real ``kubernetes`` client; every stored object is
the API server's own validated copy.
"""

from __future__ import annotations

import math
import secrets
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from airflow_canary.operators.traffic import (
    PromoteCanaryOperator,
    RollbackCanaryOperator,
    SetCanaryWeightOperator,
    SetHeaderRouteOperator,
    SetMirrorOperator,
)
from airflow_canary.routing import RoutingError
from tests.conftest import EXAMPLE_MANIFESTS, seed_manifest
from tests.fixtures.mesh import Mesh, Seeded, start_mesh
from tests.operators.test_gateway_api_traffic import common as gateway_common
from tests.operators.test_gateway_api_traffic import stored as stored_route
from tests.schemas import assert_valid_istio

pytestmark = pytest.mark.timeout(180)

VS = "model-virtual-service"
COMMON: dict[str, Any] = {"virtual_service": VS, "namespace": "default"}
CANARY = {"host": "model-service", "subset": "v2"}


@pytest.mark.parametrize(
    "percent", [150, -1, 100.5, math.nan, math.inf, True, "half", "50%", None, [10]]
)
def test_a_bad_percent_fails_when_the_dag_is_parsed_naming_it(percent: Any) -> None:
    with pytest.raises(RoutingError, match="mirror percent must be a number 0..100") as raised:
        SetMirrorOperator(task_id="m", percent=percent, **COMMON)
    assert repr(percent) in str(raised.value)


def test_a_templated_percent_waits_for_rendering_and_is_checked_then(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    operator = SetMirrorOperator(task_id="m", percent="{{ params.mirror }}", **common)
    assert "percent" in operator.template_fields
    before = seeded.stored()
    operator.percent = "150"  # as a template renders it
    with pytest.raises(RoutingError, match="got '150'"):
        operator.execute(context={})  # type: ignore[arg-type]
    operator.percent = "{{ params.mirror }}"  # never rendered
    with pytest.raises(RoutingError, match="params.mirror"):
        operator.execute(context={})  # type: ignore[arg-type]
    assert seeded.stored() == before  # traffic untouched
    operator.percent = "12.5"
    assert operator.execute(context={})["mirror_percent"] == 12.5  # type: ignore[arg-type]


def test_mirror_on_change_off_on_a_virtual_service(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    SetHeaderRouteOperator(task_id="h", **common).execute(context={})  # type: ignore[arg-type]
    before = datetime.now(timezone.utc)
    result = SetMirrorOperator(task_id="on", percent=100, **common).execute(context={})  # type: ignore[arg-type]
    assert result["changed"] is True and result["mirror_percent"] == 100.0
    # no request can have been mirrored before the write: the shadow analysis's `since`
    assert before <= datetime.fromisoformat(result["mirrored_since"]) <= datetime.now(timezone.utc)
    assert result["split"] == {"v1": 100, "v2": 0}  # no live request goes to v2
    # Stored as JSON: the API server (like kube-apiserver) returns the double 100.0 as 100;
    # the written document itself is validated against Istio's schemas in tests/routing.
    stored = seeded.stored()
    header_route, weighted = stored["spec"]["http"]
    assert "mirror" not in header_route  # the testers' route is not mirrored
    assert weighted["mirror"] == CANARY and weighted["mirrorPercentage"] == {"value": 100.0}

    version = stored["metadata"]["resourceVersion"]
    again = SetMirrorOperator(task_id="again", percent=100, **common).execute(context={})  # type: ignore[arg-type]
    assert again["changed"] is False
    assert seeded.stored()["metadata"]["resourceVersion"] == version  # nothing written

    changed = SetMirrorOperator(task_id="half", percent=50, **common).execute(context={})  # type: ignore[arg-type]
    assert changed["mirror_percent"] == 50.0
    off = SetMirrorOperator(task_id="off", remove=True, **common).execute(context={})  # type: ignore[arg-type]
    assert off["mirror_percent"] == 0.0 and off["changed"] is True
    assert "mirrored_since" not in off
    assert all("mirror" not in r for r in seeded.stored()["spec"]["http"])


@pytest.mark.parametrize("finish", ["promote", "rollback"])
def test_promote_and_rollback_remove_the_mirror(seeded: Seeded, finish: str) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    SetMirrorOperator(task_id="on", percent=100, **common).execute(context={})  # type: ignore[arg-type]
    SetCanaryWeightOperator(task_id="w", weight=10, **common).execute(context={})  # type: ignore[arg-type]
    if finish == "promote":
        PromoteCanaryOperator(task_id="p", **common).execute(context={})  # type: ignore[arg-type]
    else:
        done = RollbackCanaryOperator(task_id="rb", reason="FAIL", **common).execute({})  # type: ignore[arg-type]
        assert done["rolled_back"] is True and done["live_traffic"] is True  # v2 had 10%
    stored = seeded.stored()
    assert_valid_istio(stored)
    assert all("mirror" not in r and "mirrorPercentage" not in r for r in stored["spec"]["http"])


def test_a_rollback_that_only_takes_the_mirror_off_says_it_rolled_back(seeded: Seeded) -> None:
    # The shadow phase's FAIL: no weight and no header route yet, only the mirror to v2.
    common = {**COMMON, "namespace": seeded.namespace}
    SetMirrorOperator(task_id="on", percent=100, **common).execute(context={})  # type: ignore[arg-type]
    done = RollbackCanaryOperator(task_id="rb", reason="shadow FAIL", **common).execute({})  # type: ignore[arg-type]
    assert done["rolled_back"] is True and done["changed"] is True
    assert done["live_traffic"] is False  # v2 never served a live request
    again = RollbackCanaryOperator(task_id="rb2", reason="shadow FAIL", **common).execute({})  # type: ignore[arg-type]
    assert again["rolled_back"] is False and again["changed"] is False  # nothing left to undo


def test_a_missing_canary_subset_stops_the_mirror_before_any_write(seeded: Seeded) -> None:
    common = {**COMMON, "namespace": seeded.namespace}
    before = seeded.stored()
    with pytest.raises(RoutingError, match="does not define subset 'v3'"):
        SetMirrorOperator(task_id="m", canary_subset="v3", **common).execute(context={})  # type: ignore[arg-type]
    assert seeded.stored() == before


def test_mirror_and_weight_written_at_once_are_both_kept(seeded: Seeded) -> None:
    # Read-modify-replace with resourceVersion: a 409 re-reads and re-applies, so neither
    # writer's change is lost whichever wins the race.
    common = {**COMMON, "namespace": seeded.namespace}
    operators = [
        SetMirrorOperator(task_id="m", percent=25, **common),
        SetCanaryWeightOperator(task_id="w", weight=1, **common),
    ]
    start = threading.Barrier(len(operators))
    errors: list[BaseException] = []

    def run(operator: Any) -> None:
        try:
            start.wait(timeout=30)
            operator.execute(context={})
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(op,)) for op in operators]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    weighted = seeded.stored()["spec"]["http"][0]
    assert weighted["mirrorPercentage"] == {"value": 25.0}
    assert [e["weight"] for e in weighted["route"]] == [99, 1]


# -- Gateway API -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_mesh(
    tmp_path_factory: pytest.TempPathFactory, gateway_api_crds_dir: Path
) -> Iterator[Mesh]:
    with start_mesh(tmp_path_factory.mktemp("gw-mirror"), crds=gateway_api_crds_dir) as mesh:
        yield mesh


@pytest.fixture
def gateway_namespace(gateway_mesh: Mesh, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    for key, value in gateway_mesh.env.items():
        monkeypatch.setenv(key, value)
    name = f"t-{secrets.token_hex(4)}"
    gateway_mesh.create_namespace(name)
    gateway_api = EXAMPLE_MANIFESTS / "gateway-api"
    for path in (
        seed_manifest("service-model-service"),
        gateway_api / "service-model-v1.yaml",
        gateway_api / "service-model-v2.yaml",
        gateway_api / "httproute-00-all-v1.yaml",
    ):
        result = gateway_mesh.kubectl("apply", "-n", name, "-f", str(path))
        assert result.returncode == 0, result.stderr
    yield name
    gateway_mesh.delete_namespace(name)


def _mirrors(route: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        f["requestMirror"]
        for rule in route["spec"]["rules"]
        for f in rule.get("filters") or []
        if f["type"] == "RequestMirror"
    ]


def test_mirror_on_an_httproute_as_percent_and_fraction_then_rolled_back(
    gateway_mesh: Mesh, gateway_namespace: str
) -> None:
    kw = gateway_common(gateway_namespace)
    on = SetMirrorOperator(task_id="on", percent=100, **kw).execute({})  # type: ignore[arg-type]
    assert on["router"] == "gateway-api" and on["mirror_percent"] == 100.0
    assert on["split"] == {"model-v1": 100, "model-v2": 0}
    (mirror,) = _mirrors(stored_route(gateway_mesh, gateway_namespace))
    assert mirror["percent"] == 100 and mirror["backendRef"]["name"] == "model-v2"

    part = SetMirrorOperator(task_id="part", percent=2.5, **kw).execute({})  # type: ignore[arg-type]
    assert part["mirror_percent"] == 2.5
    (mirror,) = _mirrors(stored_route(gateway_mesh, gateway_namespace))
    assert mirror["fraction"] == {"numerator": 1, "denominator": 40}

    done = RollbackCanaryOperator(task_id="rb", reason="shadow FAIL", **kw).execute({})  # type: ignore[arg-type]
    assert _mirrors(stored_route(gateway_mesh, gateway_namespace)) == []
    assert done["rolled_back"] is True and done["live_traffic"] is False  # as on Istio
    again = RollbackCanaryOperator(task_id="rb2", reason="shadow FAIL", **kw).execute({})  # type: ignore[arg-type]
    assert again["rolled_back"] is False and again["changed"] is False  # nothing left to undo


def test_a_missing_canary_service_stops_the_mirror_before_any_write(
    gateway_mesh: Mesh, gateway_namespace: str
) -> None:
    before = stored_route(gateway_mesh, gateway_namespace)
    assert (
        gateway_mesh.kubectl("delete", "-n", gateway_namespace, "service", "model-v2").returncode
        == 0
    )
    with pytest.raises(LookupError, match="model-v2"):
        SetMirrorOperator(task_id="m", **gateway_common(gateway_namespace)).execute({})  # type: ignore[arg-type]
    assert stored_route(gateway_mesh, gateway_namespace) == before
