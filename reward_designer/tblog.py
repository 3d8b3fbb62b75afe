"""A training's log as TensorBoard event files, for `tensorboard --logdir RUN`.

progress.jsonl stays the source of truth: the events are written from it in
the main process once a training ends (read defensively: a worker that ran
untrusted code wrote it), never by the worker.
"""

from __future__ import annotations

from pathlib import Path

from .trainer import read_progress

EVENTS_DIR = "tensorboard"


def write_events(progress: Path, logdir: Path) -> int:
    """Every number of every update (fitness, each reward component, losses, speed) as a scalar at
    its ``global_step``; returns how many were written. Rewrites ``logdir`` whole, so it holds one
    copy of the log however often it is called."""
    from tensorboardX import SummaryWriter

    rows = [r for r in read_progress(progress) if isinstance(r.get("global_step"), int)]
    for old in logdir.glob("events.out.tfevents.*"):
        old.unlink()
    written = 0
    with SummaryWriter(str(logdir)) as writer:
        for row in rows:
            for key, value in row.items():
                if key != "global_step":
                    writer.add_scalar(key, value, row["global_step"])
                    written += 1
    return written
