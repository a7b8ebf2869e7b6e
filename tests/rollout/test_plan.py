"""Rollout steps, manifests and readiness: the checks that run before any traffic moves."""

from __future__ import annotations

import pytest

from airflow_canary.manifests import ManifestError, is_template, load_manifest
from airflow_canary.readiness import deployment_readiness, describe_pods
from airflow_canary.rollout.operators import rollback_reason
from airflow_canary.rollout.plan import RolloutPlan, RolloutPlanError, validate_steps


@pytest.mark.parametrize(
    ("steps", "expected"),
    [
        ((1, 10, 50, 100), (1, 10, 50, 100)),
        (["5", "50"], (5, 50)),
        ([100], (100,)),
        ([2.0, 3], (2, 3)),
    ],
)
def test_valid_steps(steps, expected):
    assert validate_steps(steps) == expected


@pytest.mark.parametrize(
    ("steps", "fragment"),
    [
        ([10, 1], "strictly increasing, got 1 after 10"),
        ([0], "got 0"),
        ([150], "got 150"),
        ([1, 1], "strictly increasing"),
        ([], "at least one"),
        ("1,10", "list of integers"),
        ([True], "got True"),
        ([1.5], "got 1.5"),
        (["ten"], "got 'ten'"),
        (None, "got None"),
    ],
)
def test_invalid_steps_name_the_value(steps, fragment):
    with pytest.raises(RolloutPlanError) as err:
        validate_steps(steps)
    assert fragment in str(err.value)


def test_expected_count():
    with pytest.raises(RolloutPlanError, match="has 4 steps, got 3"):
        validate_steps([1, 2, 3], expected_count=4)


def test_plan_rejects_same_subsets():
    with pytest.raises(RolloutPlanError, match="must differ"):
        RolloutPlan(steps=(1,), stable_subset="v1", canary_subset="v1")


DEPLOYMENT = """
apiVersion: apps/v1
kind: Deployment
metadata: {name: model-v2}
spec:
  replicas: 2
  selector: {matchLabels: {app: model, version: v2}}
  template:
    metadata: {labels: {app: model, version: v2}}
    spec: {containers: [{name: s, image: x}]}
"""


def test_manifest_from_text_dict_and_path(tmp_path):
    objs = load_manifest(DEPLOYMENT)
    assert objs[0]["metadata"]["name"] == "model-v2"
    assert load_manifest(objs[0]) == objs
    path = tmp_path / "m.yaml"
    path.write_text(DEPLOYMENT + "---\napiVersion: v1\nkind: Service\nmetadata: {name: s}\n")
    assert [o["kind"] for o in load_manifest(str(path))] == ["Deployment", "Service"]


@pytest.mark.parametrize(
    ("manifest", "fragment"),
    [
        ("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", "is a 'ConfigMap' named 'c'"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: s}\n", "must contain a Deployment"),
        ("/nope/missing.yaml", "does not exist"),
        ("kind: [", "not valid YAML"),
        (42, "got int"),
        ("apiVersion: apps/v1\nkind: Deployment\nmetadata: {}\n", "has no metadata.name"),
        ("apiVersion: v1\nkind: Deployment\nmetadata: {name: d}\n", "apiVersion 'v1'"),
    ],
)
def test_bad_manifests(manifest, fragment):
    with pytest.raises(ManifestError) as err:
        load_manifest(manifest)
    assert fragment in str(err.value)


def test_is_template():
    assert is_template({"a": ["{{ params.x }}"]})
    assert not is_template({"a": ["plain"]})


def test_readiness_needs_observed_generation_and_available_replicas():
    dep = {"metadata": {"name": "d", "generation": 2}, "spec": {"replicas": 2}, "status": {}}
    assert not deployment_readiness(dep).ready
    dep["status"] = {"observedGeneration": 2, "availableReplicas": 1, "updatedReplicas": 2}
    assert "1 of 2 updated replicas are available" in deployment_readiness(dep).message
    dep["status"]["availableReplicas"] = 2
    assert deployment_readiness(dep).ready


def test_describe_pods_shows_reasons():
    pods = [
        {
            "metadata": {"name": "model-v2-abc"},
            "status": {
                "phase": "Running",
                "containerStatuses": [
                    {
                        "name": "s",
                        "ready": False,
                        "restartCount": 3,
                        "state": {
                            "waiting": {"reason": "CrashLoopBackOff", "message": "back-off 8s"}
                        },
                    }
                ],
            },
        }
    ]
    text = describe_pods(pods)
    assert (
        "model-v2-abc" in text and "CrashLoopBackOff (back-off 8s)" in text and "restarts=3" in text
    )
    assert describe_pods([]) == "no pods found"


def test_rollback_reason_prefers_verdicts():
    verdict = {"verdict": "FAIL", "reason": "error-rate: canary 10% vs stable 1%"}
    assert "canary 10% vs stable 1%" in rollback_reason(
        [("c.step_1.analyze", None), ("c.step_2.analyze", verdict)], ["x"]
    )
    assert (
        rollback_reason([("a", {"verdict": "PASS"})], ["c.step_2.set_weight"])
        == "task(s) failed: c.step_2.set_weight"
    )


def test_rollback_reason_names_a_shadow_verdict_as_the_shadow_analysis():
    shadow = {
        "verdict": "FAIL",
        "reason": "v2 disagrees with v1 on 37% of 27 paired requests (limit 2%)",
        "pairing": {"pairs": 27},
    }
    step = {"verdict": "FAIL", "reason": "error-rate: canary 10% vs stable 1%"}
    assert rollback_reason([("c.shadow.analyze", shadow)], []) == (
        "c.shadow.analyze: shadow analysis FAIL: v2 disagrees with v1 on 37% of 27 paired "
        "requests (limit 2%)"
    )
    assert rollback_reason([("c.step_1.analyze", step)], []).startswith(
        "c.step_1.analyze: health analysis FAIL: "
    )
