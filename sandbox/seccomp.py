"""The worker's own last layer: a seccomp filter over the system calls it may still make.

Applied by ``confine_self()`` after the worker's imports (torch, mujoco and
gymnasium open files, spawn threads and probe the machine while importing),
before it loads untrusted code. It holds for every thread of the process
(TSYNC) and for good: a filter cannot be removed.

What it takes away:
- new processes and programs: fork/vfork, clone without CLONE_THREAD, execve;
  clone3 answers ENOSYS (its flags sit behind a pointer seccomp cannot read),
  so glibc falls back to clone for threads and torch keeps its thread pool;
- sockets of any family (EACCES: a library probing for nscd copes);
- signals to any process but itself (also through a file's SIGIO owner), and
  another process's priority;
- changing any file's mode, owner, timestamps or extended attributes (EPERM);
- tracing, mounts, namespaces, kernel modules and keys, BPF, io_uring (which
  could open sockets behind the filter's back), raising resource limits.
A forbidden call other than socket kills the whole process with SIGSYS, which
the parent reports as a seccomp violation.
"""

from __future__ import annotations

import errno
import os

_CLONE_THREAD = 0x00010000
_TIOCSTI = 0x5412  # push bytes into a terminal's input
_F_SETOWN, _F_SETSIG, _F_SETOWN_EX = 8, 10, 15
_METADATA = (
    "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat",
    "utime", "utimes", "utimensat", "futimesat",
    "setxattr", "lsetxattr", "fsetxattr", "setxattrat", "removexattr", "lremovexattr", "fremovexattr",
    "removexattrat",
)

# Killed on sight: no reward program has a reason to call these.
_KILL = (
    "fork", "vfork", "execve", "execveat",
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp",
    "pidfd_open", "pidfd_getfd", "pidfd_send_signal", "tkill",
    "mount", "umount2", "pivot_root", "chroot", "unshare", "setns",
    "move_mount", "open_tree", "fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
    "bpf", "perf_event_open", "userfaultfd", "keyctl", "add_key", "request_key",
    "kexec_load", "kexec_file_load", "init_module", "finit_module", "delete_module",
    "reboot", "swapon", "swapoff", "acct", "settimeofday", "clock_settime", "clock_adjtime",
    "adjtimex", "sethostname", "setdomainname", "iopl", "ioperm", "quotactl",
    "name_to_handle_at", "open_by_handle_at", "lookup_dcookie", "syslog", "vhangup",
    "fanotify_init", "io_uring_setup", "io_uring_enter", "io_uring_register",
    "modify_ldt", "uselib", "personality", "setrlimit",
    "setuid", "setgid", "setreuid", "setregid", "setresuid", "setresgid", "setgroups",
    "setfsuid", "setfsgid", "capset",
)


def _resolve(name: str) -> int | None:
    import pyseccomp

    try:
        return pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name)
    except (ValueError, OSError):  # not a system call on this architecture (fork on arm64)
        return None


def apply_filter() -> None:
    """Build and load the filter; raises when pyseccomp or libseccomp is missing or refuses."""
    import pyseccomp as sc

    me = os.getpid()
    f = sc.SyscallFilter(sc.ALLOW)
    f.set_attr(sc.Attr.ACT_BADARCH, sc.KILL_PROCESS)  # e.g. 32-bit int 0x80 calls on x86_64
    f.set_attr(sc.Attr.CTL_TSYNC, 1)  # every thread, torch's pool included
    kill = sc.KILL_PROCESS

    def rule(action: int, name: str, *args) -> None:
        nr = _resolve(name)
        if nr is not None and nr >= 0:
            f.add_rule(action, nr, *args)

    for name in _KILL:
        rule(kill, name)
    rule(kill, "clone", sc.Arg(0, sc.MASKED_EQ, _CLONE_THREAD, 0))  # a process, not a thread
    rule(sc.ERRNO(errno.ENOSYS), "clone3")
    rule(sc.ERRNO(errno.EACCES), "socket")
    rule(sc.ERRNO(errno.EACCES), "socketpair")
    # Signals: to itself only (raise(), pthread_kill() and Python's signal module still work).
    rule(kill, "kill", sc.Arg(0, sc.NE, me))
    rule(kill, "tgkill", sc.Arg(0, sc.NE, me))
    rule(kill, "rt_sigqueueinfo", sc.Arg(0, sc.NE, me))
    rule(kill, "rt_tgsigqueueinfo", sc.Arg(0, sc.NE, me))
    # Reading limits is fine (prlimit64 with no new value); raising them is not.
    rule(kill, "prlimit64", sc.Arg(2, sc.NE, 0))
    rule(kill, "ioctl", sc.Arg(1, sc.EQ, _TIOCSTI))
    # A pipe's SIGIO owner is another way to signal any process (or process group).
    for cmd in (_F_SETOWN, _F_SETSIG, _F_SETOWN_EX):
        rule(kill, "fcntl", sc.Arg(1, sc.EQ, cmd))
    rule(sc.ERRNO(errno.EPERM), "setpriority", sc.Arg(1, sc.NE, 0))  # another process's priority
    # File metadata: Landlock does not cover it, and without bubblewrap every file the worker's uid
    # owns (or, as root, any file) would be open to chmod, chown, timestamps and extended attributes.
    for name in _METADATA:
        rule(sc.ERRNO(errno.EPERM), name)
    f.load()


def available() -> tuple[bool, str]:
    """Whether the filter can be built here (checked in the parent by doctor())."""
    try:
        import pyseccomp as sc

        sc.SyscallFilter(sc.ALLOW)
    except ImportError:
        return False, "pyseccomp is not installed (pip install 'reward-designer[sandbox]')"
    except (OSError, AttributeError, TypeError) as e:  # libseccomp missing or too old
        return False, f"libseccomp is not usable: {e}"
    return True, "socket, fork/exec, ptrace, mount and signals to other processes are denied after the worker's imports"
