"""What ``pip install airflow-provider-canary`` brings, and what only the ``local`` extra brings."""

from __future__ import annotations

import subprocess
import sys
from importlib.metadata import metadata, requires, version

import pytest
from packaging.requirements import Requirement

import airflow_canary
from airflow_canary.local import LOCAL_EXTRA_MODULES

DIST = "airflow-provider-canary"


def _requirements() -> list[Requirement]:
    return [Requirement(text) for text in requires(DIST) or []]


def _runtime() -> dict[str, Requirement]:
    return {
        r.name.lower(): r
        for r in _requirements()
        if r.marker is None or "extra" not in str(r.marker)
    }


def test_runtime_dependencies_leave_out_the_local_mesh() -> None:
    runtime = _runtime()
    for dist in [*LOCAL_EXTRA_MODULES.values(), "uvloop", "jsonschema"]:
        assert dist not in runtime, f"{dist} is a runtime dependency: {runtime[dist]}"
    local = {
        r.name.lower()
        for r in _requirements()
        if r.marker is not None and r.marker.evaluate({"extra": "local"})
    }
    assert set(LOCAL_EXTRA_MODULES.values()) <= local


@pytest.mark.parametrize(
    ("dist", "minimum"),
    [("apache-airflow", "3.2"), ("apache-airflow-providers-cncf-kubernetes", "10.3")],
)
def test_minimum_versions(dist: str, minimum: str) -> None:
    specifier = _runtime()[dist].specifier
    assert not specifier.contains(_below(minimum)), f"{dist}{specifier} admits {_below(minimum)}"
    assert specifier.contains(minimum)


def _below(minimum: str) -> str:
    major, minor = (int(part) for part in minimum.split("."))
    return f"{major}.{minor - 1}.99"


def test_version_and_license_come_from_the_package_metadata() -> None:
    assert airflow_canary.__version__ == version(DIST)
    assert metadata(DIST)["License-Expression"] == "Apache-2.0"


def test_importing_the_local_mesh_without_its_extra_names_the_extra() -> None:
    # A fresh interpreter where scikit-learn cannot be imported, as after a plain install.
    code = (
        "import sys, importlib.abc\n"
        "class Block(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'sklearn':\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import airflow_canary.local\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert "pip install 'airflow-provider-canary[local]'" in result.stderr
    assert "missing: scikit-learn" in result.stderr
