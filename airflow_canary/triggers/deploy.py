"""DeploymentReadyTrigger: waits, off the worker, until Deployments have all replicas available."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from functools import cached_property
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_canary.readiness import deployment_readiness, describe_pods


class DeploymentReadyTrigger(BaseTrigger):
    """Poll Deployments until each is ready or ``deadline`` (epoch seconds) passes.

    Yields one event: ``{"status": "ready" | "timeout" | "error", "message": ...}``; on timeout
    the message lists every pod of the unready Deployments with its state and reason.
    """

    def __init__(
        self,
        deployments: list[str],
        namespace: str,
        deadline: float,
        poll_interval: float = 2.0,
        kubernetes_conn_id: str = "kubernetes_default",
    ) -> None:
        super().__init__()
        self.deployments = list(deployments)
        self.namespace = namespace
        self.deadline = float(deadline)
        self.poll_interval = float(poll_interval)
        self.kubernetes_conn_id = kubernetes_conn_id

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "deployments": self.deployments,
                "namespace": self.namespace,
                "deadline": self.deadline,
                "poll_interval": self.poll_interval,
                "kubernetes_conn_id": self.kubernetes_conn_id,
            },
        )

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        return AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from kubernetes_asyncio import client as k8s

        try:
            async with self.hook.get_conn() as api_client:
                apps = k8s.AppsV1Api(api_client)
                core = k8s.CoreV1Api(api_client)
                while True:
                    pending: dict[str, dict[str, Any]] = {}
                    messages = []
                    for name in self.deployments:
                        obj = await apps.read_namespaced_deployment(name, self.namespace)
                        doc = api_client.sanitize_for_serialization(obj)
                        readiness = deployment_readiness(doc)
                        messages.append(readiness.message)
                        if not readiness.ready:
                            pending[name] = doc
                    if not pending:
                        yield TriggerEvent({"status": "ready", "message": "; ".join(messages)})
                        return
                    if time.time() >= self.deadline:
                        details = []
                        for doc in pending.values():
                            selector = ((doc.get("spec") or {}).get("selector") or {}).get(
                                "matchLabels"
                            ) or {}
                            label_selector = ",".join(f"{k}={v}" for k, v in selector.items())
                            pods = await core.list_namespaced_pod(
                                self.namespace, label_selector=label_selector
                            )
                            pod_docs = api_client.sanitize_for_serialization(pods).get("items", [])
                            details.append(
                                f"{deployment_readiness(doc).message}\n{describe_pods(pod_docs)}"
                            )
                        yield TriggerEvent(
                            {
                                "status": "timeout",
                                "message": "not ready before the deadline:\n" + "\n".join(details),
                            }
                        )
                        return
                    await asyncio.sleep(self.poll_interval)
        except Exception as err:  # the event carries the failure to the task, which fails with it
            yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err}"})
