"""The seed rollout: vs-00 → header route → 1 → 10 → 50 → 100, checked against the seed manifests."""

from __future__ import annotations

import copy
from fractions import Fraction

import pytest
import yaml

from airflow_canary.routing import (
    HeaderRoute,
    RouteTarget,
    product_header_routes,
    promote,
    read_split,
    remove_header_route,
    remove_product_routes,
    rollback,
    set_canary_weight,
    set_header_route,
    validate_header_route,
)
from tests.conftest import EXAMPLE_MANIFESTS
from tests.routing.documents import SEED_WEIGHTS, load

TARGET = RouteTarget()
HEADER = HeaderRoute("x-canary-version", "v2")
ALL_STATES = ["vs-00-all-v1", *SEED_WEIGHTS]


def test_the_example_manifest_is_the_seed_start() -> None:
    with open(EXAMPLE_MANIFESTS / "vs-00-all-v1.yaml", encoding="utf-8") as handle:
        assert yaml.safe_load(handle) == load("vs-00-all-v1")


@pytest.mark.parametrize(("name", "weight"), SEED_WEIGHTS.items())
def test_weight_steps_reproduce_seed_manifests(name: str, weight: int) -> None:
    start = load("vs-00-all-v1")
    out = set_canary_weight(start, TARGET, weight)
    assert out["spec"] == load(name)["spec"]
    assert out["apiVersion"] == start["apiVersion"]
    assert out["metadata"] == start["metadata"]
    split = read_split(out, TARGET)
    assert split.as_dict() == {"v1": 100 - weight, "v2": weight}
    assert split.canary_share == Fraction(weight, 100)
    assert [r.route for r in split.routes] == ["http[0]"]


def test_weight_zero_gives_single_stable_destination() -> None:
    for name in ALL_STATES:
        assert set_canary_weight(load(name), TARGET, 0)["spec"] == load("vs-00-all-v1")["spec"]


@pytest.mark.parametrize("name", ALL_STATES)
def test_read_split_of_every_seed_state(name: str) -> None:
    expected = SEED_WEIGHTS.get(name, 0)
    split = read_split(load(name), TARGET)
    assert split.as_dict() == {"v1": 100 - expected, "v2": expected}


def test_header_route_on_vs00_equals_vs05_without_the_route_name() -> None:
    out = set_header_route(load("vs-00-all-v1"), TARGET, HEADER)
    header_route = out["spec"]["http"][0]
    assert header_route["name"] == "airflow-canary-header-x-canary-version"
    del header_route["name"]
    assert out["spec"] == load("vs-05-header-v2")["spec"]


def test_header_route_is_reported_in_the_xcom_shape() -> None:
    out = set_header_route(
        load("vs-00-all-v1"), TARGET, validate_header_route("X-Canary-Version", "v2", "exact")
    )
    assert [r.as_dict() for r in product_header_routes(out)] == [
        {
            "name": "airflow-canary-header-x-canary-version",
            "header": "x-canary-version",
            "value": "v2",
            "match_type": "exact",
            "subset": "v2",
        }
    ]


def test_full_rollout_sequence() -> None:
    vs = load("vs-00-all-v1")
    vs["metadata"]["resourceVersion"] = "4711"
    vs = set_header_route(vs, TARGET, HEADER)
    for name, weight in SEED_WEIGHTS.items():
        vs = set_canary_weight(vs, TARGET, weight)
        assert vs["spec"]["http"][0]["name"] == HEADER.route_name
        assert vs["spec"]["http"][1:] == load(name)["spec"]["http"]
        assert read_split(vs, TARGET).canary_weight == weight
        assert product_header_routes(vs) == [HEADER]
    promoted = promote(vs, TARGET)
    assert promoted["spec"] == load("vs-04-all-v2")["spec"]
    assert promoted["metadata"]["resourceVersion"] == "4711"


def _product_states() -> list[tuple[str, dict]]:
    states = [(name, load(name)) for name in ALL_STATES]
    states += [
        (f"{name}+header", set_header_route(load(name), TARGET, HEADER)) for name in ALL_STATES
    ]
    return states


@pytest.mark.parametrize(
    ("label", "vs"), _product_states(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_rollback_and_promote_from_every_state(label: str, vs: dict) -> None:
    before = copy.deepcopy(vs)
    assert rollback(vs, TARGET)["spec"] == load("vs-00-all-v1")["spec"]
    assert promote(vs, TARGET)["spec"] == load("vs-04-all-v2")["spec"]
    assert remove_product_routes(vs)["spec"]["http"] == [
        r for r in vs["spec"]["http"] if "name" not in r
    ]
    assert vs == before


def test_seed_header_route_written_by_a_person_is_part_of_the_service() -> None:
    # vs-05's header route was written by a person, not by the product: it is not removed, but
    # it sends to the canary, so a rollback sends it to stable like every other route.
    vs05 = load("vs-05-header-v2")
    assert product_header_routes(vs05) == []
    rolled_back = rollback(vs05, TARGET)
    assert rolled_back["spec"]["http"][0]["match"] == vs05["spec"]["http"][0]["match"]
    assert read_split(rolled_back, TARGET).routes_sending_to("v2") == []
    promoted = promote(vs05, TARGET)
    assert promoted["spec"]["http"][0] == vs05["spec"]["http"][0]
    assert promoted["spec"]["http"][1] == load("vs-04-all-v2")["spec"]["http"][0]


def test_remove_header_route_restores_the_previous_document() -> None:
    for name in ALL_STATES:
        vs = load(name)
        with_route = set_header_route(vs, TARGET, HEADER)
        assert remove_header_route(with_route, TARGET, "X-Canary-Version") == vs
        assert remove_header_route(vs, TARGET, "x-canary-version") == vs
