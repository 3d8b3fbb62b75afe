"""A forked twin of this process: shared memory, one-byte requests, errors as text.

A second core needs a second interpreter where the work is many small Python
calls (threads would serialize on the GIL): the simulator's slab of envs
(sim/slabs.py) and half of every PPO minibatch (forked_learner.py) each run in a
twin. Nothing that crosses is pickled: bytes on two pipes and anonymous
shared memory, so a parent that later runs untrusted code can make a twin
compute but never run code. Fork before a sandbox forbids it; ``on_fork``
confines the twin first thing. A twin exits when its parent's pipe closes and
dies with its parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import signal
import struct
import traceback
from typing import Callable

import numpy as np

_PR_SET_PDEATHSIG = 1
# This process's ends of its live twins' pipes. A new twin closes them: if it
# held a copy, an older twin would never see its parent close the pipe.
_PARENT_ENDS: set[int] = set()
# Twin -> parent, when the twin's work raised: ERROR + 4-byte length + traceback text.
ERROR = b"e"


def shared_array(shape: tuple[int, ...], dtype=np.float64) -> np.ndarray:
    """A zeroed array in anonymous shared memory: a fork shares it, not copies it."""
    dtype = np.dtype(dtype)
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(count * dtype.itemsize, 1))  # MAP_SHARED | MAP_ANONYMOUS
    return np.frombuffer(buf, dtype=dtype, count=count).reshape(shape)


class TwinDied(RuntimeError):
    """A twin's work raised, or the twin was killed."""


class ParentGone(Exception):
    """Raised in a twin when its parent's pipe closed or broke protocol: the twin exits quietly."""


class Twin:
    """A forked copy of this process running ``serve(twin)``.

    In the parent, ``send`` writes to the twin and ``expect`` waits for its
    answer; in the twin, ``serve`` reads requests with ``read`` and answers
    with ``send``. The twin's exception comes back as ``TwinDied`` with its
    traceback.
    """

    def __init__(self, serve: Callable[["Twin"], None], on_fork: Callable[[], None] | None = None):
        down_r, down_w = os.pipe()  # parent -> twin
        up_r, up_w = os.pipe()  # twin -> parent
        self.pid = os.fork()
        if self.pid == 0:
            for fd in _PARENT_ENDS | {down_w, up_r}:
                os.close(fd)
            _PARENT_ENDS.clear()
            self.recv_fd, self.send_fd = down_r, up_w
            os._exit(self._run(serve, on_fork))
        os.close(down_r)
        os.close(up_w)
        self.recv_fd, self.send_fd = up_r, down_w
        _PARENT_ENDS.update((up_r, down_w))

    def _run(self, serve: Callable[["Twin"], None], on_fork: Callable[[], None] | None) -> int:
        try:
            try:
                ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
            except (OSError, AttributeError):
                pass  # not Linux: the closed pipe still ends the twin
            if on_fork is not None:
                on_fork()
            serve(self)
            return 0
        except ParentGone:
            return 0
        except BaseException:  # noqa: BLE001 - reported to the parent, which raises
            text = traceback.format_exc(limit=8)[-4000:].encode()
            try:
                self.send(ERROR + struct.pack("I", len(text)) + text)
            except OSError:
                pass
            return 1

    def _check_open(self) -> None:
        if self.send_fd < 0:
            raise RuntimeError("this twin is closed")

    def send(self, data: bytes) -> None:
        self._check_open()
        os.write(self.send_fd, data)

    def read(self, n: int) -> bytes:
        """Exactly ``n`` bytes, or fewer if the other side closed its end."""
        self._check_open()
        out = b""
        while len(out) < n:
            chunk = os.read(self.recv_fd, n - len(out))
            if not chunk:
                break
            out += chunk
        return out

    def expect(self, msg: bytes) -> None:
        """In the parent: wait for the one-byte answer ``msg``; anything else raises ``TwinDied``."""
        got = self.read(1)
        if got != msg:
            self.fail(got)

    def fail(self, got: bytes) -> None:
        """In the parent: raise ``TwinDied`` for an unexpected byte from the twin."""
        if got == ERROR:
            (size,) = struct.unpack("I", self.read(4))
            text = self.read(size).decode(errors="replace")
            raise TwinDied(f"a forked twin process failed:\n{text}")
        raise TwinDied(f"a forked twin process died ({self._reap()})")

    def _reap(self) -> str:
        if not self.pid:
            return "already reaped"
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit code {os.WEXITSTATUS(status)}"

    def close(self) -> None:
        """End the twin and wait for it. No signal: a confined process may not send one.
        Its next read of the pipe, idle or mid-request, sees the end and it exits.
        Closing again does nothing: by then the fd numbers may be another file's."""
        fds, self.send_fd, self.recv_fd = (self.send_fd, self.recv_fd), -1, -1
        for fd in fds:
            if fd >= 0:
                _PARENT_ENDS.discard(fd)
                with contextlib.suppress(OSError):
                    os.close(fd)
        if self.pid:
            self._reap()
