"""DeploymentReadyTrigger: waits, off the worker, until Deployments are rolled out as ``kubectl rollout status`` judges it."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from airflow_canary.readiness import Readiness, deployment_readiness, describe_pods
from airflow_canary.triggers.settle import settle

#: API answers worth another poll: the server asked us to wait, was briefly unavailable, or our
#: credentials expired (the next poll builds a fresh client, which reloads exec-plugin tokens).
TRANSIENT_STATUSES = frozenset({401, 429, 500, 502, 503, 504})


def _selector(deployment: dict[str, Any]) -> str:
    labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    return ",".join(f"{k}={v}" for k, v in labels.items())


class DeploymentReadyTrigger(BaseTrigger):
    """Poll Deployments until each is rolled out, one fails, or ``deadline`` (epoch seconds) passes.

    Yields one event: ``{"status": "ready" | "failed" | "timeout" | "error", "message": ...}``.
    ``failed`` means a Deployment's ``Progressing`` condition reports ``ProgressDeadlineExceeded``
    (``kubectl rollout status`` fails the same way); its message carries the condition's message.
    On ``failed`` and ``timeout`` the message lists every pod of the unfinished Deployments with
    its state and reason. Each poll opens a new API client, so exec-plugin credentials are
    refreshed and a dropped connection is re-established; transient API errors (401, 429, 5xx,
    connection failures) are retried at the next poll until the deadline.

    :param deployments: names of the Deployments to wait for, a list of strings (all in
        ``namespace``); a Deployment that does not exist is reported in an ``error`` event
    :param namespace: their namespace
    :param deadline: when to give up, epoch seconds (UTC, a float); an absolute time, so it
        survives a triggerer restart; passed, the event is ``timeout``
    :param poll_interval: seconds between reads of the Deployments' status (a float > 0)
    :param kubernetes_conn_id: id of an Airflow connection of type ``kubernetes`` (the
        cncf-kubernetes provider's)
    """

    def __init__(
        self,
        *,
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

    def _hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import AsyncKubernetesHook

        # A hook per poll: the provider caches static configs per hook and reloads exec-plugin
        # ones on every get_conn(), so a fresh hook never reuses an expired token.
        return AsyncKubernetesHook(conn_id=self.kubernetes_conn_id)

    async def _poll(self) -> tuple[dict[str, Readiness], dict[str, str]]:
        """Each Deployment's readiness, and the pod report of every unfinished one."""
        from kubernetes_asyncio import client as k8s

        states: dict[str, Readiness] = {}
        pods: dict[str, str] = {}
        async with self._hook().get_conn() as api_client:
            apps = k8s.AppsV1Api(api_client)
            core = k8s.CoreV1Api(api_client)
            for name in self.deployments:
                obj = await apps.read_namespaced_deployment(name, self.namespace)
                doc = api_client.sanitize_for_serialization(obj)
                states[name] = deployment_readiness(doc)
                if not states[name].ready:
                    listed = await core.list_namespaced_pod(
                        self.namespace, label_selector=_selector(doc)
                    )
                    items = api_client.sanitize_for_serialization(listed).get("items", [])
                    pods[name] = describe_pods(items)
        return states, pods

    async def run(self) -> AsyncIterator[TriggerEvent]:
        import aiohttp
        from kubernetes_asyncio.client.exceptions import ApiException

        began = time.monotonic()
        last_error = ""
        states: dict[str, Readiness] = {}
        pods: dict[str, str] = {}
        while True:
            try:
                states, pods = await self._poll()
                last_error = ""
            except ApiException as err:
                if err.status not in TRANSIENT_STATUSES:
                    await settle(began)
                    yield TriggerEvent(
                        {"status": "error", "message": f"HTTP {err.status}: {_reason(err)}"}
                    )
                    return
                last_error = f"HTTP {err.status}: {_reason(err)}"
                self.log.warning("Kubernetes API error, retrying at the next poll: %s", last_error)
            except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as err:
                last_error = f"{type(err).__name__}: {err}"
                self.log.warning("Kubernetes API unreachable, retrying at the next poll: %s", err)
            except (
                Exception
            ) as err:  # the event carries the failure to the task, which fails with it
                await settle(began)
                yield TriggerEvent({"status": "error", "message": f"{type(err).__name__}: {err}"})
                return
            if states and not last_error:
                failed = [n for n, s in states.items() if s.failed]
                if failed:
                    report = "\n".join(f"{states[n].message}\n{pods.get(n, '')}" for n in failed)
                    await settle(began)
                    yield TriggerEvent({"status": "failed", "message": report})
                    return
                if all(s.ready for s in states.values()):
                    message = "; ".join(s.message for s in states.values())
                    await settle(began)
                    yield TriggerEvent({"status": "ready", "message": message})
                    return
            if time.time() >= self.deadline:
                report = "\n".join(
                    f"{s.message}\n{pods.get(n, '')}" for n, s in states.items() if not s.ready
                )
                if last_error:
                    report += f"\nlast API error: {last_error}"
                await settle(began)
                yield TriggerEvent(
                    {"status": "timeout", "message": "not ready before the deadline:\n" + report}
                )
                return
            await asyncio.sleep(self.poll_interval)


def _reason(err: Any) -> str:
    import json

    body = getattr(err, "body", None)
    if isinstance(body, (bytes, str)) and body:
        try:
            message = json.loads(body).get("message")
        except (ValueError, AttributeError):
            message = None
        if message:
            return str(message)
    return str(getattr(err, "reason", "") or err)
