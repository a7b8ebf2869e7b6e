"""IstioHook and AsyncIstioHook against the local mesh's Kubernetes API over real HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
from pathlib import Path
from typing import Any

import pytest
import yaml

from airflow_canary.hooks.istio import (
    AsyncIstioHook,
    IstioApplyConflictError,
    IstioConflictError,
    IstioHook,
    IstioKind,
    IstioNotFoundError,
    IstioUnavailableError,
    RetryPolicy,
)
from airflow_canary.routing import HeaderRoute, RouteTarget, set_canary_weight, set_header_route
from tests.conftest import seed_manifest
from tests.fixtures.mesh import Seeded
from tests.schemas import assert_valid_istio

VS = "model-virtual-service"
TARGET = RouteTarget()


def _load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def _fast() -> RetryPolicy:
    return RetryPolicy(connect_attempts=3, connect_backoff_seconds=0.05, connect_deadline_seconds=5)


def test_reads_the_virtual_service_in_a_served_version(seeded: Seeded) -> None:
    hook = IstioHook()
    vs = hook.get_virtual_service(VS, seeded.namespace)
    assert vs["spec"] == _load(seed_manifest("vs-00-all-v1.yaml"))["spec"]
    assert hook.served_version(IstioKind.VIRTUAL_SERVICE) in ("v1", "v1beta1", "v1alpha3")


def test_unknown_virtual_service_names_it_and_its_namespace(seeded: Seeded) -> None:
    with pytest.raises(IstioNotFoundError) as err:
        IstioHook().get_virtual_service("no-such-vs", seeded.namespace)
    assert str(err.value) == (
        f"VirtualService 'no-such-vs' not found in namespace {seeded.namespace!r}"
    )
    with pytest.raises(IstioNotFoundError, match="'no-such-vs' not found in namespace 'other'"):
        IstioHook().update_virtual_service("no-such-vs", "other", lambda vs: vs)


def test_update_writes_once_and_validates_against_istio_schemas(seeded: Seeded) -> None:
    result = IstioHook().update_virtual_service(
        VS, seeded.namespace, lambda vs: set_canary_weight(vs, TARGET, 10)
    )
    assert result.changed and result.attempts == 1
    stored = seeded.stored()
    assert stored["spec"] == result.after["spec"]
    assert [d["weight"] for d in stored["spec"]["http"][0]["route"]] == [90, 10]
    assert_valid_istio(result.after)


def test_no_write_when_the_transformation_changes_nothing(seeded: Seeded) -> None:
    hook = IstioHook()
    before = seeded.stored()["metadata"]["resourceVersion"]
    result = hook.update_virtual_service(
        VS, seeded.namespace, lambda vs: set_canary_weight(vs, TARGET, 0)
    )
    assert not result.changed
    assert seeded.stored()["metadata"]["resourceVersion"] == before


def test_conflicts_are_bounded_and_leave_the_other_writer_intact(seeded: Seeded) -> None:
    other = IstioHook()
    hook = IstioHook(retry_policy=RetryPolicy(conflict_attempts=3, conflict_backoff_seconds=0.001))
    bumps: list[int] = []

    def racing(vs: dict[str, Any]) -> dict[str, Any]:
        # Another writer lands between every read and replace of ours.
        bumps.append(len(bumps) + 1)
        other.update_virtual_service(
            VS, seeded.namespace, lambda cur: set_canary_weight(cur, TARGET, len(bumps))
        )
        return set_header_route(vs, TARGET, HeaderRoute("x-mine", "yes"))

    with pytest.raises(IstioConflictError, match="3 read-modify-replace attempts"):
        hook.update_virtual_service(VS, seeded.namespace, racing)
    stored = seeded.stored()
    assert [d["weight"] for d in stored["spec"]["http"][0]["route"]] == [97, 3]
    assert all("match" not in r for r in stored["spec"]["http"])


def test_destination_rule_found_by_short_or_fqdn_host(seeded: Seeded) -> None:
    hook = IstioHook()
    for host in ("model-service", f"model-service.{seeded.namespace}.svc.cluster.local"):
        rule = hook.find_destination_rule(host, seeded.namespace)
        assert rule.names == ("model-destination",) and rule.namespace == seeded.namespace
    with pytest.raises(
        IstioNotFoundError,
        match=f"no DestinationRule for host 'other-service' is visible from namespace "
        f"'{seeded.namespace}': searched '{seeded.namespace}', 'istio-system'",
    ):
        hook.find_destination_rule("other-service", seeded.namespace)


def test_unreachable_api_fails_after_bounded_retries_and_writes_nothing(
    seeded: Seeded, tmp_path: Path, monkeypatch: Any
) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    config = yaml.safe_load(Path(seeded.mesh.kubeconfig).read_text())
    for cluster in config["clusters"]:
        cluster["cluster"]["server"] = f"https://127.0.0.1:{closed_port}"
    dead = tmp_path / "dead-kubeconfig"
    dead.write_text(yaml.safe_dump(config))
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEAD_CLUSTER",
        json.dumps({"conn_type": "kubernetes", "extra": {"kube_config_path": str(dead)}}),
    )
    before = seeded.stored()
    hook = IstioHook(kubernetes_conn_id="dead_cluster", retry_policy=_fast())
    with pytest.raises(
        IstioUnavailableError, match=f"127.0.0.1:{closed_port} is unreachable after 3 attempts"
    ):
        hook.update_virtual_service(
            VS, seeded.namespace, lambda vs: set_canary_weight(vs, TARGET, 50)
        )
    assert seeded.stored() == before


def test_apply_object_creates_replaces_and_skips_unchanged(seeded: Seeded) -> None:
    hook = IstioHook()
    deployment = _load(seed_manifest("deployment-model-v1.yaml"))
    deployment["spec"]["replicas"] = 1
    created = hook.apply_object(deployment, namespace=seeded.namespace)
    assert created.changed and created.after["metadata"]["name"] == "model-v1"
    again = hook.apply_object(deployment, namespace=seeded.namespace)
    assert not again.changed
    scaled = hook.scale_deployment("model-v1", seeded.namespace, 0)
    assert (
        scaled.changed
        and hook.get_deployment("model-v1", seeded.namespace)["spec"]["replicas"] == 0
    )
    assert not hook.scale_deployment("model-v1", seeded.namespace, 0).changed
    assert isinstance(hook.list_pods(seeded.namespace, "app=model"), list)
    vs = _load(seed_manifest("vs-02-canary-10.yaml"))
    # kubectl (client-side apply) owns the routes: server-side apply names it rather than clobber
    with pytest.raises(IstioApplyConflictError, match='.spec.http \\(owned by "kubectl-client'):
        hook.apply_object(vs, namespace=seeded.namespace)
    applied = hook.apply_object(vs, namespace=seeded.namespace, force_conflicts=True)
    assert applied.changed and applied.after["spec"] == vs["spec"]
    with pytest.raises(ValueError, match="cannot apply v1 ConfigMap 'x'"):
        hook.apply_object({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}})


def test_async_update_and_rollback(seeded: Seeded) -> None:
    IstioHook().update_virtual_service(
        VS,
        seeded.namespace,
        lambda vs: set_header_route(
            set_canary_weight(vs, TARGET, 50), TARGET, HeaderRoute("x-canary-version", "v2")
        ),
    )

    async def scenario() -> tuple[dict[str, Any], dict[str, Any], dict[str, Any]]:
        hook = AsyncIstioHook()
        read = await hook.aget_virtual_service(VS, seeded.namespace)
        result = await hook.rollback(VS, seeded.namespace, TARGET, reason="error rate")
        again = await hook.rollback(VS, seeded.namespace, TARGET, reason="error rate")
        return read, result, again

    read, result, again = asyncio.run(scenario())
    assert len(read["spec"]["http"]) == 2
    assert result["split"] == {"v1": 100, "v2": 0}
    assert result["header_routes"] == [] and result["changed"] is True
    assert result["rolled_back"] is True and result["reason"] == "error rate"
    assert again["changed"] is False
    stored = seeded.stored()
    assert stored["spec"]["http"] == [
        {"route": [{"destination": {"host": "model-service", "subset": "v1"}, "weight": 100}]}
    ]
