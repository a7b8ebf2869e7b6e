"""Test session setup: an isolated AIRFLOW_HOME (set before Airflow is imported) and shared fixtures."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SHARED = Path(os.environ.get("CANARY_SHARED_DIR", REPO.parent / "shared"))

_home = tempfile.mkdtemp(prefix="airflow-canary-tests-")
os.environ["AIRFLOW_HOME"] = _home
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(Path(_home) / "dags")
os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{_home}/airflow.db"
os.environ.setdefault("AIRFLOW__CORE__UNIT_TEST_MODE", "False")

pytest_plugins = [
    "tests.fixtures.airflow_env",
    "tests.fixtures.mesh",
    "tests.fixtures.prometheus",
    "tests.fixtures.stack",
]
