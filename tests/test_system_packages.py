"""``scripts/system-packages.sh``, which ``make test``, ``make demo`` and ``make ui`` run first."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "scripts" / "system-packages.sh"


def _run(path: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), *args],
        env={**os.environ, "PATH": path},
        capture_output=True,
        text=True,
        timeout=60,
    )


def _path_with(tmp_path: Path, *programs: str) -> str:
    """A PATH holding only ``programs`` (linked from this machine), so the rest look missing."""
    for program in programs:
        found = shutil.which(program)
        if found is None:
            pytest.fail(f"{program} is not installed here")
        (tmp_path / program).symlink_to(found)
    return str(tmp_path)


def test_present_programs_need_nothing(tmp_path: Path) -> None:
    path = _path_with(tmp_path, "id", "prometheus", "chromium", "chromedriver")
    result = _run(path, "prometheus", "chromium")
    assert result.returncode == 0, result.stderr
    assert result.stdout == result.stderr == ""


def test_missing_programs_without_apt_stop_with_the_command_to_run(tmp_path: Path) -> None:
    # No apt-get on PATH: the script cannot install, so it must stop at once and say how.
    result = _run(_path_with(tmp_path, "id"), "prometheus", "chromium")
    assert result.returncode == 1
    assert "apt-get install -y prometheus chromium" in result.stderr
    assert "chromedriver" in result.stderr or "chromium-driver" in result.stderr


def test_unknown_names_are_refused(tmp_path: Path) -> None:
    result = _run(_path_with(tmp_path, "id"), "firefox")
    assert result.returncode == 2
    assert "usage" in result.stderr
