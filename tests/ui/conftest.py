"""Fixtures for the UI tests: real runs of the example rollout DAG and a real Airflow api-server with the plugin."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.fixtures.api_server import ApiServer, running_api_server
from tests.fixtures.example_runs import PromotedRun, RolledBackRun
from tests.fixtures.stack import DagRun, RolloutStack
from tests.ui.dag_grants import GRANTS_ENV

DAG_FILE = Path(__file__).parent / "dags" / "canary_ui_runs.py"
#: user -> (role, password); "nobody" has no role and so may read no DAG; the two readers are
#: viewers limited to one rollout DAG each (``DAG_GRANTS``).
USERS = {
    "admin": ("admin", "admin-pass"),
    "viewer": ("viewer", "viewer-pass"),
    "nobody": ("", "nobody-pass"),
    "rollout-reader": ("viewer", "rollout-reader-pass"),
    "malformed-reader": ("viewer", "malformed-reader-pass"),
}
DAG_GRANTS = {
    "rollout-reader": ["canary_rollout"],
    "malformed-reader": ["canary_ui_malformed"],
}
ARTIFACTS = REPO / "artifacts"


@dataclass(frozen=True)
class UiRuns:
    """The DAG runs the UI tests look at: two real example rollouts and two odd DAGs."""

    healthy: DagRun
    rolled_back: DagRun
    malformed: DagRun
    unrelated: DagRun


@pytest.fixture(scope="session")
def rollout_runs(
    rollout_stack: RolloutStack, promoted_run: PromotedRun, rolled_back_run: RolledBackRun
) -> UiRuns:
    """The session's promoted and rolled-back runs of ``canary_rollout``, and two odd DAGs' runs."""
    rollout_stack.add_dag_file(DAG_FILE)
    # A malformed run ends as it ends; only what the page makes of it matters.
    malformed = rollout_stack.run_dag("canary_ui_malformed")
    unrelated = rollout_stack.run_dag("canary_ui_unrelated")
    return UiRuns(
        healthy=promoted_run.run,
        rolled_back=rolled_back_run.run,
        malformed=malformed,
        unrelated=unrelated,
    )


@pytest.fixture(scope="session")
def api_server(airflow_db: Path, rollout_runs: UiRuns) -> Iterator[ApiServer]:
    """``airflow api-server`` on a free loopback port with simple-auth-manager users, two of
    them limited to one DAG each (``tests.ui.dag_grants``)."""
    # The server runs in AIRFLOW_HOME; it imports the auth manager module from this folder
    # alone (the repository root would register the provider's plugin a second time through
    # its egg-info).
    here = str(Path(__file__).parent)
    env = {
        "AIRFLOW__CORE__AUTH_MANAGER": "dag_grants.DagGrantsAuthManager",
        GRANTS_ENV: json.dumps(DAG_GRANTS),
        "PYTHONPATH": os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p),
    }
    with running_api_server(airflow_db, USERS, ARTIFACTS / "ui-api-server.log", env=env) as server:
        yield server
