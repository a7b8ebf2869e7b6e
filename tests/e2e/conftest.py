"""End-to-end fixtures: the session's local stack (tests/fixtures/stack.py) with the e2e DAGs added."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.fixtures.stack import DagRun, RolloutStack

#: the name the e2e tests know the running stack by
E2E = RolloutStack

__all__ = ["E2E", "DagRun"]


@pytest.fixture(scope="module")
def e2e(rollout_stack: RolloutStack) -> RolloutStack:
    rollout_stack.add_dag_file(Path(__file__).parent / "dags" / "canary_e2e_crash.py")
    return rollout_stack
