"""A PPO learner with a forked twin: two processes, half of every minibatch each.

Collecting a rollout keeps both cores busy (the simulator steps a slab of envs
per core); the update, run alone, used one. Two threads cannot share it: the
update's many small array ops serialize on the GIL. A forked twin
(``twin.Twin``) has its own interpreter. Twin and parent hold the same
weights, the same optimizer state and the same random generator (fork copies
them), run the same ``ppo.update``, and before every optimizer step average
their gradients and statistics (``Peer.average``), so both take the same step
and stay equal.

What they share is anonymous shared memory only: the batch (the parent writes
it) and two gradient buffers per process. The pipes carry single bytes and the
step size as 8 raw bytes.
"""

from __future__ import annotations

import math
import struct
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
from threadpoolctl import threadpool_limits

from reward_designer.twin import ParentGone, Twin, shared_array

if TYPE_CHECKING:
    from reward_designer.ppo import Batch, Learner

# Parent -> twin: UPDATE + 8-byte step size. Both ways: READY per minibatch.
# Twin -> parent: DONE after the update.
UPDATE, READY, DONE = b"u", b"r", b"d"


def _shared(*shape: int) -> torch.Tensor:
    return torch.from_numpy(shared_array(shape, np.float32))


def _parent_gone(msg: bytes) -> None:
    raise ParentGone(msg)


class Peer:
    """One side of a two-process average: each writes its vector, then reads the other's."""

    def __init__(self, rank: int, mine: list[np.ndarray], theirs: list[np.ndarray], twin: Twin,
                 on_message: Callable[[bytes], None]):
        self.rank, self.mine, self.theirs, self.twin = rank, mine, theirs, twin
        self.on_message = on_message  # anything but READY from the other side
        self.calls = 0

    def average(self, grad: np.ndarray, stats: np.ndarray, share: float) -> tuple[np.ndarray, np.ndarray]:
        """``grad`` (flat) and ``stats``, means over this side's ``share`` of a minibatch, and the other
        side's, averaged into the whole minibatch's means: new arrays."""
        # Two buffers each, alternating: the other side may still be reading the last one.
        mine, theirs = self.mine[self.calls % 2], self.theirs[self.calls % 2]
        self.calls += 1
        n = grad.shape[0]
        mine[:n], mine[n:] = grad, stats
        # Each side's weight is twice its share: 1 for even halves (which this leaves bit for bit as
        # they were), 34/33 and 32/33 for the halves of a minibatch of 33.
        mine *= 2 * share
        self.twin.send(READY)
        while (msg := self.twin.read(1)) != READY:
            self.on_message(msg)
        total = mine + theirs  # the same sum, bit for bit, on both sides
        total *= 0.5
        return total[:n], total[n:]


class ForkedLearner:
    """``Learner``'s interface (step, close, policy), with a twin process doing half the work."""

    def __init__(self, inline: Learner, shapes: Batch, on_fork: Callable[[], None] | None = None):
        """``shapes``: a ``Batch`` of the batch tensors' shapes."""
        self.inline, self.policy, self.cfg = inline, inline.policy, inline.cfg
        self.resumed = inline.resumed  # the twin forks with the inline learner's state, a checkpoint's too
        self.data = type(shapes)(*(_shared(*shape) for shape in shapes))
        width = inline.optimizer.params.shape[0] + 5  # the flat gradient, then the statistics
        self._bufs = [[shared_array((width,), np.float32) for _ in range(2)] for _ in range(2)]  # [rank][parity]
        self.twin = Twin(self._serve, on_fork)
        self._peer = Peer(0, self._bufs[0], self._bufs[1], self.twin, self.twin.fail)

    def _serve(self, twin: Twin) -> None:
        """The twin: one update per request until the parent goes."""
        # One thread, as the parent's update: an OpenMP pool the parent started
        # before the fork does not work in a child (it would hang).
        torch.set_num_threads(1)
        threadpool_limits(1, user_api="blas")
        peer = Peer(1, self._bufs[1], self._bufs[0], twin, _parent_gone)
        while twin.read(1) == UPDATE:
            (lr,) = struct.unpack("d", twin.read(8))
            self.inline.step(self.data, None if math.isnan(lr) else lr, peer)
            twin.send(DONE)

    def step(self, data: Batch, lr: float | None) -> dict[str, float]:
        for mine, theirs in zip(self.data, data):
            mine.copy_(theirs)
        try:
            self.twin.send(UPDATE + struct.pack("d", math.nan if lr is None else lr))
            stats = self.inline.step(self.data, lr, self._peer)
            self.twin.expect(DONE)
        except BrokenPipeError:
            self.twin.fail(b"")  # it is gone: raise, saying how it ended
        except BaseException:
            self.close()  # mid-update the twin would wait for us forever
            raise
        return stats

    def state(self) -> dict[str, np.ndarray]:
        """The learner's state, the same in both processes between updates (for a checkpoint)."""
        return self.inline.state()

    def close(self) -> None:
        self.twin.close()
