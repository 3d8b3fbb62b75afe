"""A PPO learner with a forked twin: two processes, half of every minibatch each.

Collecting a rollout keeps both cores busy (the simulator steps in two
threads); the update, run alone, used one. Two threads cannot share it: the
update's many small torch calls serialize on the GIL. A forked process has its
own interpreter. Twin and parent hold the same weights, the same optimizer
state and the same random generator (fork copies them), run the same
``ppo.update``, and before every optimizer step average their gradients and
statistics (``Peer.average``), so both take the same step and stay equal.

What they share is anonymous shared memory only: the batch (the parent writes
it), and one gradient buffer per process. The pipes carry single bytes, the
step size as 8 raw bytes, and the twin's errors as text: never a pickle, so
the parent, which may run untrusted reward code, can make the twin compute but
never run code. Fork before a sandbox forbids it (the worker forks, then
confines both). The twin exits when the parent's pipe closes, and dies with
the parent (PR_SET_PDEATHSIG).
"""

from __future__ import annotations

import ctypes
import math
import mmap
import os
import signal
import struct
import traceback
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch

if TYPE_CHECKING:
    from reward_designer.ppo import Batch, Learner

_PR_SET_PDEATHSIG = 1
# Bytes on the pipes. Parent -> twin: UPDATE + 8-byte step size, then READY per
# minibatch. Twin -> parent: READY per minibatch, DONE after the update, or
# ERROR + 4-byte length + traceback text.
UPDATE, READY, DONE, ERROR = b"u", b"r", b"d", b"e"


def _shared(*shape: int) -> torch.Tensor:
    """A float32 tensor in anonymous shared memory: a fork shares it, not copies it."""
    count = int(np.prod(shape))
    buf = mmap.mmap(-1, max(4 * count, 1))  # MAP_SHARED | MAP_ANONYMOUS
    return torch.frombuffer(buf, dtype=torch.float32, count=count).view(*shape)


def _read_exact(fd: int, n: int) -> bytes:
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
        if not chunk:
            break
        out += chunk
    return out


class LearnerDied(RuntimeError):
    """The twin failed or was killed."""


class Peer:
    """One side of a two-process average: each writes its vector, then reads the other's."""

    def __init__(self, rank: int, mine: list[torch.Tensor], theirs: list[torch.Tensor], send: int, recv: int,
                 on_message: Callable[[bytes], None]):
        self.rank, self.mine, self.theirs, self.send, self.recv = rank, mine, theirs, send, recv
        self.on_message = on_message  # anything but READY from the other side
        self.calls = 0

    def average(self, grad: torch.Tensor, stats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``grad`` (flat) and ``stats`` averaged with the other process's: new tensors."""
        # Two buffers each, alternating: the other side may still be reading the last one.
        mine, theirs = self.mine[self.calls % 2], self.theirs[self.calls % 2]
        self.calls += 1
        torch.cat([grad, stats.detach()], out=mine)
        os.write(self.send, READY)
        while (msg := os.read(self.recv, 1)) != READY:
            self.on_message(msg)
        total = mine + theirs  # the same sum, bit for bit, on both sides
        total.mul_(0.5)
        return total[: grad.numel()], total[grad.numel() :]


class ForkedLearner:
    """``Learner``'s interface (step, close, policy), with a twin process doing half the work."""

    def __init__(self, inline: Learner, shapes: Batch, on_fork: Callable[[], None] | None = None):
        """``shapes``: a ``Batch`` of the batch tensors' shapes."""
        self.inline, self.policy, self.cfg = inline, inline.policy, inline.cfg
        self.data = type(shapes)(*(_shared(*shape) for shape in shapes))
        width = inline.optimizer.params.numel() + 5  # the flat gradient, then the statistics
        bufs = [[_shared(width), _shared(width)] for _ in range(2)]  # [rank][parity]
        down_r, self._down = os.pipe()  # parent -> twin
        self._up, up_w = os.pipe()  # twin -> parent
        self.pid = os.fork()
        if self.pid == 0:  # the twin: serve until the parent goes, never return
            code = 1
            try:
                os.close(self._down)
                os.close(self._up)
                self._peer = Peer(1, bufs[1], bufs[0], up_w, down_r, self._unexpected)
                self._serve(down_r, up_w, on_fork)
                code = 0
            finally:
                os._exit(code)
        os.close(down_r)
        os.close(up_w)
        self._peer = Peer(0, bufs[0], bufs[1], self._down, self._up, self._from_twin)

    # ------------------------------------------------------------- the twin
    def _serve(self, down: int, up: int, on_fork: Callable[[], None] | None) -> None:
        try:
            ctypes.CDLL(None).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # not Linux: the closed pipe still ends the twin
        # One thread, as the parent's update: an OpenMP pool the parent started
        # before the fork does not work in a child (it would hang).
        torch.set_num_threads(1)
        if on_fork is not None:
            on_fork()
        while True:
            msg = os.read(down, 1)
            if msg != UPDATE:
                return  # the pipe closed (b""), or the parent is not following the protocol
            (lr,) = struct.unpack("d", _read_exact(down, 8))
            try:
                self.inline.step(self.data, None if math.isnan(lr) else lr, self._peer)
                os.write(up, DONE)
            except _ParentGone:
                return
            except Exception:  # noqa: BLE001 - reported to the parent, which raises
                text = traceback.format_exc(limit=8)[-4000:].encode()
                os.write(up, ERROR + struct.pack("I", len(text)) + text)

    @staticmethod
    def _unexpected(msg: bytes) -> None:
        raise _ParentGone(msg)

    # ------------------------------------------------------------ the parent
    def step(self, data: Batch, lr: float | None) -> dict[str, float]:
        for mine, theirs in zip(self.data, data):
            mine.copy_(theirs)
        try:
            os.write(self._down, UPDATE + struct.pack("d", math.nan if lr is None else lr))
            stats = self.inline.step(self.data, lr, self._peer)
            while (msg := os.read(self._up, 1)) != DONE:
                self._from_twin(msg)
        except BrokenPipeError:
            self._from_twin(b"")  # it is gone: raise, saying how it ended
        except BaseException:
            self.close()  # mid-update the twin would wait for us forever
            raise
        return stats

    def _from_twin(self, msg: bytes) -> None:
        if msg == ERROR:
            (size,) = struct.unpack("I", _read_exact(self._up, 4))
            text = _read_exact(self._up, size).decode(errors="replace")
            raise LearnerDied(f"the learner's twin process failed:\n{text}")
        raise LearnerDied(f"the learner's twin process died ({self._reap()})")

    def _reap(self) -> str:
        if not self.pid:
            return "already reaped"
        _, status = os.waitpid(self.pid, 0)
        self.pid = 0
        if os.WIFSIGNALED(status):
            return f"killed by {signal.Signals(os.WTERMSIG(status)).name}"
        return f"exit code {os.WEXITSTATUS(status)}"

    def close(self) -> None:
        """End the twin and wait for it. No signal: a confined worker may not send one.
        Its next read of the pipe, idle or mid-update, sees the end and it exits."""
        for fd in (self._down, self._up):
            try:
                os.close(fd)
            except OSError:
                pass
        if self.pid:
            self._reap()


class _ParentGone(Exception):
    """The parent stopped mid-update (its pipe closed)."""
