"""Process runner of the local mesh: a controller that runs each Deployment replica as a local process and writes its Pod."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import enum
import hashlib
import json
import logging
import os
import random
import re
import signal
import socket
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import aiohttp

from airflow_canary.local.apiserver.store import NotFound, ObjectStore, ResourceKey
from airflow_canary.local.lifetime import die_with_parent
from airflow_canary.local.workloads.imagemap import command_for_image, load_image_map

__all__ = ["ProcessRunner", "load_image_map", "PORT_ANNOTATION"]

log = logging.getLogger(__name__)

PORT_ANNOTATION = "mesh.airflow-canary.io/port"
#: k8s defaults terminationGracePeriodSeconds to 30 s; a local mesh should not hang that long on stop.
MAX_GRACE_SECONDS = 10.0
#: How long stop() waits for a SIGKILLed process group to be gone.
GROUP_EXIT_SECONDS = 5.0
BACKOFF_START = 1.0
BACKOFF_CAP = 30.0
#: A process that ran this long before exiting counts as healthy: its next crash backs off from the start.
BACKOFF_RESET_AFTER = 10.0
#: Without a readinessProbe and without declared ports, a process counts as ready after running this long.
NO_PROBE_READY_AFTER = 0.5
#: How often every Deployment is re-examined without any change to it.
RESYNC_SECONDS = 1.0
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"
_VAR = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _group_members(pgid: int) -> list[int]:
    """PIDs of the processes in process group ``pgid`` that have not exited (zombies excluded).

    Reads ``/proc/<pid>/stat`` (proc(5): field 3 is the state, field 5 the process group).
    """
    members = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as stat:
                fields = stat.read().rpartition(b")")[2].split()
        except OSError:  # exited while scanning
            continue
        if len(fields) > 2 and fields[0] != b"Z" and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


async def _wait_group_gone(pgid: int, timeout: float) -> None:
    """Wait until every process of group ``pgid`` has exited, at most ``timeout`` seconds.

    A SIGKILL is delivered asynchronously: a member that is not the runner's child (a grandchild,
    reparented to init) can still be listed for a moment after ``killpg`` returns.
    """
    deadline = time.monotonic() + timeout
    while (left := _group_members(pgid)) and time.monotonic() < deadline:
        await asyncio.sleep(0.05)
    if left:
        log.warning("process group %d still has members %s after SIGKILL", pgid, left)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def template_hash(template: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps(template, sort_keys=True).encode()).hexdigest()
    return digest[:10]


def _expand(value: str, env: dict[str, str]) -> str:
    """Kubernetes' ``$(VAR)`` expansion in command, args and env values; unknown references stay as written."""
    return _VAR.sub(lambda m: env.get(m.group(1), m.group(0)), value)


class Phase(enum.Enum):
    PENDING = "Pending"
    RUNNING = "Running"
    FAILED = "Failed"


