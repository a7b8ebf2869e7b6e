"""The local stack: mesh, Istio CRDs, model-v1, Prometheus and steady load, started and stopped as one.

``make demo``, ``make ui``, the end-to-end tests and the benchmarks all stand on it. Every part
is a real process on loopback; ``stop()`` ends all of them, also after an error or Ctrl-C.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from airflow_canary.local.lifetime import die_with_parent

REPO = Path(__file__).resolve().parents[3]
EXAMPLE_MANIFESTS = REPO / "examples" / "manifests"
#: the image the example manifests use; the mesh runs ``serve-model`` for it
MODEL_IMAGE = "your-docker-repo/model-runner"
#: applied in this order: the Service and subsets before the route that names them
BASE_MANIFESTS = (
    "service-model-service.yaml",
    "destinationrule-model-destination.yaml",
    "vs-00-all-v1.yaml",
    "deployment-model-v1.yaml",
)
#: the same for ``router="gateway-api"``: one Service per version and the HTTPRoute between them
GATEWAY_API_MANIFESTS = (
    "service-model-service.yaml",
    "gateway-api/service-model-v1.yaml",
    "gateway-api/service-model-v2.yaml",
    "gateway-api/httproute-00-all-v1.yaml",
    "deployment-model-v1.yaml",
)
START_TIMEOUT_SECONDS = 60.0


class StackError(RuntimeError):
    """A part of the local stack did not start; the message says which and shows its log."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def default_gateway_api_crds_dir() -> Path:
    """Gateway API CRDs to apply with ``router="gateway-api"``: the folder named by
    ``$CANARY_GATEWAY_API_CRDS`` when set, else the mesh's built-in ones (v1.6.1, standard)."""
    from airflow_canary.local.apiserver.crd_folder import GATEWAY_API_CRDS

    value = os.environ.get("CANARY_GATEWAY_API_CRDS")
    return Path(value) if value else GATEWAY_API_CRDS


def default_crds_dir() -> Path | None:
    """Istio CRDs to apply at start: the folder named by ``$CANARY_ISTIO_CRDS``, if set.

    With none, the mesh checks Istio objects with its built-in models of Istio's types.
    """
    value = os.environ.get("CANARY_ISTIO_CRDS")
    return Path(value) if value else None


@dataclass
class _Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 10.0) -> None:
        if self.popen.poll() is not None:
            return
        self.popen.terminate()
        try:
            self.popen.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(timeout=timeout)


def _spawn(
    name: str,
    args: list[str],
    log: Path,
    env: Mapping[str, str] | None = None,
    *,
    append: bool = False,
) -> _Process:
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("ab" if append else "wb") as handle:
        popen = subprocess.Popen(
            args,
            stdout=handle,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            start_new_session=True,  # Ctrl-C reaches the stack, which stops its parts in order
            preexec_fn=die_with_parent(),  # and a SIGKILLed stack leaves no part behind
        )
    return _Process(name, popen, log)


@dataclass
class StackConfig:
    """What to start; ports of 0 are picked free at start."""

    state_dir: Path
    api_port: int = 0
    data_port: int = 0
    metrics_port: int = 0
    prometheus_port: int = 0
    v1_replicas: int = 2
    rps: float = 200.0
    load: bool = True
    scrape_interval_seconds: float = 1.0
    crds_dir: Path | None = field(default_factory=default_crds_dir)
    namespace: str = "default"
    #: "istio" or "gateway-api": which route object the model's traffic goes through
    router: str = "istio"
    #: Gateway API CRDs applied with router "gateway-api" (None: the mesh's built-in ones)
    gateway_api_crds_dir: Path | None = field(default_factory=default_gateway_api_crds_dir)


