"""Process runner: Deployments become local processes with Pods, readiness, restarts and status."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from airflow_canary.local.workloads.imagemap import ImageMapError, command_for_image, load_image_map
from tests.fixtures.mesh import start_mesh
from tests.local.apps.inprocess import (
    VERSION_SERVER,
    InProcessMesh,
    seed,
    version_deployment,
    wait_for,
)

pytestmark = pytest.mark.timeout(60)


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 45))


def gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def pids_of(mesh: InProcessMesh, name: str) -> set[int]:
    return {r.process.pid for r in mesh.runner.pods("default", name) if r.process is not None}


def test_replicas_run_as_processes_and_become_ready(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh:
            mesh.apply(version_deployment("v1", replicas=2))
            status = await mesh.wait_ready("model-v1", 2)
            assert status["availableReplicas"] == 2
            assert status["updatedReplicas"] == 2
            assert "unavailableReplicas" not in status  # 0 is omitted (omitempty)
            assert status["observedGeneration"] == 1
            conditions = {c["type"]: c for c in status["conditions"]}
            assert conditions["Available"]["status"] == "True"
            assert conditions["Progressing"]["reason"] == "NewReplicaSetAvailable"
            pods = mesh.pods("model-v1")
            assert len(pods) == 2
            ports = set()
            for pod in pods:
                meta = pod["metadata"]
                assert meta["labels"]["app"] == "model" and meta["labels"]["version"] == "v1"
                assert meta["name"].startswith(f"model-v1-{meta['labels']['pod-template-hash']}-")
                assert meta["ownerReferences"][0]["kind"] == "Deployment"
                assert pod["status"]["phase"] == "Running"
                assert pod["status"]["podIP"] == "127.0.0.1"
                ready = {c["type"]: c["status"] for c in pod["status"]["conditions"]}
                assert ready["Ready"] == "True"
                cs = pod["status"]["containerStatuses"][0]
                assert cs["ready"] is True and cs["restartCount"] == 0 and "running" in cs["state"]
                ports.add(int(meta["annotations"]["mesh.airflow-canary.io/port"]))
                log = tmp_path / "logs" / "default" / f"{meta['name']}.log"
                await wait_for(lambda log=log: "listening on" in log.read_text(), 5, "log output")
            assert len(ports) == 2

    run(scenario())


def test_scaling_and_deleting_start_and_stop_processes(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh:
            dep = version_deployment("v1", replicas=1)
            mesh.apply(dep)
            await mesh.wait_ready("model-v1", 1)
            dep["spec"]["replicas"] = 3
            mesh.apply(dep)
            await mesh.wait_ready("model-v1", 3)
            three = pids_of(mesh, "model-v1")
            assert len(three) == 3
            dep["spec"]["replicas"] = 1
            mesh.apply(dep)
            await mesh.wait_ready("model-v1", 1)
            one = pids_of(mesh, "model-v1")
            assert len(one) == 1 and one <= three
            await wait_for(
                lambda: all(gone(p) for p in three - one), 10, "scaled-down processes to exit"
            )
            assert len(mesh.pods("model-v1")) == 1

            mesh.delete(dep)
            await wait_for(
                lambda: all(gone(p) for p in three), 10, "deleted deployment's processes to exit"
            )
            assert mesh.pods("model-v1") == []
            assert mesh.runner.pids() == set()

    run(scenario())


def test_changed_template_replaces_pods(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh:
            mesh.apply(version_deployment("v1", replicas=2))
            await mesh.wait_ready("model-v1", 2)
            old_pids = pids_of(mesh, "model-v1")
            old_hash = mesh.pods("model-v1")[0]["metadata"]["labels"]["pod-template-hash"]
            mesh.apply(version_deployment("v1", replicas=2, GREETING="hello"))

            def rolled() -> bool:
                pods = mesh.pods("model-v1")
                status = mesh.deployment_status("model-v1")
                return (
                    len(pods) == 2
                    and all(p["metadata"]["labels"]["pod-template-hash"] != old_hash for p in pods)
                    and status.get("readyReplicas") == 2
                    and status.get("updatedReplicas") == 2
                )

            await wait_for(rolled, 20, "the rollout to replace both pods")
            status = mesh.deployment_status("model-v1")
            assert status["observedGeneration"] == 2
            assert {c["type"]: c["reason"] for c in status["conditions"]}[
                "Progressing"
            ] == "NewReplicaSetAvailable"
            await wait_for(
                lambda: all(gone(p) for p in old_pids), 10, "old pods' processes to exit"
            )
            assert not pids_of(mesh, "model-v1") & old_pids

    run(scenario())


def test_killed_replica_restarts_and_ready_replicas_follow(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh:
            mesh.apply(version_deployment("v1", replicas=2))
            await mesh.wait_ready("model-v1", 2)
            victim = mesh.runner.pods("default", "model-v1")[0]
            assert victim.process is not None
            old_pid = victim.process.pid
            os.kill(old_pid, signal.SIGKILL)
            await wait_for(lambda: not victim.ready, 5, "the killed replica to become unready")
            await wait_for(
                lambda: (
                    mesh.deployment_status("model-v1").get("readyReplicas", 0) < 2
                    or victim.restart_count >= 1
                ),
                5,
                "status to notice the crash",
            )
            await mesh.wait_ready("model-v1", 2, timeout=15)
            assert victim.process is not None and victim.process.pid != old_pid
            pod = mesh.store.get(victim.key)
            cs = pod["status"]["containerStatuses"][0]
            assert cs["restartCount"] == 1
            assert cs["lastState"]["terminated"]["exitCode"] == -signal.SIGKILL
            assert cs["ready"] is True

    run(scenario())


def test_process_that_exits_immediately_is_in_crash_loop(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh:
            dep = version_deployment("v1", replicas=1)
            dep["spec"]["template"]["spec"]["containers"][0]["command"] = [
                sys.executable,
                "-c",
                "raise SystemExit(3)",
            ]
            mesh.apply(dep)

            def crash_looping() -> bool:
                pods = mesh.pods("model-v1")
                if not pods:
                    return False
                cs = pods[0]["status"]["containerStatuses"][0]
                return (
                    cs["state"].get("waiting", {}).get("reason") == "CrashLoopBackOff"
                    and cs["restartCount"] >= 1
                )

            await wait_for(crash_looping, 10, "CrashLoopBackOff")
            cs = mesh.pods("model-v1")[0]["status"]["containerStatuses"][0]
            assert cs["lastState"]["terminated"]["exitCode"] == 3
            assert cs["ready"] is False
            status = mesh.deployment_status("model-v1")
            # zero-valued status integers are omitted, as the real API server does (omitempty)
            assert "readyReplicas" not in status and "availableReplicas" not in status
            assert status["unavailableReplicas"] == 1
            available = {c["type"]: c for c in status["conditions"]}["Available"]
            assert (available["status"], available["reason"]) == (
                "False",
                "MinimumReplicasUnavailable",
            )
            # back-off 1 s then 2 s: a second restart happens, with a growing count
            await wait_for(
                lambda: (
                    mesh.pods("model-v1")[0]["status"]["containerStatuses"][0]["restartCount"] >= 2
                ),
                10,
                "a second restart",
            )

    run(scenario())


def test_unmapped_image_stays_pending_with_reason(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with InProcessMesh(tmp_path) as mesh:
            mesh.apply(seed("deployment-model-v1"))  # image only, no command, empty image map
            await wait_for(lambda: len(mesh.pods("model-v1")) == 5, 10, "five pods")
            await wait_for(
                lambda: (
                    all(p["status"]["phase"] == "Pending" for p in mesh.pods("model-v1"))
                    and mesh.deployment_status("model-v1").get("replicas") == 5
                ),
                10,
                "pending pods",
            )
            for pod in mesh.pods("model-v1"):
                waiting = pod["status"]["containerStatuses"][0]["state"]["waiting"]
                assert waiting["reason"] == "ImageNotMapped"
                assert "your-docker-repo/model-runner:v1" in waiting["message"]
                assert "--image-map" in waiting["message"]
            status = mesh.deployment_status("model-v1")
            assert "readyReplicas" not in status  # 0 is omitted (omitempty)
            assert mesh.runner.pids() == set()
            # the mesh keeps working: a runnable deployment still starts
            mesh.apply(version_deployment("v2", replicas=1))
            await mesh.wait_ready("model-v2", 1)

    run(scenario())


def test_image_map_runs_the_mapped_command(tmp_path: Path) -> None:
    image_map_file = tmp_path / "images.yaml"
    image_map_file.write_text(
        f"your-docker-repo/model-runner:v1: [{sys.executable!r}, {str(VERSION_SERVER)!r}, v1]\n"
        f"your-docker-repo/model-runner: [{sys.executable!r}, {str(VERSION_SERVER)!r}, any-tag]\n"
    )
    image_map = load_image_map(image_map_file)
    assert command_for_image(image_map, "your-docker-repo/model-runner:v1")[-1] == "v1"
    assert command_for_image(image_map, "your-docker-repo/model-runner:v9")[-1] == "any-tag"
    assert command_for_image(image_map, "other/image:v1") is None

    async def scenario() -> None:
        async with InProcessMesh(tmp_path, image_map) as mesh:
            dep = seed("deployment-model-v1")
            dep["spec"]["replicas"] = 1
            mesh.apply(dep)
            await mesh.wait_ready("model-v1", 1)

    run(scenario())


def test_bad_image_map_is_reported(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("my/image: python -m server\n")
    with pytest.raises(
        ImageMapError, match="must be a non-empty list of strings, got 'python -m server'"
    ):
        load_image_map(bad)
    with pytest.raises(ImageMapError, match="cannot read image map"):
        load_image_map(tmp_path / "missing.yaml")


def test_stop_leaves_no_process_behind(tmp_path: Path) -> None:
    stubborn = (
        "import signal, subprocess, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(300)']); "
        "print('child started', flush=True); time.sleep(300)"
    )

    async def scenario() -> set[int]:
        async with InProcessMesh(tmp_path) as mesh:
            mesh.apply(version_deployment("v1", replicas=2))
            dep = version_deployment("v2", replicas=1)
            spec = dep["spec"]["template"]["spec"]
            spec["terminationGracePeriodSeconds"] = 1
            spec["containers"][0]["command"] = [sys.executable, "-c", stubborn]
            spec["containers"][0]["readinessProbe"] = None
            spec["containers"][0]["ports"] = []
            mesh.apply(dep)
            await mesh.wait_ready("model-v1", 2)
            await mesh.wait_ready("model-v2", 1)
            leaders = mesh.runner.pids()
            assert len(leaders) == 3
            everything = set(leaders)
            for pid in leaders:
                everything |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
            await wait_for(
                lambda: len(everything) >= 4 or any(psutil.Process(p).children() for p in leaders),
                5,
                "the grandchild",
            )
            for pid in leaders:
                everything |= {c.pid for c in psutil.Process(pid).children(recursive=True)}
            assert len(everything) == 4
        return everything

    pids = run(scenario())
    assert all(gone(pid) for pid in pids), [p for p in pids if not gone(p)]


# -- end to end through ``airflow-canary mesh`` ----------------------------------------------------


def test_mesh_command_runs_routes_counts_and_leaves_nothing_behind(tmp_path: Path) -> None:
    manifests = [seed("service-model-service"), seed("destinationrule-model-destination")]
    manifests += [version_deployment("v1", 1), version_deployment("v2", 1), seed("vs-05-header-v2")]
    unmapped = seed("deployment-model-v1")
    unmapped["metadata"]["name"] = "unmapped"
    unmapped["spec"]["replicas"] = 1
    manifests.append(unmapped)
    with start_mesh(tmp_path / "mesh") as mesh:
        applied = mesh.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(manifests))
        assert applied.returncode == 0, applied.stderr

        def deployments() -> dict[str, dict[str, Any]]:
            out = mesh.kubectl("get", "deployments", "-o", "json")
            return {
                d["metadata"]["name"]: d.get("status") or {}
                for d in json.loads(out.stdout)["items"]
            }

        for _ in range(150):
            status = deployments()
            if all(status.get(n, {}).get("readyReplicas") == 1 for n in ("model-v1", "model-v2")):
                break
            time.sleep(0.1)
        else:
            raise AssertionError(f"deployments not ready: {deployments()}")
        pods = json.loads(mesh.kubectl("get", "pods", "-o", "json").stdout)["items"]
        pending = [p for p in pods if p["metadata"]["name"].startswith("unmapped-")]
        assert pending and pending[0]["status"]["phase"] == "Pending"
        assert (
            pending[0]["status"]["containerStatuses"][0]["state"]["waiting"]["reason"]
            == "ImageNotMapped"
        )

        data = f"http://127.0.0.1:{mesh.data_port}/"
        with httpx.Client(timeout=10) as client:
            for _ in range(20):
                resp = client.get(data, headers={"Host": "model-service", "x-canary-version": "v2"})
                assert (resp.status_code, resp.headers["x-canary-served-by"]) == (200, "v2")
            for _ in range(30):
                assert (
                    client.get(data, headers={"Host": "model-service"}).headers[
                        "x-canary-served-by"
                    ]
                    == "v1"
                )
            text = client.get(f"http://127.0.0.1:{mesh.metrics_port}/stats/prometheus").text
        counts = {
            s.labels["destination_version"]: s.value
            for f in text_string_to_metric_families(text)
            for s in f.samples
            if s.name == "istio_requests_total" and s.labels["response_code"] == "200"
        }
        assert counts == {"v1": 30, "v2": 20}
        children = {c.pid for c in psutil.Process(mesh.process.pid).children(recursive=True)}
        assert len(children) == 2
    assert mesh.process.returncode == 0
    assert all(gone(pid) for pid in children)
