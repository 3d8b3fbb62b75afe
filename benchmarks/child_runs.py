"""What learning.py and trainer_speed.py share: every measurement runs in a process of its own.

A fresh process per run keeps one run's threads, caches and loaded libraries out of the next's. Ours
runs with the numerics pins a training worker gets (``numerics.numerics_pins``, read when numpy and
torch load), stable-baselines3 with the code paths its torch picks, as it ships.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

from reward_designer.numerics import numerics_pins
from reward_designer.presets import parse_overrides


def run_child(script: str, args: list[str], pinned: bool, what: str):
    """``python script *args`` in a fresh process; the JSON on its last line of stdout. Its stderr
    passes through; a child that fails ends this process, naming ``what`` it ran."""
    env = {**os.environ, **(numerics_pins() if pinned else {})}
    out = subprocess.run([sys.executable, "-W", "ignore", script, *args], env=env, stdout=subprocess.PIPE, text=True)
    if out.returncode != 0:
        sys.exit(f"{what} failed (exit code {out.returncode}); its output is above")
    return json.loads(out.stdout.strip().splitlines()[-1])


def overrides_or_exit(parser: argparse.ArgumentParser, pairs: list[str]) -> dict:
    """``--set`` arguments as PPOConfig overrides; a bad one stops the benchmark before any run."""
    try:
        return parse_overrides(pairs)
    except ValueError as exc:
        parser.error(str(exc))
