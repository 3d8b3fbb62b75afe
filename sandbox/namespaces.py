"""The bubblewrap command line: what a worker can see of the file system, and as whom.

The mount namespace is an allow-list, not a deny-list: the worker sees the
system directories and the Python installation read-only, the package it
runs, its own run folder read-write, and a private memory-backed /tmp. The
home directories, the project checkout, other runs, the task cards (which
hold the hidden fitness) and the machine's other mounts simply do not exist
in there. No network (an empty network namespace), its own PID namespace (no
other process can be named, so none can be signalled or traced), and an
unprivileged uid.

Two ways to an unprivileged uid, by who starts the sandbox:

- a normal user: bubblewrap maps that user to uid 65534 in a new user
  namespace (and forbids nested ones);
- root: a user namespace would map 65534 back to root, so the sandbox would
  still own every root-owned file it can see and RLIMIT_NPROC would not apply
  to it. bubblewrap therefore runs privileged and the command starts with
  `setpriv`, which switches to the real uid/gid 65534 and drops every
  capability before Python starts.
"""

from __future__ import annotations

import functools
import glob
import importlib
import os
import shutil
import site
import stat
import subprocess
import sys
from pathlib import Path
from typing import Iterable

NOBODY = 65534
SYSTEM_DIRS = ("/usr", "/etc", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32")
GPU_DEVICES = ("/dev/nvidia*", "/dev/dri")
# The packages a worker imports; the task cards in reward_designer.envs are hidden (hidden fitness).
PACKAGES = ("reward_designer", "reward_designer.sandbox", "reward_designer.envs", "reward_designer.prompts")
HIDDEN_IN_PACKAGES = {"reward_designer.envs": ("*.yaml", "*.yml", "*.expert.py")}  # cards, their fitness and experts


def is_root() -> bool:
    return os.geteuid() == 0


@functools.lru_cache(maxsize=1)
def bwrap_path() -> str | None:
    return shutil.which("bwrap")


@functools.lru_cache(maxsize=1)
def bwrap_problem() -> str | None:
    """Why bubblewrap cannot run a sandbox here, or None when it can (tried once per process)."""
    exe = bwrap_path()
    if exe is None:
        return "bubblewrap is not installed (Debian/Ubuntu: apt-get install bubblewrap)"
    argv = [exe, *_namespace_flags(), "--ro-bind", "/", "/", "--proc", "/proc", "--dev", "/dev", "true"]
    try:
        res = subprocess.run(argv, capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return f"bubblewrap could not start: {e}"
    if res.returncode != 0:
        why = res.stderr.strip().splitlines()[-1:] or [f"exit code {res.returncode}"]
        return f"bubblewrap cannot create namespaces here ({why[0]}); unprivileged user namespaces may be disabled"
    return None


@functools.lru_cache(maxsize=1)
def setpriv_path() -> str | None:
    return shutil.which("setpriv", path="/usr/bin:/bin:/usr/sbin:/sbin")


def uid_drop_possible() -> bool:
    """Whether a sandbox started by this process runs under a real unprivileged uid."""
    return not is_root() or setpriv_path() is not None


def _namespace_flags() -> list[str]:
    common = ["--unshare-ipc", "--unshare-pid", "--unshare-net", "--unshare-uts", "--unshare-cgroup-try",
              "--die-with-parent", "--new-session"]
    if is_root() and setpriv_path():
        # Privileged bubblewrap; setpriv needs these two to switch to 65534,
        # and the switch clears them (and every other capability) again.
        return common + ["--cap-drop", "ALL", "--cap-add", "CAP_SETUID", "--cap-add", "CAP_SETGID"]
    return common + ["--unshare-user", "--uid", str(NOBODY), "--gid", str(NOBODY), "--disable-userns"]


def _is_within(path: str, roots: Iterable[str]) -> bool:
    return any(path == r or path.startswith(r.rstrip("/") + "/") for r in roots)


def _collapse(paths: Iterable[str]) -> list[str]:
    """Existing directories without those inside another one of them, shortest first."""
    out: list[str] = []
    for p in sorted({os.path.realpath(p) for p in paths if p and os.path.isdir(p)}, key=len):
        if not _is_within(p, out):
            out.append(p)
    return out


@functools.lru_cache(maxsize=1)
def _python_dirs() -> tuple[str, ...]:
    """The interpreter, its standard library and its site-packages: what every worker imports from."""
    dirs = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
            os.path.dirname(os.path.realpath(sys.executable)), *site.getsitepackages()}
    for name in PACKAGES:
        try:
            dirs.update(importlib.import_module(name).__path__)
        except ImportError:
            continue
    return tuple(_collapse(d for d in dirs if not _is_within(os.path.realpath(d), SYSTEM_DIRS)))


def gpu_devices() -> list[str]:
    """This machine's CUDA and EGL device files (for rendering on a GPU)."""
    return [dev for pattern in GPU_DEVICES for dev in sorted(glob.glob(pattern))]


def devices() -> list[str]:
    """The device files a worker may use: the harmless ones, and the GPU's (bubblewrap's --dev has the same)."""
    return ["/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom", *gpu_devices()]


def readable(inputs: Iterable[Path] = ()) -> list[str]:
    """What a worker may read, as Landlock rules (``landlock.py``): what bubblewrap shows it, read-only."""
    system = [top for top in SYSTEM_DIRS if os.path.exists(top)]
    return [*system, *_python_dirs(), *(str(p) for p in inputs), "/sys", "/proc/self", "/proc/driver"]


@functools.lru_cache(maxsize=1)
def hidden_files() -> tuple[str, ...]:
    """Files in the visible trees a worker must not read: task cards, and /etc's unreadable ones."""
    hidden = []
    for name, patterns in HIDDEN_IN_PACKAGES.items():
        try:
            roots = importlib.import_module(name).__path__
        except ImportError:
            continue
        hidden += [f for root in roots for pat in patterns  # in subfolders too, and dot files
                   for f in glob.glob(os.path.join(root, "**", pat), recursive=True, include_hidden=True)]
    # What an unprivileged user could not read anyway (shadow, private keys):
    # hidden also when the sandbox's uid maps back to its owner.
    for top, dirnames, filenames in os.walk("/etc"):
        for name in dirnames + filenames:
            path = os.path.join(top, name)
            try:
                st = os.lstat(path)
            except OSError:
                continue
            if not stat.S_ISLNK(st.st_mode) and not st.st_mode & stat.S_IROTH:
                hidden.append(path)
        dirnames[:] = [d for d in dirnames if os.access(os.path.join(top, d), os.R_OK)]
    return tuple(hidden)


def bwrap_argv(
    workdir: Path, tmp_mb: int, read_only: Iterable[Path] = (), tmpdir: str = "/tmp"
) -> list[str]:
    """The bubblewrap prefix for a worker confined to ``workdir``; the command follows it."""
    exe = bwrap_path()
    assert exe is not None
    args = [exe, *_namespace_flags()]

    for top in SYSTEM_DIRS:
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    args += ["--proc", "/proc", "--dev", "/dev", "--ro-bind-try", "/sys", "/sys"]
    for dev in gpu_devices():
        args += ["--dev-bind", dev, dev]
    size = str(tmp_mb * 1024 * 1024)
    # Memory-backed, so sized: RLIMIT_AS does not count what a tmpfs holds.
    args += ["--perms", "1777", "--size", size, "--tmpfs", tmpdir,
             "--perms", "1777", "--size", size, "--tmpfs", "/dev/shm"]

    workdir = Path(os.path.realpath(workdir))
    ro = _collapse([*_python_dirs(), *(str(p) for p in read_only if Path(p).is_dir())])
    ro_files = [os.path.realpath(p) for p in read_only if Path(p).is_file()]
    existing = [top for top in SYSTEM_DIRS if os.path.isdir(top) and not os.path.islink(top)] + ro
    created: set[str] = {tmpdir}
    for dest in [*ro, *ro_files, str(workdir)]:
        # bubblewrap would create missing parents 0700 as root: untraversable for uid 65534.
        for parent in reversed(Path(dest).parents[:-1]):
            p = str(parent)
            if p not in created and not _is_within(p, existing):
                args += ["--perms", "0755", "--dir", p]
                created.add(p)
    for d in ro:
        args += ["--ro-bind", d, d]
    for f in ro_files:
        args += ["--ro-bind", f, f]
    args += ["--bind", str(workdir), str(workdir)]
    for f in hidden_files():
        if _is_within(f, ro + ["/etc"]) and not _is_within(f, [str(workdir)]):
            # A directory becomes an empty tmpfs; a file, an unreadable device node.
            args += ["--tmpfs", f] if os.path.isdir(f) else ["--ro-bind", "/dev/null", f]
    args += ["--chdir", str(workdir)]
    if is_root() and setpriv_path():
        args += [setpriv_path(), f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups", "--no-new-privs", "--"]
    return args
