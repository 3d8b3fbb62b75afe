"""Which layers are active here, and the worker's side: ``confine_self()``, ``confine_forked()``.

A missing layer is never a silent downgrade: it is logged once per process,
listed in every ``Outcome.missing``, and with ``require=True`` the sandbox
refuses to run instead.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass, field

from . import landlock, namespaces, seccomp
from .environment import REQUIRE, STATUS_FD
from .models import LAYERS, LayerStatus

log = logging.getLogger("reward_designer.sandbox")


WORKER_APPLIED = ("landlock", "seccomp")


class SandboxUnavailable(RuntimeError):
    """A layer the caller required is missing on this machine."""


@dataclass
class Plan:
    statuses: list[LayerStatus]
    bwrap: bool
    warned: bool = field(default=False)

    @property
    def active(self) -> list[str]:
        # The worker applies these itself; they count once it reports them.
        return [s.name for s in self.statuses if s.active and s.name not in WORKER_APPLIED]

    @property
    def missing(self) -> list[LayerStatus]:
        return [s for s in self.statuses if not s.active]

    def missing_text(self) -> str:
        return "; ".join(f"{s.name}: {s.detail}" for s in self.missing)

    def warn_once(self) -> None:
        """Log the missing layers, once per process; a caller that has told the user itself sets ``warned``.
        (No flag is named: the commands that print this differ in the flags they have.)"""
        if self.missing and not self.warned:
            self.warned = True
            log.warning("warning: sandbox layers missing (untrusted reward code runs less confined): %s",
                        self.missing_text())


# Set to 1, the sandbox runs as on a machine without bubblewrap (the suite's no-bubblewrap part uses
# it): it can only take the namespace layer away, and doctor() then says it is missing and why.
NO_BWRAP = "RD_SANDBOX_NO_BWRAP"


@functools.lru_cache(maxsize=1)
def plan_layers() -> Plan:
    if os.environ.get(NO_BWRAP) == "1":
        problem = f"bubblewrap is not used: {NO_BWRAP}=1 is set"
    else:
        problem = namespaces.bwrap_problem()
    bwrap = problem is None
    root = namespaces.is_root()
    statuses = [LayerStatus(
        name="process", active=True,
        detail="allow-listed environment (no API keys), stdin closed, output capped to a tail, "
               "own run folder, wall-clock deadline kills the whole process group",
    )]
    if bwrap:
        version = subprocess.run([namespaces.bwrap_path(), "--version"], capture_output=True, text=True).stdout.strip()
        statuses.append(LayerStatus(
            name="namespaces", active=True,
            detail=f"{version or 'bubblewrap'}: no network, read-only system and Python, only the run "
                   "folder writable, private /tmp, own PID namespace; home, project checkout, task cards "
                   "and other runs hidden",
        ))
    else:
        statuses.append(LayerStatus(name="namespaces", active=False, detail=problem))

    if bwrap and namespaces.uid_drop_possible():
        how = "setpriv (bubblewrap started as root)" if root else "a user namespace"
        statuses.append(LayerStatus(name="unprivileged-uid", active=True, detail=f"uid/gid 65534 via {how}"))
    elif bwrap:
        statuses.append(LayerStatus(
            name="unprivileged-uid", active=False,
            detail="setpriv (util-linux) not found: uid 65534 in the sandbox maps back to root"))
    else:
        who = "root" if root else f"uid {os.getuid()}"
        statuses.append(LayerStatus(
            name="unprivileged-uid", active=False,
            detail=f"without bubblewrap the worker runs as the parent's user ({who})"))

    nproc = "processes (NPROC)" if bwrap and namespaces.uid_drop_possible() else "NPROC has no effect for this uid"
    statuses.append(LayerStatus(
        name="rlimits", active=True,
        detail=f"address space, CPU time, file size, open files, no core dumps; {nproc}"))

    abi = landlock.abi_version()
    statuses.append(LayerStatus(
        name="landlock", active=abi > 0,
        detail=f"Landlock ABI {abi}: reads only the system and Python trees and its inputs, writes only its "
               "own folder; task cards and other processes' /proc files refused" if abi > 0 else
               "this kernel has no Landlock (Linux 5.13+, enabled in the LSM list)"))
    ok, detail = seccomp.available()
    statuses.append(LayerStatus(name="seccomp", active=ok, detail=detail))
    assert [s.name for s in statuses] == list(LAYERS)
    return Plan(statuses=statuses, bwrap=bwrap)


def doctor() -> list[LayerStatus]:
    """Each layer, whether it is active on this machine, and why one is missing."""
    return [s.model_copy() for s in plan_layers().statuses]


def _apply(layer: str, apply, require: bool | None, who: str = "") -> bool:
    """``apply()`` a layer to this process: True if applied. Missing, it is a warning, or
    SandboxUnavailable when required (``require`` None: what ``run_worker`` was asked)."""
    if require is None:
        require = os.environ.get(REQUIRE) == "1"
    try:
        apply()
        return True
    except Exception as e:  # noqa: BLE001 - ImportError, OSError from the kernel or libseccomp, ...
        if require:
            raise SandboxUnavailable(f"{layer} could not be applied: {e}") from e
        print(f"reward_designer.sandbox: warning: {layer} not applied{who} ({e})", file=sys.stderr)
        return False


def _landlock_from_parent() -> None:
    spec = os.environ.pop(landlock.FS_RULES, None)
    if spec is None:
        raise OSError("the parent passed no rules")
    landlock.restrict(spec)


def confine_self(require: bool | None = None) -> list[str]:
    """Called by a worker after its imports, before it loads untrusted code.

    Applies the Landlock rules and the seccomp filter, and tells the parent (over a pipe it then
    closes) which layers it applied. ``require`` (default: what the parent's
    ``run_worker`` was asked) raises instead of running on unconfined.
    """
    applied = ["landlock"] if _apply("Landlock", _landlock_from_parent, require) else []
    applied += ["seccomp"] if _apply("seccomp", seccomp.apply_filter, require) else []
    fd = os.environ.pop(STATUS_FD, None)
    if fd is not None:
        try:
            os.write(int(fd), json.dumps({"confined": applied}).encode())
            os.close(int(fd))
        except (OSError, ValueError):
            pass
    return applied


def confine_forked() -> None:
    """For a twin the worker forked before ``confine_self`` (the simulator's, the learner's):
    the same seccomp filter, and not dumpable, so the worker, once it runs
    untrusted code, cannot write into the helper through /proc/PID/mem."""
    import ctypes

    fd = os.environ.get(STATUS_FD)
    if fd is not None:  # the worker's status pipe is the worker's to close, not ours to hold open
        try:
            os.close(int(fd))
        except (OSError, ValueError):
            pass
    pr_set_dumpable = 4
    ctypes.CDLL(None).prctl(pr_set_dumpable, 0)
    _apply("seccomp", seccomp.apply_filter, None, " to a helper")
