"""``benchmarks/faults.py`` prints the fault suite's outcomes as recorded, latest per fault."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.faults.outcomes import Outcome, record

REPO = Path(__file__).resolve().parents[2]


def _print_table(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "faults.py"), "--file", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_table_has_one_row_per_fault_with_the_latest_outcome(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    common = {"records_checked": "run state", "records_lost": False}
    record(Outcome("prometheus killed", "step 1", "FAIL", {"v1": 0}, None, **common), path)
    record(
        Outcome("prometheus killed", "step 2 bake", "PASS", {"v1": 0, "v2": 100}, 12.34, **common),
        path,
    )
    record(Outcome("api 30% errors", "step 1", "FAIL", {"v1": 100, "v2": 0}, 3.0, **common), path)
    done = _print_table(path)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        "| fault | injected at | verdict | final split | time to safe state | nothing lost |",
        "| --- | --- | --- | --- | --- | --- |",
        "| prometheus killed | step 2 bake | PASS | v1 0 / v2 100 | 12.3 s | yes |",
        "| api 30% errors | step 1 | FAIL | v1 100 / v2 0 | 3.0 s | yes |",
    ]


def test_an_unsafe_or_lossy_outcome_is_named_and_fails_the_command(tmp_path: Path) -> None:
    path = tmp_path / "outcomes.jsonl"
    record(Outcome("mesh restart", "step 1", "-", {"v1": 80, "v2": 20}, None, True, "xcom"), path)
    done = _print_table(path)
    assert done.returncode == 1
    assert "| mesh restart | step 1 | - | v1 80 / v2 20 | never | no: records lost |" in done.stdout
    assert "not safe or lost records: mesh restart" in done.stdout
