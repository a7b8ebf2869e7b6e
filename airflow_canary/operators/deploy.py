"""Deploy a model version (Deployment, and optionally its Service / DestinationRule) and wait for it."""

from __future__ import annotations

import os
import time
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from airflow_canary.deferral import default_deferrable
from airflow_canary.durations import to_seconds
from airflow_canary.manifests import ManifestError, deployments, is_template, load_manifest
from airflow_canary.names import namespace_name, object_name
from airflow_canary.parameters import flag, optional_flag
from airflow_canary.readiness import deployment_readiness, describe_pods

#: Deployment.spec.replicas is an int32.
MAX_REPLICAS = 2**31 - 1


def _names_a_file(manifest: object) -> bool:
    # Airflow reads these through template_ext when the task renders, relative to the DAG folder.
    return isinstance(manifest, os.PathLike) or (
        isinstance(manifest, str)
        and "\n" not in manifest
        and manifest.rstrip().endswith((".yaml", ".yml", ".json"))
    )


class DeployModelVersionOperator(BaseOperator):
    """Server-side apply each object of ``manifest``, then wait until its Deployments are rolled out.

    Objects are applied under field manager ``airflow-canary`` with strict field validation:
    fields the manifest leaves out (an autoscaler's ``replicas``, other tools' labels) are left
    to their owners, and a field another manager owns fails the task naming it unless
    ``force_conflicts``. Waiting (in the triggerer when ``deferrable``) ends when ``kubectl
    rollout status`` would say the rollout finished; the task fails at once when a rollout
    exceeds its ``progressDeadlineSeconds``, and after ``timeout`` otherwise, with the pods'
    states and reasons. It never touches a VirtualService, so no traffic moves.

    :param manifest: the objects to apply: a dict, a list of dicts, YAML text, or the path of a
        ``.yaml``/``.yml`` file, which Airflow reads as a template when the task renders (relative
        to the DAG's folder or ``template_searchpath``); at least one Deployment (``apps/v1``),
        optionally Services (``v1``) and DestinationRules (``networking.istio.io``). A dict or
        YAML text without templates is checked when the DAG is parsed, anything else once
        rendered; no file is read at parse time by this operator. (templated)
    :param namespace: namespace to apply the objects in (templated)
    :param wait_for_ready: wait until every Deployment is rolled out before succeeding
    :param timeout: the longest wait (timedelta or seconds, > 0)
    :param poll_interval: time between status reads (timedelta or seconds, > 0)
    :param deferrable: wait in the triggerer; default ``[operators] default_deferrable``
    :param kubernetes_conn_id: cncf-kubernetes connection id
    :param force_conflicts: take over fields another field manager owns
    :raises ManifestError: (at parse time when literal) for an object the operator cannot apply,
        YAML with a key defined twice or excessive aliasing, or a ``namespace`` that is not a
        Kubernetes namespace name
    :raises DurationError: for a timeout or poll interval that is not a positive duration
    """

    template_fields = ("manifest", "namespace")
    template_ext = (".yaml", ".yml")
    template_fields_renderers = {"manifest": "yaml"}
    ui_color = "#e3f4e1"

    def __init__(
        self,
        *,
        manifest: Any,
        namespace: str = "default",
        wait_for_ready: bool = True,
        timeout: timedelta | float = 600,
        poll_interval: timedelta | float = 2,
        deferrable: bool | None = None,
        kubernetes_conn_id: str = "kubernetes_default",
        force_conflicts: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if not is_template(manifest) and not _names_a_file(manifest):
            load_manifest(manifest)
        if not is_template(namespace):
            namespace_name("namespace", namespace, ManifestError)
        self.manifest = manifest
        self.namespace = namespace
        self.wait_for_ready = flag("wait_for_ready", wait_for_ready)
        self.timeout = to_seconds("timeout", timeout)
        self.poll_interval = to_seconds("poll_interval", poll_interval)
        deferrable = optional_flag("deferrable", deferrable)
        self.deferrable = default_deferrable() if deferrable is None else deferrable
        self.kubernetes_conn_id = kubernetes_conn_id
        self.force_conflicts = flag("force_conflicts", force_conflicts)

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_canary.hooks.istio import IstioHook

        namespace_name("namespace", self.namespace, ManifestError)  # as rendered
        objects = load_manifest(self.manifest)
        hook = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id)
        applied = []
        for obj in objects:
            result = hook.apply_object(
                obj, namespace=self.namespace, force_conflicts=self.force_conflicts
            )
            name = obj["metadata"]["name"]
            self.log.info(
                "%s %s/%s: %s",
                obj["kind"],
                self.namespace,
                name,
                "applied" if result.changed else "unchanged",
            )
            applied.append({"kind": obj["kind"], "name": name, "changed": result.changed})
        names = [d["metadata"]["name"] for d in deployments(objects)]
        self._summary = {"namespace": self.namespace, "objects": applied, "deployments": names}
        if not self.wait_for_ready:
            return self._summary
        if self.deferrable:
            from airflow_canary.triggers.deploy import DeploymentReadyTrigger

            self.defer(
                trigger=DeploymentReadyTrigger(
                    deployments=names,
                    namespace=self.namespace,
                    deadline=time.time() + self.timeout,
                    poll_interval=self.poll_interval,
                    kubernetes_conn_id=self.kubernetes_conn_id,
                ),
                method_name="execute_complete",
                kwargs={"summary": self._summary},
            )
        return self._wait(hook, names)

    def _wait(self, hook: Any, names: list[str]) -> dict[str, Any]:
        deadline = time.monotonic() + self.timeout
        while True:
            states = {
                name: deployment_readiness(hook.get_deployment(name, self.namespace))
                for name in names
            }
            if all(s.ready for s in states.values()):
                self.log.info("; ".join(s.message for s in states.values()))
                return self._summary
            failed = any(s.failed for s in states.values())
            if failed or time.monotonic() >= deadline:
                details = []
                for name, state in states.items():
                    if state.ready or (failed and not state.failed):
                        continue
                    selector = (hook.get_deployment(name, self.namespace).get("spec") or {}).get(
                        "selector"
                    ) or {}
                    labels = ",".join(
                        f"{k}={v}" for k, v in (selector.get("matchLabels") or {}).items()
                    )
                    details.append(
                        f"{state.message}\n{describe_pods(hook.list_pods(self.namespace, labels))}"
                    )
                what = "rollout failed" if failed else f"not ready within {self.timeout:g}s"
                raise AirflowException(f"{what}; no traffic was moved:\n" + "\n".join(details))
            time.sleep(self.poll_interval)

    def execute_complete(
        self, context: Any, event: dict[str, Any], summary: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        if event.get("status") != "ready":
            raise AirflowException(
                f"model version not deployed ({event.get('status')}); no traffic was moved: {event.get('message')}"
            )
        self.log.info(event.get("message", ""))
        return summary or {}


class ScaleDeploymentOperator(BaseOperator):
    """Scale a Deployment, e.g. the stable version to 0 once the canary is promoted.

    :param deployment: name of the Deployment (templated)
    :param replicas: the replica count to set, an integer >= 0
    :param namespace: its namespace (templated)
    :param kubernetes_conn_id: cncf-kubernetes connection id
    :raises ValueError: (at parse time when literal) for ``replicas`` that is not an integer
        0..2**31-1, a ``deployment`` that is not a Kubernetes object name or a ``namespace``
        that is not a namespace name
    """

    template_fields = ("deployment", "namespace")

    def __init__(
        self,
        *,
        deployment: str,
        replicas: int,
        namespace: str = "default",
        kubernetes_conn_id: str = "kubernetes_default",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if (
            isinstance(replicas, bool)
            or not isinstance(replicas, int)
            or not 0 <= replicas <= MAX_REPLICAS
        ):
            raise ValueError(
                f"replicas must be an integer 0..{MAX_REPLICAS} (a Kubernetes int32), "
                f"got {replicas!r}"
            )
        if not is_template(deployment):
            object_name("deployment", deployment, kind="a Deployment name")
        if not is_template(namespace):
            namespace_name("namespace", namespace)
        self.deployment = deployment
        self.replicas = replicas
        self.namespace = namespace
        self.kubernetes_conn_id = kubernetes_conn_id

    def execute(self, context: Any) -> dict[str, Any]:
        from airflow_canary.hooks.istio import IstioHook

        object_name("deployment", self.deployment, kind="a Deployment name")  # as rendered
        namespace_name("namespace", self.namespace)
        result = IstioHook(kubernetes_conn_id=self.kubernetes_conn_id).scale_deployment(
            self.deployment, self.namespace, self.replicas
        )
        self.log.info(
            "Deployment %s/%s scaled to %d", self.namespace, self.deployment, self.replicas
        )
        return {
            "deployment": self.deployment,
            "namespace": self.namespace,
            "replicas": self.replicas,
            "changed": result.changed,
        }
