"""The repository stands alone: a clone with nothing beside it collects every test.

A file outside the repository that a test, fixture or module reads at import time (a sibling
``shared/`` folder, say) makes collection fail here, so such a dependency fails CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

# Names of folders beside the repository that only its own CI has.
OUTSIDE_REFERENCES = ("../shared", "CANARY_SHARED_DIR")
# CI's entry point may point the CRD variables at them; this file names them to look for them.
MAY_REFER = {".ci/run", "tests/test_plain_clone.py"}


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout


@pytest.fixture(scope="module")
def clone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("git") is None or not (REPO / ".git").exists():
        pytest.skip("not a git checkout: nothing to clone")
    target = tmp_path_factory.mktemp("plain-clone") / "airflow-provider-canary"
    _git("clone", "--quiet", "--no-hardlinks", str(REPO), str(target), cwd=REPO)
    assert not (target.parent / "shared").exists()
    return target


def test_a_plain_clone_collects_every_test(clone: Path) -> None:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CANARY_", "AIRFLOW", "PYTEST_"))
    }
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    collected = [line for line in result.stdout.splitlines() if "::" in line]
    assert any(line.startswith("tests/routing/") for line in collected)
    assert any(line.startswith("tests/e2e/") for line in collected)


def test_no_tracked_file_refers_outside_the_repository(clone: Path) -> None:
    offenders = []
    for name in _git("ls-files", cwd=clone).splitlines():
        path = clone / name
        if name in MAY_REFER or path.suffix not in (".py", ".toml", ".cfg", ".sh", ".yaml", ""):
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except (UnicodeDecodeError, IsADirectoryError):
            continue
        offenders += [f"{name}: {ref}" for ref in OUTSIDE_REFERENCES if ref in text]
    assert offenders == []
