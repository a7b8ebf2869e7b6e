"""The fault suite's outcome table: one row per fault test, from ``artifacts/fault-outcomes.jsonl``.

Each fault test of ``tests/faults/`` appends one row (``tests/faults/outcomes.py``): the fault,
when in the rollout it was injected, the verdict the rollout reached, the final traffic split,
the seconds from the fault to a safe state (all traffic on one version, or the run finished)
and whether any record was lost. With several rows for one fault (repeated runs), the latest
is shown.

Usage: ``.venv/bin/python benchmarks/faults.py`` prints the table of the last run;
``--run`` first runs the suite (``CI=true pytest tests/faults``, a fresh outcome file) and
prints its table and wall time; ``--file PATH`` reads another outcome file.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
OUTCOMES = REPO / "artifacts" / "fault-outcomes.jsonl"
COLUMNS = ("fault", "injected at", "verdict", "final split", "time to safe state", "nothing lost")


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The outcome rows of ``path``, latest per fault, in the order faults were first recorded."""
    latest: dict[str, dict[str, Any]] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            raise SystemExit(f"{path}:{number}: not a JSON line: {err}") from None
        latest[str(row["fault"])] = row
    return list(latest.values())


def format_split(split: Mapping[str, int]) -> str:
    """``{"v1": 100, "v2": 0}`` -> ``v1 100 / v2 0``; an empty split is ``-``."""
    return " / ".join(f"{name} {weight}" for name, weight in sorted(split.items())) or "-"


def table(rows: Sequence[Mapping[str, Any]]) -> str:
    """A Markdown table with ``COLUMNS``, one line per row."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    for row in rows:
        seconds = row.get("seconds_to_safe")
        lost = bool(row.get("records_lost"))
        cells = (
            str(row["fault"]),
            str(row.get("injected_at", "")),
            str(row.get("verdict", "")),
            format_split(row.get("final_split") or {}),
            "never" if seconds is None else f"{float(seconds):.1f} s",
            "no: records lost" if lost else "yes",
        )
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def run_suite(path: Path, pytest_args: Sequence[str]) -> tuple[int, float]:
    """Run ``tests/faults`` with ``CI=true`` into a fresh ``path``; (pytest's exit code, seconds)."""
    if path.exists():
        path.unlink()
    started = time.monotonic()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "tests/faults", *pytest_args],
        cwd=REPO,
        env={**os.environ, "CI": "true", "PYTHONPATH": str(REPO)},
        check=False,
    )
    return done.returncode, time.monotonic() - started


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--run", action="store_true", help="run tests/faults first (CI=true)")
    parser.add_argument("--file", type=Path, default=OUTCOMES, help="the outcome file to read")
    parser.add_argument("pytest_args", nargs="*", help="more pytest arguments, with --run")
    args = parser.parse_args(argv)
    code = 0
    if args.run:
        code, seconds = run_suite(args.file, args.pytest_args)
        print(f"tests/faults: pytest exit code {code}, wall time {seconds:.0f} s")
    if not args.file.is_file():
        print(f"no outcomes in {args.file}: run `python benchmarks/faults.py --run`")
        return 1
    rows = read_rows(args.file)
    print(table(rows))
    unsafe = [r["fault"] for r in rows if r.get("seconds_to_safe") is None or r.get("records_lost")]
    if unsafe:
        print(f"not safe or lost records: {', '.join(map(str, unsafe))}")
    return code or (1 if unsafe else 0)


if __name__ == "__main__":
    sys.exit(main())
