"""Validation against Istio CRD schemas and the built-in checks; patch formats of the mesh API."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.local.apiserver.crd_folder import read_crd_folder
from airflow_canary.local.apiserver.patch import (
    PatchError,
    json_patch,
    merge_patch,
    strategic_merge_patch,
)
from airflow_canary.local.apiserver.schema import CRDSchemas, load_crd_dir, parse_duration
from tests.conftest import EXAMPLE_MANIFESTS, SEED_FLOW, seed_manifest

SEED_NAMES = sorted(p.name for d in (EXAMPLE_MANIFESTS, SEED_FLOW) for p in d.glob("*.yaml"))


@pytest.fixture(scope="module")
def istio(istio_crds_dir: Path) -> CRDSchemas:
    return load_crd_dir(istio_crds_dir)


def _seed(name: str) -> dict[str, Any]:
    return yaml.safe_load(seed_manifest(name).read_text())


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_manifests_are_valid(istio: CRDSchemas, name: str) -> None:
    assert istio.validate(_seed(name)) == []


@pytest.mark.parametrize("name", SEED_NAMES)
def test_seed_manifests_pass_the_builtin_checks(name: str) -> None:
    assert CRDSchemas().validate(_seed(name)) == []


def test_knows_every_served_istio_version(istio: CRDSchemas) -> None:
    for version in ("v1", "v1beta1", "v1alpha3"):
        assert istio.knows(f"networking.istio.io/{version}", "VirtualService")
        assert istio.knows(f"networking.istio.io/{version}", "DestinationRule")
    assert not istio.knows("networking.istio.io/v2", "VirtualService")
    assert not CRDSchemas().knows("networking.istio.io/v1", "VirtualService")


def test_crd_errors_name_the_field(istio: CRDSchemas) -> None:
    vs = _seed("vs-05-header-v2.yaml")
    vs["spec"]["http"][1]["route"][0]["weight"] = "ten"
    vs["spec"]["http"][0]["match"][0]["headers"]["x-canary-version"]["prefix"] = "v"
    del vs["spec"]["http"][0]["route"][0]["destination"]["host"]
    vs["spec"]["http"][1]["retries"] = {"attempts": 2**40}
    assert sorted(istio.validate(vs)) == [
        "spec.http[0].match[0].headers.x-canary-version: at most one of exact, prefix, regex may be set, got exact, prefix",
        "spec.http[0].route[0].destination.host: required value is missing",
        "spec.http[1].retries.attempts: must be in the range -2147483648..2147483647, got 1099511627776",
        'spec.http[1].route[0].weight: must be integer, got "ten"',
    ]


def test_cel_duration_rule(istio: CRDSchemas) -> None:
    vs = _seed("vs-00-all-v1.yaml")
    vs["spec"]["http"][0]["timeout"] = "1.5s"
    assert istio.validate(vs) == []
    for bad in ("0.5ms", "soon"):
        vs["spec"]["http"][0]["timeout"] = bad
        assert istio.validate(vs) == [
            f'spec.http[0].timeout: must be a valid duration greater than 1ms, got "{bad}"'
        ]
    assert parse_duration("1h30m") == 5400.0
    with pytest.raises(ValueError, match="invalid duration"):
        parse_duration("10 seconds")


def test_destination_rule_enums_and_label_maps(istio: CRDSchemas) -> None:
    dr = _seed("destinationrule-model-destination.yaml")
    dr["spec"]["trafficPolicy"] = {"loadBalancer": {"simple": "FASTEST"}}
    dr["spec"]["subsets"][1]["labels"]["version"] = 2
    problems = istio.validate(dr)
    assert "spec.subsets[1].labels.version: must be string, got 2" in problems
    assert any(
        p.startswith("spec.trafficPolicy.loadBalancer.simple: must be one of") for p in problems
    )


def test_unknown_fields_are_reported(istio: CRDSchemas) -> None:
    vs = _seed("vs-00-all-v1.yaml")
    vs["spec"]["http"][0]["route"][0]["wieght"] = 1
    assert istio.unknown_fields(vs) == ["spec.http[0].route[0].wieght"]


def test_builtin_checks_without_crds() -> None:
    schemas = CRDSchemas()
    vs = _seed("vs-01-canary-1.yaml")
    assert schemas.validate(vs) == []
    vs["spec"]["http"][0]["route"][0]["weight"] = 150
    vs["spec"]["hosts"] = "model-service"
    assert schemas.validate(vs) == [
        'spec.hosts: must be array, got "model-service"',
        "spec.http[0].route[0].weight: must be in the range 0..100, got 150",
    ]
    dr = _seed("destinationrule-model-destination.yaml")
    del dr["spec"]["subsets"][0]["name"]
    assert schemas.validate(dr) == ["spec.subsets[0].name: required value is missing"]

    dep = _seed("deployment-model-v1.yaml")
    assert schemas.validate(dep) == []
    del dep["spec"]["template"]["spec"]["containers"]
    assert schemas.validate(dep) == ["spec.template.spec.containers: required value is missing"]
    svc = _seed("service-model-service.yaml")
    svc["spec"]["ports"][0]["targetPort"] = [8080]
    assert schemas.validate(svc) == [
        "spec.ports[0].targetPort: must be integer or string, got [8080]"
    ]


def test_applied_crd_replaces_the_builtin_check(istio_crds_dir: Path) -> None:
    schemas = CRDSchemas()
    (crd,) = [
        doc
        for _, doc in read_crd_folder(istio_crds_dir)
        if doc["metadata"]["name"] == "virtualservices.networking.istio.io"
    ]
    schemas.add_crd(crd)
    vs = _seed("vs-00-all-v1.yaml")
    vs["spec"]["http"][0]["route"][0]["weight"] = 150  # the CRD only says int32
    assert schemas.validate(vs) == []
    schemas.remove_crd("virtualservices.networking.istio.io")
    assert schemas.validate(vs) == [
        "spec.http[0].route[0].weight: must be in the range 0..100, got 150"
    ]


# -- patches ------------------------------------------------------------------------------------


def test_merge_patch_deletes_with_null() -> None:
    doc = {"a": {"b": 1, "c": 2}, "l": [1, 2]}
    assert merge_patch(doc, {"a": {"b": None, "d": 3}, "l": [3]}) == {
        "a": {"c": 2, "d": 3},
        "l": [3],
    }


def test_json_patch_operations() -> None:
    doc = {"spec": {"http": [{"route": [{"weight": 100}]}]}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/http/0/route/-", "value": {"weight": 0}},
            {"op": "copy", "from": "/spec/http/0", "path": "/spec/http/1"},
            {"op": "move", "from": "/spec/http/1", "path": "/spec/extra"},
            {"op": "remove", "path": "/spec/extra/route/1"},
            {"op": "test", "path": "/spec/http/0/route/1/weight", "value": 0},
        ],
    )
    assert out == {
        "spec": {
            "http": [{"route": [{"weight": 100}, {"weight": 0}]}],
            "extra": {"route": [{"weight": 100}]},
        }
    }
    assert doc == {"spec": {"http": [{"route": [{"weight": 100}]}]}}  # input untouched
    with pytest.raises(
        PatchError, match="testing value /spec/http/0/route/0/weight failed"
    ) as failed:
        json_patch(doc, [{"op": "test", "path": "/spec/http/0/route/0/weight", "value": 1}])
    assert failed.value.code == 422
    with pytest.raises(PatchError, match="does not exist"):
        json_patch(doc, [{"op": "replace", "path": "/spec/tcp/0", "value": 1}])


def test_strategic_merge_by_name_and_port() -> None:
    dep = _seed("deployment-model-v1.yaml")
    before = copy.deepcopy(dep)
    patch = {
        "spec": {
            "template": {
                "spec": {
                    "containers": [
                        {
                            "name": "model-server",
                            "env": [{"name": "A", "value": "1"}],
                            "ports": [{"containerPort": 9090}],
                        },
                        {"name": "sidecar", "image": "proxy"},
                    ]
                }
            }
        }
    }
    out = strategic_merge_patch(dep, patch)
    containers = out["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["model-server", "sidecar"]
    assert containers[0]["image"] == "your-docker-repo/model-runner:v1"
    assert containers[0]["ports"] == [{"containerPort": 8080}, {"containerPort": 9090}]
    delete = {
        "spec": {"template": {"spec": {"containers": [{"name": "sidecar", "$patch": "delete"}]}}}
    }
    assert strategic_merge_patch(out, delete)["spec"]["template"]["spec"]["containers"] == [
        containers[0]
    ]
    assert dep == before
