"""Pod discovery for Prometheus: only ready pods annotated for scraping, with their local port."""

from __future__ import annotations

from airflow_canary.local.apiserver.store import ObjectStore, ResourceKey
from airflow_canary.local.dataplane.discovery import pod_scrape_targets
from airflow_canary.local.workloads.runner import PORT_ANNOTATION


def _pod(name: str, *, ready: bool, annotations: dict[str, str]) -> dict:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": "default",
            "annotations": annotations,
            "ownerReferences": [{"kind": "Deployment", "name": "model-v2"}],
        },
        "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def test_only_ready_annotated_pods_are_targets():
    store = ObjectStore()
    scrape = {"prometheus.io/scrape": "true", PORT_ANNOTATION: "41001"}
    store.create(ResourceKey("", "pods", "default", "a"), _pod("a", ready=True, annotations=scrape))
    store.create(
        ResourceKey("", "pods", "default", "b"), _pod("b", ready=False, annotations=scrape)
    )
    store.create(
        ResourceKey("", "pods", "default", "c"),
        _pod("c", ready=True, annotations={PORT_ANNOTATION: "41003"}),
    )
    store.create(
        ResourceKey("", "pods", "default", "d"),
        _pod(
            "d",
            ready=True,
            annotations={**scrape, PORT_ANNOTATION: "41004", "prometheus.io/path": "/stats"},
        ),
    )
    groups = pod_scrape_targets(store)
    assert groups == [
        {
            "targets": ["127.0.0.1:41001"],
            "labels": {
                "namespace": "default",
                "pod": "a",
                "__metrics_path__": "/metrics",
                "workload": "model-v2",
            },
        },
        {
            "targets": ["127.0.0.1:41004"],
            "labels": {
                "namespace": "default",
                "pod": "d",
                "__metrics_path__": "/stats",
                "workload": "model-v2",
            },
        },
    ]
