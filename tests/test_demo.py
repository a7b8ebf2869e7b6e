"""``make demo``'s reading of a DAG run's log: the shadow phase's and each step's final verdict, in order."""

from __future__ import annotations

import pytest

from airflow_canary.demo import ROLLED_BACK_LINE, last_verdict, print_verdicts, verdicts_in

SUFFIX = (
    " [airflow.task.operators.airflow_canary.sensors.shadow.ShadowAnalysisSensor] loc=shadow.py:213"
)
PAIRING = (
    "372 pair(s) of 6,261 v1 and 382 v2 record(s); 484 stable record(s) without a canary answer"
)
LOG = f"""\
2026-12-01T03:23:30Z [info     ] Shadow analysis INCONCLUSIVE: judging for 20 s: v2 disagrees with v1 on 0% of 0 paired requests (limit 2%); e-value 1 below 400 (0 pair(s) of 10 v1 and 0 v2 record(s)){SUFFIX}
2026-12-01T03:23:34Z [info     ] Shadow analysis PASS: v2 disagrees with v1 on 0% of 2,000 paired requests (limit 2%); e-value 0.02 below 400 ({PAIRING}){SUFFIX}
2026-12-01T03:24:10Z [info     ] Canary v2 vs v1 in default: PASS after 6 polls - error rate: canary 0.0% (0/300) vs stable 0.0% (0/1,200); e-value 0.1, no evidence against the canary [airflow.task.operators.x] loc=health.py:297
"""
FAIL_LOG = f"""\
2026-12-01T03:23:34Z [info     ] Shadow analysis FAIL: v2 disagrees with v1 on 46.8% of 372 paired requests (limit 2%); e-value 2.01e+174 >= 400 ({PAIRING}){SUFFIX}
2026-12-01T03:23:34Z [error    ] prediction-agreement: request 4ff09c80: v1 {{'class': 0}}, v2 {{'class': 1}}{SUFFIX}
"""


def test_final_verdicts_are_read_in_order_and_a_shadow_poll_still_judging_is_not_one() -> None:
    assert verdicts_in(LOG) == [
        (
            "shadow",
            "PASS: v2 disagrees with v1 on 0% of 2,000 paired requests (limit 2%); "
            f"e-value 0.02 below 400 ({PAIRING})",
        ),
        (
            "step",
            "PASS: error rate: canary 0.0% (0/300) vs stable 0.0% (0/1,200); e-value 0.1, "
            "no evidence against the canary",
        ),
    ]


def test_the_live_table_names_the_phase_its_last_verdict_belongs_to() -> None:
    """Rows of step 2 show step 1's verdict: the column says whose it is."""
    verdicts = verdicts_in(LOG)
    assert [last_verdict(verdicts[:n]) for n in range(3)] == [
        "",
        "shadow phase PASS",
        "step 1 PASS",
    ]
    assert last_verdict([("step", "PASS: a"), ("step", "FAIL: b")]) == "step 2 FAIL"


def test_a_shadow_fail_is_printed_with_its_records_and_example_pairs(
    capsys: pytest.CaptureFixture[str],
) -> None:
    print_verdicts(verdicts_in(FAIL_LOG), FAIL_LOG)
    assert capsys.readouterr().out.splitlines() == [
        "",
        "demo: verdicts, step by step:",
        "  shadow phase: FAIL",
        "      v2 disagrees with v1 on 46.8% of 372 paired requests (limit 2%)",
        "      e-value 2.01e+174 >= 400",
        f"      records: {PAIRING}",
        "      e.g. request 4ff09c80: v1 {'class': 0}, v2 {'class': 1}",
    ]


@pytest.mark.parametrize(
    "reason",
    [
        "Canary rolled back to stable: canary.step_2.analyze: health analysis FAIL: error rate",
        "Canary rollout failed before any traffic moved: canary.plan: no VirtualService",
        "Canary stopped before it served any live request (mirror removed): "
        "canary.shadow.analyze: shadow analysis FAIL: v2 disagrees with v1",
    ],
)
def test_every_way_fail_rollout_ends_a_run_is_read_from_the_log(reason: str) -> None:
    """The reason fail_rollout raises (rollout/operators.py) is the demo's last word on a run."""
    log = f"{FAIL_LOG}airflow.sdk.exceptions.AirflowFailException: {reason}\n"
    found = ROLLED_BACK_LINE.search(log)
    assert found is not None and found["reason"] == reason
