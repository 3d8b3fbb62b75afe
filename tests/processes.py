"""Processes in tests: which are still running (nothing may outlive what started it), and Ctrl-C."""

from __future__ import annotations

import contextlib
import signal
from pathlib import Path


def processes_naming(text: str) -> list[int]:
    """Pids of the live processes whose command line contains ``text``."""
    pids = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                pids.append(int(cmdline.parent.name))
        except OSError:  # it ended while we looked
            continue
    return pids


@contextlib.contextmanager
def ctrl_c_as_in_a_terminal():
    """SIGINT raises KeyboardInterrupt here, and children started in the block get its default.

    A suite started in the background (`pytest &` in a script) runs with SIGINT ignored, which
    children inherit, and Python then never turns a Ctrl-C into KeyboardInterrupt. A handled
    signal, unlike an ignored one, is back to its default in a child after exec.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
