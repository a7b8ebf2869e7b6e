"""A SIGKILLed owner of the local stack leaves no process behind: mesh, model servers, Prometheus, load."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import psutil
import pytest

from airflow_canary.local.tools.stack import prometheus_available

#: Runs a whole LocalStack, then prints the pid of every process below it and waits to be killed.
OWNER = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    import psutil
    from airflow_canary.local.tools.stack import LocalStack, StackConfig

    stack = LocalStack(StackConfig(state_dir=Path(sys.argv[1]), rps=20))
    stack.start()
    tree = psutil.Process().children(recursive=True)
    print(json.dumps({p.pid: " ".join(p.cmdline()) for p in tree}), flush=True)
    time.sleep(3600)
    """
)


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_no_part_of_the_stack_outlives_its_sigkilled_owner(tmp_path: Path) -> None:
    if not prometheus_available():
        pytest.fail("the Debian prometheus package is required: apt-get install prometheus")
    owner = subprocess.Popen(
        [sys.executable, "-c", OWNER, str(tmp_path / "stack")],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ},
    )
    parts: dict[int, str] = {}
    try:
        assert owner.stdout is not None
        line = owner.stdout.readline()
        assert line, "the stack did not start"
        parts = {int(pid): cmd for pid, cmd in json.loads(line).items()}
        # Every kind of part is there: otherwise the test would prove nothing about it.
        for part in ("mesh", "serve-model", "prometheus", "loadgen"):
            assert any(part in cmd for cmd in parts.values()), (part, parts)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(pid) for pid in parts) and time.monotonic() < deadline:
            time.sleep(0.2)
        survivors = {pid: cmd for pid, cmd in parts.items() if _alive(pid)}
        assert survivors == {}
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        # A failing run must not leave the stack running on the shared machine.
        for pid in parts:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)
