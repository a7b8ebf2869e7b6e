"""The fault suite's route watcher: every version of the VirtualService, up to the last write."""

from __future__ import annotations

import json
from typing import Any

from kubernetes import config
from kubernetes.client import CustomObjectsApi

from tests.conftest import seed_manifest
from tests.faults.route_watch import RouteWatch

VS = "model-virtual-service"


def test_a_write_just_before_stop_is_seen(mesh: Any, fresh_namespace: str) -> None:
    """``stop()`` waits for the watch to deliver the version the API serves now: the last of
    three quick writes made right before it is the last version seen, with its split."""
    for name in ("service-model-service.yaml", "vs-00-all-v1.yaml"):
        run = mesh.kubectl("-n", fresh_namespace, "apply", "-f", str(seed_manifest(name)))
        assert run.returncode == 0, run.stderr
    api_client = config.new_client_from_config(config_file=str(mesh.kubeconfig))
    api = CustomObjectsApi(api_client)
    with RouteWatch(api_client, VS, fresh_namespace) as watch:
        assert watch.seen and watch.seen[-1].split == {"v1": 100}
        for canary in (10, 0, 10):  # three writes as fast as the API takes them, then stop()
            http = [
                {
                    "route": [
                        {
                            "destination": {"host": "model-service", "subset": "v1"},
                            "weight": 100 - canary,
                        },
                        {
                            "destination": {"host": "model-service", "subset": "v2"},
                            "weight": canary,
                        },
                    ]
                }
            ]
            api.patch_namespaced_custom_object(
                "networking.istio.io", "v1", fresh_namespace, "virtualservices", VS,
                {"spec": {"http": http}},
            )  # fmt: skip
    current = api.get_namespaced_custom_object(
        "networking.istio.io", "v1", fresh_namespace, "virtualservices", VS
    )
    last = watch.seen[-1]
    assert last.resource_version == current["metadata"]["resourceVersion"]
    assert json.loads(last.http) == current["spec"]["http"]
    assert [seen.split.get("v2", 0) for seen in watch.seen] == [0, 10, 0, 10]  # none missed
    assert watch.errors == []
