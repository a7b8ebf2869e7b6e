"""Field ownership as structured-merge-diff computes it: apply merge, conflicts, removal, updates."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_canary.local.apiserver.managed_fields import (
    ApplyConflict,
    Manager,
    apply,
    fields_v1,
    paths_of,
    read_managers,
    record_update,
    write_managers,
)


def _deployment(**spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": "web", "labels": {"app": "web"}},
        "spec": {
            "template": {
                "spec": {"containers": [{"name": "web", "image": "web:1", "args": ["--a"]}]}
            },
            **spec,
        },
    }


def _applied(live: dict[str, Any] | None, config: dict[str, Any], manager: str, **kw: Any) -> Any:
    merged, managers = apply(
        live, config, manager, "apps/v1", builtin=True, force=kw.get("force", False)
    )
    write_managers(merged, managers, [], set(managers))
    return merged


def test_fields_v1_round_trip_with_keyed_and_atomic_lists() -> None:
    merged = _applied(None, _deployment(replicas=2), "a")
    (entry,) = merged["metadata"]["managedFields"]
    containers = entry["fieldsV1"]["f:spec"]["f:template"]["f:spec"]["f:containers"]
    # containers merge by name; args is atomic (one leaf)
    assert containers == {'k:{"name":"web"}': {".": {}, "f:args": {}, "f:image": {}, "f:name": {}}}
    assert paths_of(fields_v1(paths_of(entry["fieldsV1"]))) == paths_of(entry["fieldsV1"])


def test_a_second_applier_conflicts_only_on_values_it_changes() -> None:
    live = _applied(None, _deployment(replicas=2), "a")
    same = _applied(live, _deployment(replicas=2), "b")  # same value: shared ownership
    owners = {
        m.name for m, (_, paths) in read_managers(same).items() if ("f:spec", "f:replicas") in paths
    }
    assert owners == {"a", "b"}
    with pytest.raises(ApplyConflict) as err:
        apply(same, _deployment(replicas=3), "b", "apps/v1", builtin=True, force=False)
    assert err.value.conflicts == [("a", "apps/v1", ".spec.replicas")]
    forced = _applied(same, _deployment(replicas=3), "b", force=True)
    assert forced["spec"]["replicas"] == 3
    owners = {
        m.name
        for m, (_, paths) in read_managers(forced).items()
        if ("f:spec", "f:replicas") in paths
    }
    assert owners == {"b"}


def test_dropping_a_field_removes_it_unless_someone_else_owns_it() -> None:
    live = _applied(None, _deployment(replicas=2, minReadySeconds=5), "a")
    scaled = dict(live, spec={**live["spec"], "replicas": 4})
    managers, changed = record_update(
        live, scaled, Manager("hpa", "Update", "scale"), "apps/v1", builtin=True
    )
    assert changed
    write_managers(
        scaled, managers, live["metadata"]["managedFields"], {Manager("hpa", "Update", "scale")}
    )
    after = _applied(scaled, _deployment(), "a")
    assert after["spec"]["replicas"] == 4  # the scaler owns it now
    assert "minReadySeconds" not in after["spec"]  # only "a" owned it


def test_an_update_that_changes_nothing_records_nothing() -> None:
    live = _applied(None, _deployment(replicas=2), "a")
    managers, changed = record_update(live, live, Manager("x", "Update"), "apps/v1", builtin=True)
    assert not changed and managers == read_managers(live)
