"""PPO hyperparameters per standard MuJoCo task, as overrides of ``PPOConfig``; and checking overrides.

``preset_for("Hopper-v5")`` -> a dict of PPOConfig overrides; unknown envs get
``{}`` (the PPOConfig defaults, which are ``BASE``). The version suffix is
ignored: a preset is about the task, not one revision of its XML.

Why per task: at 1M steps one PPO shape does not fit all (HalfCheetah's median
return went from ~1500 to ~6300 with less exploration noise; Swimmer, with its
gamma on the base, stayed under 25 and gets ~150 in Hopper's shape), and a search
compares candidates by one training each, so a run that fails by chance is
what costs most. Each preset is what did best over several seeds with
benchmarks/learning.py; docs/TUNING.md records every setting tried and what it
got, on the CPU and on MuJoCo Warp (``WARP_STEPS``).

Light to import (no torch, no simulator): a task card's ``ppo:`` is checked here
when the card loads.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterable

from .ppo_config import PPOConfig

BASE = {
    "num_envs": 32,
    "num_steps": 64,
    "num_minibatches": 2,
    "update_epochs": 10,
    "desired_kl": 0.01,
    "gamma": 0.99,
    "gae_lambda": 0.95,
}

# Small minibatches (128; SB3 takes 64) at SB3's fixed 3e-4, in 128-step rollouts, with lambda 0.98
# crediting over ~50 steps: the shape of Hopper's and Swimmer's presets (docs/TUNING.md).
SMALL_MINIBATCHES = {**BASE, "num_steps": 128, "num_minibatches": 32, "desired_kl": None, "anneal_lr": False,
                     "gae_lambda": 0.98}

PRESETS: dict[str, dict] = {
    "HalfCheetah": {**BASE, "log_std_init": -1.0, "num_minibatches": 1},
    # Over 12 seeds every run hopped (the 64-unit, 0.99, fixed-step shape: 8 of 12); annealing ends a run on its
    # plateau, not on one update's draw
    "Hopper": {**SMALL_MINIBATCHES, "gamma": 0.995, "hidden": (256, 256), "anneal_lr": True},
    "Walker2d": BASE,
    "Ant": BASE,
    "Humanoid": {**BASE, "hidden": (256, 256)},  # 348-d observations
    "HumanoidStandup": {**BASE, "hidden": (256, 256)},
    "Swimmer": {**SMALL_MINIBATCHES, "gamma": 0.9999},  # progress pays off over the whole episode
    "Reacher": BASE,
    "Pusher": BASE,
    "InvertedPendulum": BASE,
    "InvertedDoublePendulum": BASE,
}


WARP_STEPS = 16  # rollout length on MuJoCo Warp; the batch sets the number of worlds


def _shape(preset: dict) -> dict:
    """A preset with the base under it: the PPOConfig values it runs with (an unknown env's {} is BASE)."""
    return {**BASE, **preset}


def preset_for(env_id: str, sim: str = "mujoco") -> dict:
    """PPOConfig overrides for ``env_id`` ("Hopper-v5", "gymnasium/Hopper-v4", ...) on ``sim``
    ("mujoco", or "warp": one MuJoCo Warp batch, the same batch in ``WARP_STEPS``-step rollouts)."""
    name = re.sub(r"-v\d+$", "", env_id.rsplit("/", 1)[-1])
    preset = copy.deepcopy(PRESETS.get(name, {}))
    if sim == "warp":
        shape = _shape(preset)
        preset.update(num_envs=max(1, shape["num_envs"] * shape["num_steps"] // WARP_STEPS), num_steps=WARP_STEPS)
    return preset


def batch_steps(env_id: str, sim: str = "mujoco", overrides: dict | None = None) -> int:
    """Env steps per PPO update on ``env_id``: the preset's batch, with ``overrides`` (PPOConfig fields) on top."""
    shape = _shape({**preset_for(env_id, sim), **(overrides or {})})
    return shape["num_envs"] * shape["num_steps"]


# Fields set by their own options, which would drop an override of them: where to set each instead.
SET_BY_COMMAND = {"total_steps": "--steps, --train-steps or a task card's train_steps", "seed": "--seed",
                  "device": "--device"}
WORDS = {"true": True, "false": False, "none": None, "null": None}  # as YAML and JSON spell them


def check_overrides(overrides: dict) -> dict:
    """``overrides`` as the PPOConfig values they make (``hidden`` a tuple), if they make one without the
    fields set elsewhere; else ValueError naming the field."""
    for key, where in SET_BY_COMMAND.items():
        if key in overrides:
            raise ValueError(f"{key} is not a PPO override: set it with {where}")
    cfg = PPOConfig.from_dict(overrides)
    return {k: getattr(cfg, k) for k in overrides}


def read_value(text: str):
    """An override's value from text: a Python literal, true / false / none as YAML spells them, else the
    text (``relu``). Also for a card's strings: YAML reads ``1e-4`` (no dot) as one."""
    text = text.strip()
    try:
        return ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):  # not a literal ({[1]: 2}, too deep)
        return WORDS.get(text.lower(), text)


def parse_overrides(pairs: Iterable[str]) -> dict:
    """``["lr=1e-4", "hidden=(128,128)"]`` (``--set`` arguments) -> PPOConfig overrides, checked: ValueError,
    naming the argument, for a malformed one, an unknown field or a bad value; values as ``read_value``."""
    overrides = {}
    for pair in pairs:
        key, eq, text = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE, e.g. lr=1e-4")
        overrides[key] = read_value(text)
    try:
        return check_overrides(overrides)
    except ValueError as exc:
        raise ValueError(f"--set: {exc}") from None
