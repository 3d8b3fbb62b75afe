"""Landlock: the kernel's own file-system allow-list, which a process puts on itself.

The worker applies it in ``confine_self()``, after its imports and before it
loads untrusted code, with the rules the parent computed (``rules()``, passed
in the ``FS_RULES`` variable): read the system and Python trees and its
inputs, read and write its own folder and TMPDIR, use device files. Anything
else (the user's files, other runs, the task cards, another process's
``/proc/PID/mem`` or ``environ``) is refused with EACCES. With bubblewrap it
repeats what the mounts already give; without it, it is what keeps a program
to its folder. On kernels with Landlock ABI 6 or later it also keeps signals
and abstract unix sockets within the worker. Landlock applies to the thread
that calls it and to every thread and process it starts after, which is where
untrusted code runs.
"""

from __future__ import annotations

import ctypes
import json
import os
import stat
from typing import Iterable

# Syscall numbers: the same on every architecture (they were added after the tables were unified).
_CREATE_RULESET, _ADD_RULE, _RESTRICT_SELF = 444, 445, 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
_MAKE_AND_REMOVE = REMOVE_DIR | REMOVE_FILE | MAKE_CHAR | MAKE_DIR | MAKE_REG | MAKE_SOCK | MAKE_FIFO | MAKE_BLOCK | MAKE_SYM
# Scopes (ABI 6): no signals to, and no abstract unix sockets of, processes outside the sandbox.
_SCOPE_ABSTRACT_UNIX_SOCKET, _SCOPE_SIGNAL = 1 << 0, 1 << 1
_FILE_RIGHTS = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV  # the rights a rule on a file may hold

READ = EXECUTE | READ_FILE | READ_DIR
DEVICES = READ_FILE | WRITE_FILE | READ_DIR | IOCTL_DEV
# Not device nodes: one made in its own folder would open the device behind it (/dev/kmsg, a disk).
READ_WRITE = READ | WRITE_FILE | (_MAKE_AND_REMOVE & ~(MAKE_CHAR | MAKE_BLOCK)) | REFER | TRUNCATE

FS_RULES = "RD_SANDBOX_FS_RULES"


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


_libc = ctypes.CDLL(None, use_errno=True)


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 when it has none or it is disabled."""
    v = _libc.syscall(_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(_CREATE_RULESET_VERSION))
    return max(v, 0)


def _handled(abi: int) -> int:
    """Every file-system right this kernel knows: what is not granted by a rule is refused."""
    rights = READ | WRITE_FILE | _MAKE_AND_REMOVE
    return rights | (REFER if abi >= 2 else 0) | (TRUNCATE if abi >= 3 else 0) | (IOCTL_DEV if abi >= 5 else 0)


def rules(read_write: Iterable[str], read: Iterable[str], devices: Iterable[str], hidden: Iterable[str]) -> str:
    """The rules, as the worker reads them from ``FS_RULES``."""
    return json.dumps({"read_write": list(read_write), "read": list(read), "devices": list(devices),
                       "hidden": list(hidden)})


def _within(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def _grants(path: str, access: int, hidden: set[str]) -> Iterable[tuple[str, int]]:
    """(path, access) rules giving ``access`` beneath ``path`` except to the ``hidden`` paths in it:
    a rule covers a whole tree, so a tree holding a hidden file is granted entry by entry."""
    todo = [path]
    while todo:
        p = todo.pop()
        if p in hidden:
            continue
        if not any(_within(h, p) for h in hidden):
            yield p, access
            continue
        yield p, access & READ_DIR  # any other right would reach the hidden path beneath it: list it only
        with os.scandir(p) as it:
            todo += [e.path for e in it]


def restrict(spec: str) -> None:
    """Put the rules of ``spec`` (from ``rules()``) on this thread and all it starts; OSError if refused."""
    spec_d = json.loads(spec)
    abi = abi_version()
    if abi < 1:
        raise OSError("this kernel has no Landlock (or it is disabled)")
    handled = _handled(abi)
    scoped = _SCOPE_ABSTRACT_UNIX_SOCKET | _SCOPE_SIGNAL if abi >= 6 else 0
    attr = (ctypes.c_uint64 * 3)(handled, 0, scoped)  # fs, net (not handled: seccomp has no sockets), scoped
    size = ctypes.sizeof(attr) if scoped else ctypes.sizeof(ctypes.c_uint64)
    ruleset = _libc.syscall(_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if ruleset < 0:
        raise OSError(ctypes.get_errno(), "landlock_create_ruleset failed")
    hidden = {os.path.realpath(h) for h in spec_d["hidden"]}
    try:
        for key, access in (("read", READ), ("devices", DEVICES), ("read_write", READ_WRITE)):
            # The writable roots are the worker's own folder and TMPDIR: nothing hidden can be in them
            # but under bubblewrap's private /tmp, where the mounts hide it already (a checkout under
            # /tmp holds the cards) and where a root granted entry by entry could not be written to.
            skip = hidden if key != "read_write" else set()
            for root in spec_d[key]:
                if not os.path.exists(root):
                    continue
                for path, rights in _grants(os.path.realpath(root), access & handled, skip):
                    _add(ruleset, path, rights)
        if _libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
        if _libc.syscall(_RESTRICT_SELF, ruleset, ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), "landlock_restrict_self failed")
    finally:
        os.close(ruleset)


def _add(ruleset: int, path: str, access: int) -> None:
    fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            access &= _FILE_RIGHTS
        rule = _PathBeneath(allowed_access=access, parent_fd=fd)
        if _libc.syscall(_ADD_RULE, ruleset, ctypes.c_uint32(_RULE_PATH_BENEATH), ctypes.byref(rule),
                         ctypes.c_uint32(0)) != 0:
            raise OSError(ctypes.get_errno(), f"landlock_add_rule failed for {path}")
    finally:
        os.close(fd)
