"""Child processes of the local stack that die with their parent, also when it is SIGKILLed."""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable

#: linux/prctl.h
PR_SET_PDEATHSIG = 1


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn`` that makes the child get SIGKILL when the process spawning it dies.

    Linux ``prctl(PR_SET_PDEATHSIG, SIGKILL)`` (prctl(2)): the kernel signals the child when its
    parent exits for any reason, SIGKILL included, which no ``atexit`` or ``finally`` survives.
    The parent's pid is taken before the fork: a parent that died between the fork and the
    ``prctl`` call left the child re-parented already, so the child kills itself at once.
    On other platforms the function does nothing (those children outlive a killed parent).

    The signal follows the *thread* that forked the child (prctl(2)), so spawn long-lived
    children from a thread that lives as long as the parent (the main thread, or the event loop).
    """
    parent = os.getpid()

    def preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0) != 0:
            return  # no death signal: the child behaves as on other platforms
        if os.getppid() != parent:
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec
