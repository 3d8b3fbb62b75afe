"""Running a worker: the parent side of the sandbox.

The parent builds the command (bubblewrap prefix where it works), a clean
environment and the resource limits; reads stdout and stderr in threads,
keeping only a bounded tail; watches the wall clock and the run folder's size;
and kills the whole sandbox (its process group, and with it bubblewrap's PID
namespace) when a limit is crossed. Afterwards it removes from the run folder
what the worker could use to fool the parent's own file operations (symbolic
links, FIFOs, hard links), and says how the worker ended.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Callable, Iterable, Mapping

from . import landlock, namespaces
from .environment import REQUIRE, STATUS_FD, worker_env
from .layers import SandboxUnavailable, plan_layers
from .models import LAYERS, Limits, Outcome
from .rlimits import child_setup

WORKER_MODULE = "reward_designer.worker"
_POLL_S = 0.05
_CHECK_S = 0.5


class _Tail(threading.Thread):
    """Drains a pipe, keeping the last ``keep`` bytes: a flood costs neither memory nor disk."""

    def __init__(self, pipe, keep: int):
        super().__init__(daemon=True)
        self.pipe, self.keep, self.total = pipe, keep, 0
        self.chunks: collections.deque[bytes] = collections.deque()
        self.kept = 0

    def run(self) -> None:
        while chunk := self.pipe.read1(65536):
            self.total += len(chunk)
            self.chunks.append(chunk)
            self.kept += len(chunk)
            while self.kept - len(self.chunks[0]) >= self.keep:
                self.kept -= len(self.chunks.popleft())
        self.pipe.close()

    def text(self) -> str:
        data = b"".join(self.chunks)[-self.keep:] if self.keep else b""
        return data.decode("utf-8", errors="replace").replace("\x00", "")


def _entries(root: Path):
    """``(path, lstat)`` of everything under ``root``, a folder before what it holds, without following
    links and without recursion: a worker can leave a tree deeper than Python's recursion limit
    (os.walk and shutil.rmtree recurse in 3.11). What cannot be read, or is past PATH_MAX, is skipped."""
    stack = [str(root)]
    while stack:
        try:
            with os.scandir(stack.pop()) as it:
                for e in it:
                    try:
                        st = e.stat(follow_symlinks=False)
                    except OSError:
                        continue
                    yield e.path, st
                    if stat.S_ISDIR(st.st_mode):
                        stack.append(e.path)
        except OSError:
            continue


def _usage(root: Path, max_entries: int) -> tuple[int, int]:
    """Bytes and entries under ``root``, without following links; stops counting past ``max_entries``."""
    total = entries = 0
    for _, st in _entries(root):
        entries += 1
        total += st.st_blocks * 512
        if entries > max_entries:
            break
    return total, entries


def _remove_tree(root: Path) -> None:
    """``shutil.rmtree(root, ignore_errors=True)``, without recursion."""
    for path, st in reversed(list(_entries(root))):  # what a folder holds before the folder
        with contextlib.suppress(OSError):
            (os.rmdir if stat.S_ISDIR(st.st_mode) else os.unlink)(path)
    with contextlib.suppress(OSError):
        os.rmdir(root)


_TICK = os.sysconf("SC_CLK_TCK")


def _tree_usage(pid: int) -> tuple[float, float, int]:
    """CPU seconds, resident MB and threads of ``pid`` and its descendants, from /proc.

    wait4() cannot tell: bubblewrap's outer process learns the exit code
    without reaping the namespace's init, so the worker's usage never reaches
    it. Sampled while the worker runs; the last sample stands.
    """
    cpu = rss = 0.0
    threads = 0
    todo = [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime
            rss += int(fields[21]) * os.sysconf("SC_PAGE_SIZE") / 2**20
            threads += int(fields[17])
            for task in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{task}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except (OSError, ValueError, IndexError):
            continue
    return cpu, rss, threads


def sanitize_workdir(root: Path) -> list[str]:
    """Remove what could redirect the parent's later reads and writes in ``root``.

    A worker may leave ``result.json`` as a symbolic link to a secret the
    parent would then read and pass on, ``job.json`` as a link (or hard link)
    to a file the parent would overwrite, or a FIFO that blocks a reader.
    Only plain files and directories stay. Returns what was removed.
    """
    removed = []
    for path, st in _entries(root):
        odd = not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode))
        if odd or (stat.S_ISREG(st.st_mode) and st.st_nlink > 1):
            os.unlink(path)
            removed.append(os.path.relpath(path, root))
    return removed


def _open_output(path: Path):
    """``path`` opened for reading, if it is a plain file a worker wrote; raises OSError otherwise."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    f = os.fdopen(fd, "rb")
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_nlink > 1:
        f.close()
        raise OSError(f"{path} is not a plain file")
    return f


def read_output(path: Path, max_bytes: int = 16 * 1024 * 1024, tail: bool = False) -> bytes:
    """Read a file a worker wrote, safely: no links, no FIFOs, at most ``max_bytes``
    (its last ones with ``tail``).

    For reads *while* a worker runs (progress.jsonl), when ``sanitize_workdir``
    has not yet had its turn: a worker can swap the file for a link to a
    secret or for a FIFO at any moment. Raises OSError for anything but a
    plain file.
    """
    with _open_output(path) as f:
        if tail:
            f.seek(max(0, os.fstat(f.fileno()).st_size - max_bytes))
        return f.read(max_bytes)


def copy_output(src: Path, dst: Path) -> None:
    """Copy a file a worker wrote to ``dst``, through no links at either end (a worker killed with
    its parent leaves its folder unsanitized; ``dst`` may be in such a folder too)."""
    with _open_output(src) as f:
        Path(dst).unlink(missing_ok=True)
        fd = os.open(dst, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        with os.fdopen(fd, "wb") as out:
            shutil.copyfileobj(f, out)


def _hand_over(root: Path) -> None:
    """Give the run folder to uid 65534 (root only), without following links."""
    os.chown(root, namespaces.NOBODY, namespaces.NOBODY)
    # bubblewrap enters it before dropping to that uid, as a root without DAC override: a 0700
    # folder (tempfile.mkdtemp's) needs search rights for others. Listing stays the owner's.
    os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) | 0o011)
    for path, _ in _entries(root):
        os.chown(path, namespaces.NOBODY, namespaces.NOBODY, follow_symlinks=False)


def _kill(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def run_worker(
    job_file: Path,
    workdir: Path,
    limits: Limits | None = None,
    poll: Callable[[], None] | None = None,
    *,
    require: bool = False,
    read_only: Iterable[Path] = (),
    extra_env: Mapping[str, str] | None = None,
    module: str = WORKER_MODULE,
) -> Outcome:
    """Run ``python -m <module> job_file`` confined to ``workdir``; never raises for what the worker does.

    ``poll`` is called at least every 50 ms while the worker runs (to read its
    progress); if it raises, the worker is killed and the exception goes on.
    ``require``: raise ``SandboxUnavailable`` instead of running when a layer
    is missing. ``read_only``: further files or folders the worker may read
    (inputs that are not in its folder).
    """
    limits = limits or Limits()
    workdir = Path(workdir).resolve()
    job_file = Path(job_file).resolve()
    plan = plan_layers()
    if require and plan.missing:
        raise SandboxUnavailable(plan.missing_text())
    plan.warn_once()

    inputs = [*read_only] + ([] if job_file.is_relative_to(workdir) else [job_file])
    if plan.bwrap:
        if namespaces.is_root() and namespaces.setpriv_path():
            _hand_over(workdir)
        prefix, tmpdir = namespaces.bwrap_argv(workdir, limits.tmp_mb, inputs), "/tmp"
    else:
        prefix, tmpdir = [], str(workdir / ".tmp")
        os.makedirs(tmpdir, exist_ok=True)
    fs_rules = landlock.rules(read_write=[str(workdir), tmpdir], read=namespaces.readable(inputs),
                              devices=namespaces.devices(), hidden=namespaces.hidden_files())

    # confine_self() in the worker writes which layers it applied to this pipe,
    # then closes it: the untrusted code that runs after cannot forge it.
    status_r, status_w = os.pipe()
    env = worker_env(tmpdir, {**(extra_env or {}), STATUS_FD: str(status_w), REQUIRE: "1" if require else "0",
                              landlock.FS_RULES: fs_rules})
    # -P: the run folder is not on sys.path, so a module planted there by an
    # earlier run is never imported by the next worker before it confines itself.
    argv = [*prefix, sys.executable, "-P", "-m", module, str(job_file)]

    t0 = time.monotonic()
    try:
        proc = subprocess.Popen(
            argv, cwd=workdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, start_new_session=True, pass_fds=(status_w,),
            preexec_fn=child_setup(limits),
        )
    finally:
        os.close(status_w)
    keep = limits.output_kb * 1024
    tails = [_Tail(proc.stdout, keep), _Tail(proc.stderr, keep)]
    for t in tails:
        t.start()
    status_reader = _StatusReader(status_r)
    status_reader.start()

    timed_out, over_disk, over_memory, rusage, wait_status = False, "", False, None, None
    next_check, peak_cpu, peak_rss, loops = t0, 0.0, 0.0, 0
    sampled_at, threads = t0, 1  # when peak_cpu was last read, and the threads that could add to it since
    try:
        while True:
            pid, wait_status, rusage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            now = time.monotonic()
            if now - t0 > limits.wall_s:
                timed_out = True
            elif now >= next_check:
                next_check = now + _CHECK_S
                cpu, rss, threads = _tree_usage(proc.pid)
                peak_cpu, peak_rss, sampled_at = max(peak_cpu, cpu), max(peak_rss, rss), time.monotonic()
                used, entries = _usage(workdir, limits.max_files)
                if not limits.address_space and rss > limits.memory_mb:
                    over_memory = True
                elif used > limits.disk_mb * 1024 * 1024:
                    over_disk = f"its folder grew past {limits.disk_mb} MB"
                elif entries > limits.max_files:
                    over_disk = f"its folder held more than {limits.max_files} entries"
            if timed_out or over_disk or over_memory:
                _kill(proc)
                _, wait_status, rusage = os.wait4(proc.pid, 0)
                break
            if poll is not None:
                poll()
            # Short naps at first, so a quick worker is not held up by the loop.
            time.sleep(min(_POLL_S, 0.002 * 2 ** min(loops, 5)))
            loops += 1
    except BaseException:
        _kill(proc)
        proc.wait()
        raise
    finally:
        ended_at = time.monotonic()
        if proc.returncode is None:  # reaped by wait4 above, not by Popen: tell it
            proc.returncode = os.waitstatus_to_exitcode(wait_status)
        for t in tails:
            t.join(timeout=5)
        status_reader.join(timeout=5)
        if not plan.bwrap:  # bubblewrap's /tmp goes with its namespace; this one would stay in the folder
            _remove_tree(Path(tmpdir))
        sanitize_workdir(workdir)

    return _outcome(
        wait_status, limits, plan, status_reader.layers, tails,
        cpu=max(peak_cpu, rusage.ru_utime + rusage.ru_stime),
        # A loaded machine can delay the samples by seconds: the most CPU the tree can have used since the last.
        unsampled_cpu=(ended_at - sampled_at) * min(threads, os.cpu_count() or 1),
        rss=max(peak_rss, rusage.ru_maxrss / 1024), wall=ended_at - t0,
        timed_out=timed_out, over_disk=over_disk, over_memory=over_memory,
    )


class _StatusReader(threading.Thread):
    def __init__(self, fd: int):
        super().__init__(daemon=True)
        self.fd, self.layers = fd, []

    def run(self) -> None:
        with os.fdopen(self.fd, "rb") as f:
            data = f.read(4096)
        try:
            self.layers = [str(x) for x in json.loads(data)["confined"]]
        except (ValueError, KeyError, TypeError):
            self.layers = []


_MEMORY_WORDS = ("MemoryError", "std::bad_alloc", "can't allocate memory", "Cannot allocate memory",
                 "failed to allocate", "out of memory")


def _outcome(wait_status, limits: Limits, plan, confined: list[str], tails, *,
             cpu: float, unsampled_cpu: float, rss: float, wall: float, timed_out: bool, over_disk: str,
             over_memory: bool) -> Outcome:
    code = sig = None
    if os.WIFSIGNALED(wait_status):
        sig = os.WTERMSIG(wait_status)
    else:
        code = os.WEXITSTATUS(wait_status)
        # bubblewrap reports a child killed by signal N as exit code 128+N.
        if plan.bwrap and code > 128 and code - 128 < signal.NSIG and not timed_out:
            code, sig = None, code - 128
    stderr = tails[1].text()
    name = signal.Signals(sig).name if sig else None

    limit, detail = None, ""
    if timed_out:
        limit, detail = "wall", f"killed (SIGKILL) at the {limits.wall_s:g} s wall-clock deadline"
    elif over_disk:
        limit, detail = "disk", f"killed (SIGKILL): {over_disk}"
    elif over_memory:
        limit, detail = "memory", f"killed (SIGKILL): its resident memory passed the {limits.memory_mb} MB limit"
    elif sig == signal.SIGSYS:
        limit, detail = "seccomp", ("killed by seccomp (SIGSYS) for a forbidden system call "
                                    "(starting a process, signalling another, tracing, mounting or similar)")
    elif sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu + unsampled_cpu >= limits.cpu_s - 0.5):
        # SIGKILL: the hard RLIMIT_CPU, one second past the soft one, for a worker that ignores SIGXCPU.
        limit, detail = "cpu", f"killed ({name}) at the {limits.cpu_s} s CPU-time limit"
    elif sig == signal.SIGXFSZ:
        limit, detail = "file_size", f"killed (SIGXFSZ) for writing a file larger than {limits.file_mb} MB"
    elif any(w in stderr[-4000:] for w in _MEMORY_WORDS):
        limit, detail = "memory", f"ran out of memory at the {limits.memory_mb} MB address-space limit"
    elif sig:
        detail = f"killed by {name}"
    elif code:
        detail = f"exited with code {code}"
    else:
        detail = "exited normally"

    layers = plan.active + [x for x in confined if x not in plan.active]
    return Outcome(
        returncode=code, timed_out=timed_out, signal=sig, signal_name=name, limit=limit, detail=detail,
        stdout_tail=tails[0].text(), stderr_tail=stderr, stdout_bytes=tails[0].total, stderr_bytes=tails[1].total,
        wall_s=wall, cpu_s=cpu, max_rss_mb=rss,
        layers=layers, missing=[x for x in LAYERS if x not in layers],
    )
