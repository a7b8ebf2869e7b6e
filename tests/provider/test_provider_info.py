"""The provider info Airflow reads: valid against Airflow's own schema, and complete."""

from __future__ import annotations

import importlib
import json
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_canary import get_provider_info

PACKAGE = Path(__file__).resolve().parents[2] / "airflow_canary"


def _info() -> dict:
    return get_provider_info()


def test_provider_info_is_valid_against_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(_info(), schema)


def _listed_modules(section: str) -> set[str]:
    return {m for entry in _info()[section] for m in entry["python-modules"]}


@pytest.mark.parametrize(
    ("section", "folders"),
    [
        ("operators", ["operators", "rollout"]),
        ("sensors", ["sensors"]),
        ("triggers", ["triggers"]),
        ("hooks", ["hooks"]),
    ],
)
def test_every_module_with_such_classes_is_listed(section: str, folders: list[str]) -> None:
    base = {"operators": "BaseOperator", "sensors": "BaseSensorOperator"}.get(section)
    suffix = {"triggers": "BaseTrigger", "hooks": "BaseHook"}.get(section, base)
    found = set()
    for folder in folders:
        for path in sorted((PACKAGE / folder).glob("*.py")):
            if path.name == "__init__.py":
                continue
            module = importlib.import_module(f"airflow_canary.{folder}.{path.stem}")
            names = [
                obj
                for obj in vars(module).values()
                if isinstance(obj, type)
                and obj.__module__ == module.__name__
                and any(b.__name__ == suffix for b in obj.__mro__[1:])
                and not (section == "operators" and issubclass_named(obj, "BaseSensorOperator"))
            ]
            if names:
                found.add(module.__name__)
    assert found <= _listed_modules(section), found - _listed_modules(section)


def issubclass_named(cls: type, name: str) -> bool:
    return any(b.__name__ == name for b in cls.__mro__)


def test_every_named_class_and_handler_imports() -> None:
    info = _info()
    dotted = [
        *info["extra-links"],
        *info["notifications"],
        *(entry["plugin-class"] for entry in info["plugins"]),
        *(entry["handler"] for entry in info["asset-uris"]),
        *(entry["hook-class-name"] for entry in info["connection-types"]),
    ]
    for path in dotted:
        module, _, name = path.rpartition(".")
        assert hasattr(importlib.import_module(module), name), path
    for section in ("operators", "sensors", "triggers", "hooks"):
        for module in _listed_modules(section):
            importlib.import_module(module)


def test_connection_type_names_its_hook_for_the_ui() -> None:
    from airflow_canary.hooks.prometheus import PrometheusHook

    (conn,) = _info()["connection-types"]
    assert (conn["connection-type"], conn["hook-name"]) == (
        PrometheusHook.conn_type,
        PrometheusHook.hook_name,
    )


def test_every_integration_named_by_a_section_is_declared() -> None:
    info = _info()
    declared = {i["integration-name"] for i in info["integrations"]}
    for section in ("operators", "sensors", "triggers", "hooks"):
        for entry in info[section]:
            assert entry["integration-name"] in declared, (section, entry)