class Replica:
    """One pod: its process, restarts with back-off, readiness, and the Pod object describing it."""

    def __init__(
        self,
        store: ObjectStore,
        deployment: dict[str, Any],
        pod_template_hash: str,
        command: list[str] | None,
        state_dir: Path,
        on_change: Callable[[], None],
        session: aiohttp.ClientSession,
    ) -> None:
        meta = deployment["metadata"]
        self.store = store
        self.namespace: str = meta.get("namespace", "default")
        self.deployment: str = meta["name"]
        self.hash = pod_template_hash
        template = copy.deepcopy((deployment.get("spec") or {}).get("template") or {})
        self.pod_spec: dict[str, Any] = template.get("spec") or {}
        self.container: dict[str, Any] = (self.pod_spec.get("containers") or [{}])[0]
        suffix = "".join(random.choice(_NAME_CHARS) for _ in range(5))
        self.name = f"{self.deployment}-{pod_template_hash}-{suffix}"
        self.key = ResourceKey("", "pods", self.namespace, self.name)
        self.labels: dict[str, str] = {**((template.get("metadata") or {}).get("labels") or {})}
        self.labels["pod-template-hash"] = pod_template_hash
        self.annotations: dict[str, str] = {
            **((template.get("metadata") or {}).get("annotations") or {})
        }
        self.command = command
        self.port = free_port()
        self.log_path = state_dir / "logs" / self.namespace / f"{self.name}.log"
        grace = self.pod_spec.get("terminationGracePeriodSeconds", 30)
        self.grace = min(float(grace if grace is not None else 30), MAX_GRACE_SECONDS)
        self.created = time.monotonic()
        self.ready = False
        self.restart_count = 0
        self.process: asyncio.subprocess.Process | None = None
        self._on_change = on_change
        self._session = session
        self._stop = asyncio.Event()
        self._state: dict[str, Any] = {"waiting": {"reason": "ContainerCreating"}}
        self._last_state: dict[str, Any] = {}
        self._phase = Phase.PENDING
        self._started_at: str | None = None
        self._ready_since = _now()
        self._ready_at = time.monotonic()
        self._task: asyncio.Task[None] | None = None
        self._owner_uid = meta.get("uid", "")

    # -- pod object -----------------------------------------------------------------------------

    def pod(self) -> dict[str, Any]:
        return {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": dict(self.labels),
                "annotations": {**self.annotations, PORT_ANNOTATION: str(self.port)},
                "ownerReferences": [
                    {
                        "apiVersion": "apps/v1",
                        "kind": "Deployment",
                        "name": self.deployment,
                        "uid": self._owner_uid,
                        "controller": True,
                        "blockOwnerDeletion": True,
                    }
                ],
            },
            "spec": {**copy.deepcopy(self.pod_spec), "nodeName": "localhost"},
            "status": self.status(),
        }

    def status(self) -> dict[str, Any]:
        ready = "True" if self.ready else "False"
        container: dict[str, Any] = {
            "name": self.container.get("name", "main"),
            "image": self.container.get("image", ""),
            "imageID": "",
            "ready": self.ready,
            "started": self.process is not None and self.process.returncode is None,
            "restartCount": self.restart_count,
            "state": copy.deepcopy(self._state),
            "lastState": copy.deepcopy(self._last_state),
        }
        if self.process is not None:
            container["containerID"] = f"pid://{self.process.pid}"
        status: dict[str, Any] = {
            "phase": self._phase.value,
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {
                    "type": "ContainersReady",
                    "status": ready,
                    "lastTransitionTime": self._ready_since,
                },
                {"type": "Ready", "status": ready, "lastTransitionTime": self._ready_since},
            ],
            "hostIP": "127.0.0.1",
            "podIP": "127.0.0.1",
            "podIPs": [{"ip": "127.0.0.1"}],
            "containerStatuses": [container],
        }
        if self._started_at:
            status["startTime"] = self._started_at
        return status

    def _publish(self) -> None:
        self.store.update_status(self.key, self.status())
        self._on_change()

    def _set_ready(self, ready: bool) -> None:
        if ready != self.ready:
            self.ready = ready
            self._ready_since = _now()
            self._ready_at = time.monotonic()
            self._publish()

    def available(self, min_ready_seconds: float) -> bool:
        """Ready for at least ``minReadySeconds`` (the Deployment controller's "available")."""
        return self.ready and time.monotonic() - self._ready_at >= min_ready_seconds

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> None:
        self.store.create(self.key, self.pod())
        self._task = asyncio.ensure_future(self._run())

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL it after the grace period; returns once it is gone."""
        self._stop.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), self.grace + 5)
            except asyncio.TimeoutError:
                self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._kill_group(signal.SIGKILL)
        if self.process is not None:
            await _wait_group_gone(self.process.pid, GROUP_EXIT_SECONDS)

    def _kill_group(self, sig: signal.Signals) -> None:
        if self.process is None:
            return
        # start_new_session made the process the leader of its own group; the pgid stays reserved
        # while any member lives, so this reaches children that outlived the leader too.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, sig)

    def _pending(self, reason: str, message: str) -> None:
        self._phase = Phase.PENDING
        self._state = {"waiting": {"reason": reason, "message": message}}
        self._publish()

    async def _run(self) -> None:
        if self.command is None:
            image = self.container.get("image", "")
            self._pending(
                "ImageNotMapped",
                f"container {self.container.get('name', '')!r} has no command and image {image!r} is not in the "
                "image map; give the container a command or map the image with --image-map FILE "
                "(YAML: image -> [command, args...])",
            )
            await self._stop.wait()
            return
        backoff = BACKOFF_START
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                exit_code = await self._run_once()
                if exit_code is None:  # stopped
                    return
                self.restart_count += 1
                if time.monotonic() - started >= BACKOFF_RESET_AFTER:
                    backoff = BACKOFF_START
                self._phase = Phase.RUNNING
                self._last_state = {
                    "terminated": {
                        "exitCode": exit_code,
                        "reason": "Completed" if exit_code == 0 else "Error",
                        "startedAt": self._started_at,
                        "finishedAt": _now(),
                    }
                }
                self._state = {
                    "waiting": {
                        "reason": "CrashLoopBackOff",
                        "message": f"back-off {backoff:g}s restarting failed container="
                        f"{self.container.get('name', '')} pod={self.name}_{self.namespace}; "
                        f"last exit code {exit_code}, see {self.log_path}",
                    }
                }
                self._publish()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), backoff)
                backoff = min(backoff * 2, BACKOFF_CAP)
        finally:
            self._kill_group(signal.SIGKILL)

    def _environment(self) -> dict[str, str]:
        env = dict(os.environ)
        for entry in self.container.get("env") or []:
            if "value" in entry and entry.get("name"):
                env[str(entry["name"])] = _expand(str(entry["value"]), env)
        env["PORT"] = str(self.port)
        env["HOSTNAME"] = self.name
        env["POD_NAME"] = self.name
        env["POD_NAMESPACE"] = self.namespace
        return env

    async def _run_once(self) -> int | None:
        """Run the process until it exits (its exit code) or until stop() (None)."""
        assert self.command is not None
        env = self._environment()
        argv = [_expand(a, env) for a in self.command]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as logfile:
            logfile.write(
                f"--- {_now()} starting (restart {self.restart_count}): {argv!r}\n".encode()
            )
            logfile.flush()
            try:
                self.process = await asyncio.create_subprocess_exec(
                    *argv,
                    env=env,
                    stdin=asyncio.subprocess.DEVNULL,
                    stdout=logfile,
                    stderr=asyncio.subprocess.STDOUT,
                    start_new_session=True,
                    preexec_fn=die_with_parent(),
                )
            except OSError as exc:
                logfile.write(f"--- cannot start {argv[0]!r}: {exc}\n".encode())
                self._started_at = _now()
                return 127
        process = self.process
        self._started_at = _now()
        self._phase = Phase.RUNNING
        self._state = {"running": {"startedAt": self._started_at}}
        self._publish()
        probe = asyncio.ensure_future(self._probe_loop())
        exited = asyncio.ensure_future(process.wait())
        stopping = asyncio.ensure_future(self._stop.wait())
        try:
            await asyncio.wait({exited, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            probe.cancel()
            stopping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await probe
        self._set_ready(False)
        if not exited.done():
            self._kill_group(signal.SIGTERM)
            try:
                await asyncio.wait_for(exited, self.grace)
            except asyncio.TimeoutError:
                self._kill_group(signal.SIGKILL)
                await process.wait()
            return None
        self._kill_group(signal.SIGKILL)  # whatever it left behind
        return None if self._stop.is_set() else int(process.returncode or 0)

    # -- readiness ------------------------------------------------------------------------------

    def _probe_port(self, port: int | str | None) -> int:
        declared = self.container.get("ports") or []
        if isinstance(port, str) and not port.isdigit():
            for p in declared:
                if p.get("name") == port:
                    return self.port
            raise ValueError(
                f"readinessProbe port {port!r} names no containerPort of {self.container.get('name')!r}"
            )
        number = int(port) if port is not None else None
        if (
            number is None
            or not declared
            or any(p.get("containerPort") == number for p in declared)
        ):
            return self.port
        return number

    async def _probe_loop(self) -> None:
        probe = self.container.get("readinessProbe") or {}
        http_get = probe.get("httpGet")
        started = time.monotonic()
        if not http_get:
            # No probe: ready as soon as the declared port accepts connections (or shortly after start).
            while True:
                if self.container.get("ports"):
                    if await self._tcp_open(self.port):
                        self._set_ready(True)
                        return
                elif time.monotonic() - started >= NO_PROBE_READY_AFTER:
                    self._set_ready(True)
                    return
                await asyncio.sleep(0.1)
        try:
            port = self._probe_port(http_get.get("port"))
        except ValueError as exc:
            with open(self.log_path, "ab") as logfile:
                logfile.write(f"--- never ready: {exc}\n".encode())
            return
        path = str(http_get.get("path", "/"))
        url = f"http://127.0.0.1:{port}{path if path.startswith('/') else '/' + path}"
        headers = {
            h["name"]: str(h["value"]) for h in http_get.get("httpHeaders") or [] if "name" in h
        }
        timeout = aiohttp.ClientTimeout(total=float(probe.get("timeoutSeconds", 1)))
        # Local processes start in well under k8s' default 10 s period: poll fast, cap the period at 1 s.
        period = min(float(probe.get("periodSeconds", 10)), 1.0)
        failure_threshold = int(probe.get("failureThreshold", 3))
        await asyncio.sleep(min(float(probe.get("initialDelaySeconds", 0)), 10.0))
        failures = 0
        while True:
            ok = await self._http_ok(url, headers, timeout)
            if ok:
                failures = 0
                self._set_ready(True)
            else:
                failures += 1
                if self.ready and failures >= failure_threshold:
                    self._set_ready(False)
            await asyncio.sleep(period if self.ready else min(period, 0.2))

    async def _http_ok(
        self, url: str, headers: dict[str, str], timeout: aiohttp.ClientTimeout
    ) -> bool:
        try:
            async with self._session.get(
                url, headers=headers, timeout=timeout, allow_redirects=False
            ) as resp:
                await resp.read()
                return 200 <= resp.status < 400
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError):
            return False

    @staticmethod
    async def _tcp_open(port: int) -> bool:
        try:
            _reader, writer = await asyncio.wait_for(
                asyncio.open_connection("127.0.0.1", port), 1.0
            )
        except (OSError, asyncio.TimeoutError):
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True


class ProcessRunner:
    """Watches Deployments in the store and keeps their replicas running as local processes.

    Rolling updates start the new pods first and stop old ones as new ones become ready
    (maxSurge 100%, maxUnavailable 0). Pods of one Deployment are not spread over any scheduler:
    all run on this machine, each on its own free port (``PORT``).
    """

    def __init__(
        self, store: ObjectStore, state_dir: Path, image_map: dict[str, list[str]] | None = None
    ) -> None:
        self.store = store
        self.state_dir = Path(state_dir)
        self.image_map = dict(image_map or {})
        self._replicas: dict[ResourceKey, list[Replica]] = {}
        self._stopping: set[asyncio.Task[None]] = set()
        self._hashes: dict[ResourceKey, str] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._session: aiohttp.ClientSession | None = None

    # -- public ---------------------------------------------------------------------------------

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._session = aiohttp.ClientSession()
        # Pods left in a persisted store describe processes that died with the previous mesh.
        for pod in self.store.list("", "pods"):
            if PORT_ANNOTATION in ((pod.get("metadata") or {}).get("annotations") or {}):
                with contextlib.suppress(NotFound):
                    self.store.delete(
                        ResourceKey(
                            "",
                            "pods",
                            pod["metadata"].get("namespace", ""),
                            pod["metadata"]["name"],
                        )
                    )
        self._unsubscribe = self.store.subscribe(self._on_store_event)
        self._task = asyncio.ensure_future(self._control_loop())
        self._wake.set()

    async def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after the grace period) and remove their pods."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for key in list(self._replicas):
            for replica in list(self._replicas.pop(key)):
                self._retire(replica)
        if self._stopping:
            await asyncio.gather(*self._stopping, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None

    def pods(self, namespace: str, deployment: str) -> list[Replica]:
        """The live replicas of one Deployment (for tests and tools that want PIDs and ports)."""
        return list(
            self._replicas.get(ResourceKey("apps", "deployments", namespace, deployment), [])
        )

    def pids(self) -> set[int]:
        """PIDs of every process the runner currently runs."""
        return {
            r.process.pid
            for replicas in self._replicas.values()
            for r in replicas
            if r.process is not None and r.process.returncode is None
        }

    # -- events ---------------------------------------------------------------------------------

    def _on_store_event(self, event: str, key: ResourceKey, _obj: dict[str, Any]) -> None:
        # Called from whichever thread wrote to the store: hand over to the loop, never block.
        if self._loop is None:
            return
        if key.group == "apps" and key.plural == "deployments":
            self._loop.call_soon_threadsafe(self._changed)
        elif event == "DELETED" and key.group == "" and key.plural == "pods":
            self._loop.call_soon_threadsafe(self._pod_deleted, key)

    def _changed(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _pod_deleted(self, key: ResourceKey) -> None:
        # Someone deleted a pod we run (kubectl delete pod): stop it; the Deployment gets a replacement.
        for replicas in self._replicas.values():
            for replica in replicas:
                if replica.key == key:
                    replicas.remove(replica)
                    self._retire(replica, delete_pod=False)
                    self._changed()
                    return

    # -- control loop ---------------------------------------------------------------------------

    async def _control_loop(self) -> None:
        assert self._wake is not None
        while True:
            # Also resync periodically, as the controller does: minReadySeconds and the progress
            # deadline are measured in time, not signalled by any event.
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), RESYNC_SECONDS)
            self._wake.clear()
            try:
                self._reconcile()
            except Exception:  # a bad object must not take the mesh down
                log.exception("process runner: reconcile failed")

    def _reconcile(self) -> None:
        deployments = {
            ResourceKey(
                "apps",
                "deployments",
                d["metadata"].get("namespace", "default"),
                d["metadata"]["name"],
            ): d
            for d in self.store.list("apps", "deployments")
        }
        for key in list(self._replicas):
            if key not in deployments:
                for replica in self._replicas.pop(key):
                    self._retire(replica)
                self._hashes.pop(key, None)
        for key, deployment in deployments.items():
            self._sync(key, deployment)
            self._write_status(key, deployment)

    def _command(self, container: dict[str, Any]) -> list[str] | None:
        command = [str(a) for a in container.get("command") or []]
        args = [str(a) for a in container.get("args") or []]
        if command:
            return command + args
        mapped = command_for_image(self.image_map, str(container.get("image", "")))
        if mapped is None:
            return None
        return mapped + args

    def _sync(self, key: ResourceKey, deployment: dict[str, Any]) -> None:
        assert self._session is not None
        spec = deployment.get("spec") or {}
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        template = spec.get("template") or {}
        wanted_hash = template_hash(template)
        replicas = self._replicas.setdefault(key, [])
        current = [r for r in replicas if r.hash == wanted_hash]
        old = [r for r in replicas if r.hash != wanted_hash]
        containers = (template.get("spec") or {}).get("containers") or [{}]
        while len(current) < desired:
            replica = Replica(
                self.store,
                deployment,
                wanted_hash,
                self._command(containers[0]),
                self.state_dir,
                self._changed,
                self._session,
            )
            replica.start()
            current.append(replica)
            replicas.append(replica)
        # Scale down the least useful first: not ready before ready, newest before oldest.
        for replica in sorted(current, key=lambda r: (r.ready, -r.created))[
            : max(0, len(current) - desired)
        ]:
            current.remove(replica)
            replicas.remove(replica)
            self._retire(replica)
        min_ready = float(spec.get("minReadySeconds") or 0)
        # Old pods keep serving until enough new ones are available (maxSurge 100%, maxUnavailable 0).
        keep_old = max(0, desired - sum(r.available(min_ready) for r in current))
        for replica in sorted(old, key=lambda r: (r.ready, -r.created))[
            : max(0, len(old) - keep_old)
        ]:
            replicas.remove(replica)
            self._retire(replica)

    def _retire(self, replica: Replica, *, delete_pod: bool = True) -> None:
        if delete_pod:
            with contextlib.suppress(NotFound):
                self.store.delete(replica.key)
        task = asyncio.ensure_future(replica.stop())
        self._stopping.add(task)
        task.add_done_callback(self._stopping.discard)

    # -- status ---------------------------------------------------------------------------------

    def _write_status(self, key: ResourceKey, deployment: dict[str, Any]) -> None:
        """Write ``status`` as the Deployment controller computes it (``calculateStatus`` and
        ``syncRolloutStatus`` in pkg/controller/deployment): counts over old and new pods together,
        the Available and Progressing conditions, and zero-valued integers omitted (``omitempty``).
        """
        spec = deployment.get("spec") or {}
        previous: dict[str, Any] = deployment.get("status") or {}
        desired = int(spec.get("replicas", 1) if spec.get("replicas") is not None else 1)
        wanted_hash = template_hash(spec.get("template") or {})
        replicas = self._replicas.get(key, [])
        updated = [r for r in replicas if r.hash == wanted_hash]
        min_ready = float(spec.get("minReadySeconds") or 0)
        available = sum(r.available(min_ready) for r in replicas)
        counts = {
            "observedGeneration": int(deployment["metadata"].get("generation", 1)),
            "replicas": len(replicas),
            "updatedReplicas": len(updated),
            "readyReplicas": sum(r.ready for r in replicas),
            "availableReplicas": available,
            "unavailableReplicas": max(0, len(replicas) - available),
        }
        conditions = {c["type"]: c for c in previous.get("conditions") or [] if isinstance(c, dict)}
        if available >= desired - _max_unavailable(spec, desired):
            _set_condition(
                conditions,
                "Available",
                "True",
                "MinimumReplicasAvailable",
                "Deployment has minimum availability.",
            )
        else:
            _set_condition(
                conditions,
                "Available",
                "False",
                "MinimumReplicasUnavailable",
                "Deployment does not have minimum availability.",
            )
        self._progress(key, deployment, previous, counts, conditions, desired, wanted_hash)
        status: dict[str, Any] = {k: v for k, v in counts.items() if v}
        status["conditions"] = [
            conditions[t] for t in ("Available", "Progressing") if t in conditions
        ]
        self.store.update_status(key, status)

    def _progress(
        self,
        key: ResourceKey,
        deployment: dict[str, Any],
        previous: dict[str, Any],
        counts: dict[str, int],
        conditions: dict[str, dict[str, Any]],
        desired: int,
        wanted_hash: str,
    ) -> None:
        """The Progressing condition, following ``syncRolloutStatus`` (pkg/controller/deployment/progress.go)."""
        # apps/v1 defaults the deadline to 600 s; MaxInt32 means "no deadline" (HasProgressDeadline).
        deadline = (deployment.get("spec") or {}).get("progressDeadlineSeconds", 600)
        if deadline is None or deadline == 2**31 - 1:
            conditions.pop("Progressing", None)
            return
        replica_set = f"{key.name}-{wanted_hash}"
        current = conditions.get("Progressing")
        if self._hashes.get(key) != wanted_hash:
            # A new ReplicaSet: the controller records it with a fresh lastUpdateTime.
            self._hashes[key] = wanted_hash
            _set_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetCreated",
                f'Created new replica set "{replica_set}"',
                refresh=True,
            )
            current = conditions["Progressing"]
        complete_before = (
            counts["replicas"] == counts["updatedReplicas"]
            and current is not None
            and current.get("reason") == "NewReplicaSetAvailable"
        )
        if complete_before:
            return
        if (
            counts["updatedReplicas"] == desired
            and counts["replicas"] == desired
            and counts["availableReplicas"] == desired
        ):
            _set_condition(
                conditions,
                "Progressing",
                "True",
                "NewReplicaSetAvailable",
                f'ReplicaSet "{replica_set}" has successfully progressed.',
            )
            return
        old_before = int(previous.get("replicas") or 0) - int(previous.get("updatedReplicas") or 0)
        progressed = (
            counts["updatedReplicas"] > int(previous.get("updatedReplicas") or 0)
            or counts["replicas"] - counts["updatedReplicas"] < old_before
            or counts["readyReplicas"] > int(previous.get("readyReplicas") or 0)
            or counts["availableReplicas"] > int(previous.get("availableReplicas") or 0)
        )
        if progressed or current is None:
            _set_condition(
                conditions,
                "Progressing",
                "True",
                "ReplicaSetUpdated",
                f'ReplicaSet "{replica_set}" is progressing.',
                refresh=True,
            )
            return
        if current.get("reason") == "ProgressDeadlineExceeded":
            return
        since = _parse_time(current.get("lastUpdateTime"))
        if since is not None and time.time() > since + float(deadline):
            _set_condition(
                conditions,
                "Progressing",
                "False",
                "ProgressDeadlineExceeded",
                f'ReplicaSet "{replica_set}" has timed out progressing.',
            )


def _set_condition(
    conditions: dict[str, dict[str, Any]],
    kind: str,
    status: str,
    reason: str,
    message: str,
    *,
    refresh: bool = False,
) -> None:
    """``SetDeploymentCondition``: an unchanged status and reason keep the condition as it is, unless
    ``refresh`` (progress was made: only ``lastUpdateTime`` moves); ``lastTransitionTime`` moves
    only when the status changes."""
    previous = conditions.get(kind)
    if previous and (previous["status"], previous["reason"]) == (status, reason) and not refresh:
        return
    now = _now()
    conditions[kind] = {
        "type": kind,
        "status": status,
        "lastUpdateTime": now,
        "lastTransitionTime": previous["lastTransitionTime"]
        if previous and previous["status"] == status
        else now,
        "reason": reason,
        "message": message,
    }


def _parse_time(text: Any) -> float | None:
    try:
        return (
            datetime.strptime(str(text), "%Y-%m-%dT%H:%M:%SZ")
            .replace(tzinfo=timezone.utc)
            .timestamp()
        )
    except ValueError:
        return None


def _max_unavailable(spec: dict[str, Any], desired: int) -> int:
    """``MaxUnavailable`` of a RollingUpdate Deployment: an int or a percentage rounded down, at most ``desired``."""
    strategy = spec.get("strategy") or {}
    if strategy.get("type", "RollingUpdate") != "RollingUpdate" or desired == 0:
        return 0
    value = (strategy.get("rollingUpdate") or {}).get("maxUnavailable", "25%")
    if isinstance(value, str) and value.endswith("%"):
        number = int(desired * int(value[:-1]) / 100)
    else:
        number = int(value)
    return min(max(number, 0), desired)
