"""The deployment fixture itself: real components run a rollout the way a deployment does."""

from __future__ import annotations

import pytest

from tests.faults.conftest import Rollout, slow

#: a whole rollout on real Airflow, and the first test also starts the stack and the deployment
pytestmark = pytest.mark.timeout(1800)


@slow
def test_a_healthy_rollout_is_promoted_by_the_real_components(healthy_baseline: Rollout) -> None:
    """Scheduler, LocalExecutor workers, triggerer and dag-processor, no ``dags test``."""
    run = healthy_baseline
    assert run.state == "success", run.tasks
    assert run.tasks["canary.promote"] == "success"
    assert run.tasks["canary.rollback"] == "skipped"
    # the shadow phase passed in its worker, every judged step in the triggerer, and traffic
    # went only forward
    assert {t: v["verdict"] for t, v in run.verdicts.items()} == {
        "canary.shadow.analyze": "PASS",
        **{f"canary.step_{n}.analyze": "PASS" for n in (1, 2, 3)},
    }
    assert run.canary_weights == [0, 20, 40, 60, 100]
    assert run.missing_records()[0] == []
