"""Manifests given to the deploy operator: YAML with duplicate keys, anchors, aliases and hostile names.

kubectl reads YAML through sigs.k8s.io/yaml (go-yaml): a key defined twice in one mapping is an
error ("mapping key ... already defined"), anchors, aliases and merge keys are accepted, and a
document whose aliases expand excessively ("billion laughs") is refused. The operator behaves the
same when the DAG is parsed, naming the key and its lines, or the object and its bad name.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from airflow_canary.manifests import MAX_EXPANDED_NODES, ManifestError, load_manifest
from airflow_canary.operators.deploy import DeployModelVersionOperator
from tests.hostile import values as rules
from tests.hostile.values import TEXT

HOSTILE = settings(max_examples=60, deadline=None)

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-v2
spec:
  replicas: 1
"""


@HOSTILE
@given(
    key=st.sampled_from(["name", "replicas", "kind", "metadata", "spec"]), depth=st.integers(0, 1)
)
def test_a_key_defined_twice_is_refused_naming_it_and_its_lines(key: str, depth: int) -> None:
    indent = "  " * depth
    block = "metadata:\n  name: model-v2\n" if depth else ""
    text = f"apiVersion: apps/v1\nkind: Deployment\n{block}" + (
        f"{indent}{key}: a\n{indent}{key}: b\n" if depth else f"spec: {{}}\n{key}: a\n{key}: b\n"
    )
    with pytest.raises(
        ManifestError, match=rf"mapping key '{key}' defined twice, at line \d+ and line \d+"
    ):
        DeployModelVersionOperator(task_id="deploy", manifest=text)


def test_anchors_aliases_and_merge_keys_are_read_as_kubectl_reads_them() -> None:
    text = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: model-v2
  labels: &labels {app: model, version: v2}
spec:
  selector: {matchLabels: *labels}
  template:
    metadata:
      labels:
        <<: *labels
        version: v2-override
"""
    (deployment,) = load_manifest(text)
    assert deployment["spec"]["selector"]["matchLabels"] == {"app": "model", "version": "v2"}
    assert deployment["spec"]["template"]["metadata"]["labels"] == {
        "app": "model",
        "version": "v2-override",
    }


@HOSTILE
@given(width=st.integers(4, 12), depth=st.integers(6, 9))
def test_excessive_aliasing_is_refused_before_anything_expands(width: int, depth: int) -> None:
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, depth + 1):
        aliases = ", ".join([f"*a{level - 1}"] * width)
        lines.append(f"a{level}: &a{level} [{aliases}]")
    text = DEPLOYMENT + "\n".join(f"# {line}" for line in ()) + "\n".join(lines)
    expanded = sum(width**level for level in range(depth + 1))
    if expanded <= MAX_EXPANDED_NODES:
        return
    with pytest.raises(ManifestError, match="excessive aliasing"):
        DeployModelVersionOperator(task_id="deploy", manifest=text)


@HOSTILE
@given(name=TEXT)
def test_object_names_are_kubernetes_names(name: str) -> None:
    for kind, api_version, rule in (
        ("Deployment", "apps/v1", rules.dns1123_subdomain),
        ("Service", "v1", rules.dns1035_label),
    ):
        objects: list[dict[str, Any]] = [
            {"apiVersion": api_version, "kind": kind, "metadata": {"name": name}}
        ]
        if kind != "Deployment":
            objects.append(yaml.safe_load(DEPLOYMENT))
        text = yaml.safe_dump_all(objects)
        if rule(name):
            load_manifest(text)
        elif name == "":
            with pytest.raises(ManifestError, match="no metadata.name"):
                load_manifest(text)
        else:
            with pytest.raises(ManifestError) as raised:
                load_manifest(text)
            assert repr(name) in str(raised.value)


@HOSTILE
@given(namespace=TEXT.filter(lambda v: v != ""))
def test_an_object_namespace_is_a_namespace_name(namespace: str) -> None:
    doc = yaml.safe_load(DEPLOYMENT)
    doc["metadata"]["namespace"] = namespace
    if rules.dns1123_label(namespace):
        load_manifest(doc)
    else:
        with pytest.raises(ManifestError) as raised:
            load_manifest(doc)
        assert repr(namespace) in str(raised.value)


@pytest.mark.parametrize(
    "text,expected",
    [
        ("!!python/object/apply:os.system ['true']", "not valid YAML"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: model-v2\n", "metadata 'model-v2'"),
        ("- just\n- a list\n", "must be a mapping"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: [a]}\n", "got \\['a'\\]"),
        ("\x00", "not valid YAML"),
        (
            "apiVersion: apps/v1\nkind: [Deployment]\nmetadata: {name: m}\n",
            "is a \\['Deployment'\\]",
        ),
        (
            "apiVersion: [apps/v1]\nkind: Deployment\nmetadata: {name: m}\n",
            "apiVersion \\['apps/v1'\\]",
        ),
    ],
)
def test_other_hostile_manifests_are_refused_saying_why(text: str, expected: str) -> None:
    with pytest.raises(ManifestError, match=expected):
        DeployModelVersionOperator(task_id="deploy", manifest=text)
