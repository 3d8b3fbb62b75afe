"""What crosses the sandbox's seam: the limits a worker runs under, what happened to it, the layers."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

# The layers, outermost first. `doctor()` reports each; `Outcome.layers` lists those a run had.
LAYERS = ("process", "namespaces", "unprivileged-uid", "rlimits", "landlock", "seccomp")

LimitHit = Literal["wall", "cpu", "memory", "file_size", "disk", "seccomp"]


class Limits(BaseModel):
    wall_s: float = 600.0  # the parent kills the whole sandbox after this
    cpu_s: int = 3600  # RLIMIT_CPU: SIGXCPU, then SIGKILL one second later
    memory_mb: int = 4096  # RLIMIT_AS (address space: torch alone maps ~0.7 GB)
    # False: memory_mb caps the worker's resident memory instead, checked twice a second. For
    # a worker on a GPU: CUDA reserves far more address space than it uses, which RLIMIT_AS refuses.
    address_space: bool = True
    file_mb: int = 512  # RLIMIT_FSIZE: the largest file the worker may write
    disk_mb: int = 2048  # the parent kills the worker when its folder grows past this
    max_files: int = 10_000  # ... or holds more entries than this
    tmp_mb: int = 64  # size of the private /tmp and /dev/shm (memory-backed) under bubblewrap
    nofile: int = 256  # RLIMIT_NOFILE
    nproc: int = 512  # RLIMIT_NPROC: tasks (threads count) of the sandbox uid, all sandboxes together
    output_kb: int = 64  # how much of the end of stdout and of stderr is kept


class LayerStatus(BaseModel):
    name: str
    active: bool
    detail: str = ""


class Outcome(BaseModel):
    """What happened to one worker, for the parent and for a reviewer."""

    returncode: int | None  # the worker's exit code; None when it died of a signal
    timed_out: bool = False
    signal: int | None = None  # the signal that ended it
    signal_name: str | None = None
    limit: LimitHit | None = None  # the limit it ran into, when one explains its end
    detail: str = ""  # one sentence: how it ended
    stdout_tail: str = ""
    stderr_tail: str = ""
    stdout_bytes: int = 0  # everything it wrote, of which only the tail is kept
    stderr_bytes: int = 0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    max_rss_mb: float = 0.0
    layers: list[str] = []  # the layers that confined this run
    missing: list[str] = []  # the layers it ran without (see doctor() for why)

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and self.limit is None
