"""Resource limits, set in the child between fork and exec (inherited through bubblewrap)."""

from __future__ import annotations

import ctypes
import resource
import signal

from .models import Limits

_PR_SET_PDEATHSIG = 1
_MB = 1024 * 1024


def rlimits(limits: Limits) -> dict[int, tuple[int, int]]:
    table = {resource.RLIMIT_AS: (limits.memory_mb * _MB,) * 2} if limits.address_space else {}
    return table | {
        # SIGXCPU at the soft limit, which a program may catch; SIGKILL a second later.
        resource.RLIMIT_CPU: (limits.cpu_s, limits.cpu_s + 1),
        resource.RLIMIT_FSIZE: (limits.file_mb * _MB,) * 2,
        resource.RLIMIT_NOFILE: (limits.nofile,) * 2,
        resource.RLIMIT_CORE: (0, 0),
        # Counts the tasks of the sandbox's real uid; ignored for root, so it
        # only bites where the worker runs as 65534 (see namespaces.py).
        resource.RLIMIT_NPROC: (limits.nproc,) * 2,
    }


def child_setup(limits: Limits):
    """A preexec_fn: apply the limits, and die with the parent instead of outliving it."""
    table = rlimits(limits)
    libc = ctypes.CDLL(None, use_errno=True)

    def setup() -> None:
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        for res, (soft, hard) in table.items():
            resource.setrlimit(res, (soft, hard))

    return setup