class LocalStack:
    """The running parts of the local stack and how to reach them."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.state_dir = config.state_dir.resolve()
        self.kubeconfig = self.state_dir / "kubeconfig"
        self.models_dir = self.state_dir / "models"
        self.logs_dir = self.state_dir / "logs"
        #: model servers write their prediction records here (docs/prediction-logs.md)
        self.prediction_log_dir = self.state_dir / "predictions"
        self.api_port = config.api_port or free_port()
        self.data_port = config.data_port or free_port()
        self.metrics_port = config.metrics_port or free_port()
        self.prometheus_port = config.prometheus_port or free_port()
        self._processes: list[_Process] = []
        self._prometheus: Any = None

    # -- addresses -------------------------------------------------------------------------

    @property
    def data_url(self) -> str:
        return f"http://127.0.0.1:{self.data_port}"

    @property
    def prometheus_url(self) -> str:
        return f"http://127.0.0.1:{self.prometheus_port}"

    def connection_env(self) -> dict[str, str]:
        """Airflow connections (Kubernetes, Prometheus) and settings the example DAG reads."""
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "AIRFLOW_CONN_KUBERNETES_DEFAULT": json.dumps(
                {"conn_type": "kubernetes", "extra": {"kube_config_path": str(self.kubeconfig)}}
            ),
            "AIRFLOW_CONN_PROMETHEUS_DEFAULT": json.dumps(
                {
                    "conn_type": "prometheus",
                    "host": "127.0.0.1",
                    "port": self.prometheus_port,
                    "schema": "http",
                }
            ),
            "CANARY_MODEL_DIR": str(self.models_dir),
            "CANARY_PREDICTION_LOG_DIR": str(self.prediction_log_dir),
            # Analyses wait in the triggerer, which also rolls back the moment a step fails.
            "AIRFLOW__OPERATORS__DEFAULT_DEFERRABLE": "True",
        }

    # -- lifecycle -------------------------------------------------------------------------

    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        v1_model = self._train_v1()
        image_map = self._write_image_map()
        self._start_mesh(image_map)
        api = self.api_client()
        manifests: tuple[str, ...] = BASE_MANIFESTS
        if self.config.router == "gateway-api":
            self._apply_gateway_api_crds(api)
            manifests = GATEWAY_API_MANIFESTS
        objects = [yaml.safe_load((EXAMPLE_MANIFESTS / name).read_text()) for name in manifests]
        for obj in objects:
            if obj["kind"] == "Deployment":
                self._configure_model_deployment(
                    obj,
                    version="v1",
                    model=v1_model,
                    replicas=self.config.v1_replicas,
                    prediction_log=self.prediction_log_dir / "v1.jsonl",
                )
        self.apply(api, objects)
        self.wait_for_deployment(api, "model-v1")
        self._start_prometheus()
        if self.config.load:
            self.start_load()

    def stop(self) -> None:
        for process in reversed(self._processes):
            process.stop()
        self._processes.clear()
        if self._prometheus is not None:
            self._prometheus.stop()
            self._prometheus = None

    # -- parts -----------------------------------------------------------------------------

    def _apply_gateway_api_crds(self, api: Any) -> None:
        from airflow_canary.local.apiserver.crd_folder import (
            GATEWAY_API_CRDS,
            CRDFolderError,
            read_crd_folder,
        )

        directory = self.config.gateway_api_crds_dir or GATEWAY_API_CRDS
        try:
            crds = read_crd_folder(directory)
        except CRDFolderError as exc:
            raise StackError(f"the Gateway API CRDs cannot be read: {exc}") from None
        self.apply(api, [crd for _path, crd in crds])

    def route(self) -> dict[str, Any]:
        """The model's route object: the VirtualService, or the HTTPRoute with Gateway API."""
        if self.config.router != "gateway-api":
            return self.virtual_service()
        from kubernetes.client import CustomObjectsApi

        api = CustomObjectsApi(self.api_client())
        doc: dict[str, Any] = api.get_namespaced_custom_object(
            "gateway.networking.k8s.io", "v1", self.config.namespace, "httproutes", "model-route"
        )
        return doc

    def _train_v1(self) -> Path:
        from airflow_canary.local.model.training import train_model

        path = self.models_dir / "model-v1.joblib"
        if not path.exists():
            train_model(path, quality="good")
        return path

    def _write_image_map(self) -> Path:
        path = self.state_dir / "image-map.yaml"
        command = [sys.executable, "-m", "airflow_canary.cli", "serve-model"]
        path.write_text(yaml.safe_dump({MODEL_IMAGE: command}))
        return path

    @property
    def mesh_state_file(self) -> Path:
        """Where the mesh keeps its API objects, so that a restarted mesh serves the same ones."""
        return self.state_dir / "mesh" / "objects.json"

    def _start_mesh(self, image_map: Path) -> None:
        if self.kubeconfig.exists():
            self.kubeconfig.unlink()
        if self.mesh_state_file.exists():
            self.mesh_state_file.unlink()
        self._launch_mesh(image_map)

    def _launch_mesh(self, image_map: Path) -> None:
        args = [
            sys.executable, "-m", "airflow_canary.cli", "mesh",
            "--api-port", str(self.api_port),
            "--data-port", str(self.data_port),
            "--metrics-port", str(self.metrics_port),
            "--kubeconfig", str(self.kubeconfig),
            "--state-dir", str(self.state_dir / "mesh"),
            "--state-file", str(self.mesh_state_file),
            "--image-map", str(image_map),
            *(["--crds", str(self.config.crds_dir)] if self.config.crds_dir else []),
        ]  # fmt: skip
        # Appended to: a restarted mesh's log follows the previous one's.
        mesh = _spawn("mesh", args, self.logs_dir / "mesh.log", append=True)
        self._processes.insert(0, mesh)  # stopped last: the other parts talk to it
        deadline = time.monotonic() + START_TIMEOUT_SECONDS
        while not self.kubeconfig.exists():
            if mesh.popen.poll() is not None or time.monotonic() > deadline:
                raise StackError(f"the mesh did not start:\n{mesh.log_tail()}")
            time.sleep(0.1)
        api = self.api_client()
        from kubernetes.client import VersionApi

        while True:
            try:
                VersionApi(api).get_code()
                return
            except Exception:
                if mesh.popen.poll() is not None or time.monotonic() > deadline:
                    raise StackError(f"the mesh API did not answer:\n{mesh.log_tail()}") from None
                time.sleep(0.1)

    def _part(self, name: str) -> _Process:
        for process in self._processes:
            if process.name == name:
                return process
        raise StackError(f"the stack runs no {name!r}; it runs {[p.name for p in self._processes]}")

    def kill_mesh(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """End the mesh process (its API server, data plane and the pods it runs) with ``sig``.

        Its API objects stay in :attr:`mesh_state_file`; :meth:`start_mesh` brings it back.
        """
        mesh = self._part("mesh")
        self._processes.remove(mesh)
        mesh.popen.send_signal(sig)
        mesh.popen.wait(timeout=30)

    def start_mesh(self) -> None:
        """Start the mesh again on the same ports with the same state file, token and certificate.

        The API serves the objects it had (same resourceVersions, as etcd keeps them for a
        restarted kube-apiserver); the pods of the previous mesh died with it, so the process
        runner starts every Deployment's replicas anew, as a kubelet does after a node restart.
        Clients keep working with the kubeconfig they read before.
        """
        self._launch_mesh(self.state_dir / "image-map.yaml")

    def restart_mesh(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """:meth:`kill_mesh`, then :meth:`start_mesh`."""
        self.kill_mesh(sig)
        self.start_mesh()

    @property
    def prometheus(self) -> Any:
        """The stack's ``PrometheusServer``."""
        if self._prometheus is None:
            raise StackError("the stack runs no Prometheus")
        return self._prometheus

    def kill_prometheus(self, sig: signal.Signals = signal.SIGKILL) -> None:
        """End Prometheus with ``sig``; its storage stays for :meth:`start_prometheus`."""
        self.prometheus.kill(sig)

    def start_prometheus(self) -> None:
        """Start Prometheus again on the same port with the same storage (its WAL is replayed)."""
        self.prometheus.start()

    def api_client(self) -> Any:
        """A ``kubernetes`` ApiClient for the mesh, from the kubeconfig it wrote."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def _start_prometheus(self) -> None:
        from airflow_canary.local.tools.prometheus import PrometheusServer

        storage = self.state_dir / "prometheus"
        shutil.rmtree(storage, ignore_errors=True)  # a new stack starts with no samples
        self._prometheus = PrometheusServer(
            self.prometheus_port,
            [f"127.0.0.1:{self.metrics_port}/stats/prometheus"],
            self.config.scrape_interval_seconds,
            pod_discovery_urls=[f"http://127.0.0.1:{self.metrics_port}/sd/pods"],
            storage_dir=storage,  # kept across kill_prometheus() / start_prometheus()
        )
        self._prometheus.start()

    def start_load(self, rps: float | None = None, headers: Iterable[str] = ()) -> None:
        args = [
            sys.executable, "-m", "airflow_canary.cli", "loadgen",
            "--target", self.data_url, "--host", "model-service",
            "--rps", str(rps or self.config.rps), "--duration", "86400", "--feedback",
        ]  # fmt: skip
        for header in headers:
            args += ["--header", header]
        self._processes.append(_spawn("load", args, self.logs_dir / "load.log"))

    # -- Kubernetes helpers ----------------------------------------------------------------

    @staticmethod
    def _configure_model_deployment(
        obj: dict[str, Any],
        *,
        version: str,
        model: Path,
        replicas: int,
        prediction_log: Path | None = None,
    ) -> None:
        obj["spec"]["replicas"] = replicas
        template = obj["spec"]["template"]
        template["metadata"].setdefault("annotations", {})["prometheus.io/scrape"] = "true"
        container = template["spec"]["containers"][0]
        env = [
            e
            for e in container.get("env", [])
            if e.get("name") not in ("MODEL_PATH", "MODEL_VERSION", "MODEL_PREDICTION_LOG")
        ]
        container["env"] = [
            *env,
            {"name": "MODEL_PATH", "value": str(model)},
            {"name": "MODEL_VERSION", "value": version},
        ]
        if prediction_log is not None:
            container["env"].append(
                {"name": "MODEL_PREDICTION_LOG", "value": f"file://{prediction_log}"}
            )
        container.setdefault(
            "readinessProbe", {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1}
        )

    def apply(self, api: Any, objects: Iterable[Mapping[str, Any]]) -> None:
        """Create each object, or replace it when it exists (the dynamic client, via discovery)."""
        from kubernetes.dynamic import DynamicClient
        from kubernetes.dynamic.exceptions import NotFoundError

        dynamic = DynamicClient(api)
        namespace = self.config.namespace
        for obj in objects:
            resource = dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])
            name = obj["metadata"]["name"]
            try:
                current = resource.get(name=name, namespace=namespace)
            except NotFoundError:
                resource.create(body=dict(obj), namespace=namespace)
                continue
            body = json.loads(json.dumps(obj))
            body["metadata"]["resourceVersion"] = current.metadata.resourceVersion
            resource.replace(body=body, namespace=namespace)

    def wait_for_deployment(
        self, api: Any, name: str, timeout: float = START_TIMEOUT_SECONDS
    ) -> None:
        from kubernetes.client import AppsV1Api

        from airflow_canary.readiness import deployment_readiness

        apps = AppsV1Api(api)
        deadline = time.monotonic() + timeout
        while True:
            doc = api.sanitize_for_serialization(
                apps.read_namespaced_deployment(name, self.config.namespace)
            )
            readiness = deployment_readiness(doc)
            if readiness.ready:
                return
            if readiness.failed or time.monotonic() > deadline:
                raise StackError(f"{readiness.message}; see {self.state_dir / 'mesh' / 'logs'}")
            time.sleep(0.3)

    def virtual_service(self, name: str = "model-virtual-service") -> dict[str, Any]:
        from kubernetes.client import CustomObjectsApi

        api = CustomObjectsApi(self.api_client())
        doc: dict[str, Any] = api.get_namespaced_custom_object(
            "networking.istio.io", "v1", self.config.namespace, "virtualservices", name
        )
        return doc

    def query(self, promql: str) -> list[dict[str, Any]]:
        """Instant query against the stack's Prometheus (for printing progress)."""
        import httpx

        response = httpx.get(
            f"{self.prometheus_url}/api/v1/query", params={"query": promql}, timeout=5
        )
        response.raise_for_status()
        result: list[dict[str, Any]] = response.json()["data"]["result"]
        return result


def prometheus_available() -> bool:
    return shutil.which("prometheus") is not None
