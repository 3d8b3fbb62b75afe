"""The isolation layer that runs untrusted reward code (minimal seam; hardened in sandbox/ modules)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

from pydantic import BaseModel


class Limits(BaseModel):
    wall_s: float = 600.0
    cpu_s: int = 3600
    memory_mb: int = 4096
    file_mb: int = 512
    nofile: int = 256
    nproc: int = 64
    output_kb: int = 64


class Outcome(BaseModel):
    returncode: int | None
    timed_out: bool = False
    signal: int | None = None
    stdout_tail: str = ""
    stderr_tail: str = ""
    wall_s: float = 0.0
    layers: list[str] = []


def run_worker(
    job_file: Path,
    workdir: Path,
    limits: Limits | None = None,
    poll: Callable[[], None] | None = None,
    require: bool = False,
) -> Outcome:
    limits = limits or Limits()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "reward_designer.worker", str(job_file)],
        cwd=workdir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        start_new_session=True,
    )
    timed_out = False
    while proc.poll() is None:
        if poll:
            poll()
        if time.monotonic() - t0 > limits.wall_s:
            os.killpg(proc.pid, signal.SIGKILL)
            timed_out = True
            break
        time.sleep(0.1)
    out, err = proc.communicate()
    rc = proc.returncode
    return Outcome(
        returncode=rc, timed_out=timed_out, signal=-rc if rc is not None and rc < 0 else None,
        stdout_tail=out[-limits.output_kb * 1024:].decode(errors="replace"),
        stderr_tail=err[-limits.output_kb * 1024:].decode(errors="replace"),
        wall_s=time.monotonic() - t0, layers=["process"],
    )


def confine_self() -> list[str]:
    """Called by the worker after its imports, before it loads untrusted code."""
    return []
