"""PPO hyperparameters per standard MuJoCo task, as overrides of ``PPOConfig``.

``preset_for("Hopper-v5")`` -> a dict of PPOConfig overrides; unknown envs get
``{}`` (the PPOConfig defaults, which are the locomotion base below). The
version suffix is ignored: a preset is about the task, not one revision of
its XML.

Chosen at 1M steps with benchmarks/learning.py; docs/TUNING.md records every
setting tried and what it got.

- The base: 32 envs x 64 steps, 2 minibatches of 1024, 10 epochs, and a step
  size that follows the KL (``desired_kl``). With a fixed 3e-4, minibatches
  this large move the policy too little per update.
- HalfCheetah: less exploration noise (``log_std_init`` -1; the median eval
  return went from ~1500 to ~6300) and one minibatch per epoch (a quarter
  off the update, no return lost).
- Hopper: 128-step rollouts, 32 minibatches of 128 at SB3's 3e-4, annealed
  to 0 over the budget, ``gae_lambda`` 0.98, ``gamma`` 0.995 and 256-unit
  nets. Hopper at 1M is bimodal: a run hops (2700-3700) or falls (300-2000),
  which one a seed gets moves with float rounding, and even a hopping run's
  eval return swings by up to ~2900 from one update to the next. A search
  compares candidates by one training each, so a run that falls by chance is
  what costs most. Over seeds 0-11, kernels pinned (numerics.py), every run
  hopped: lowest 3145, median 3400. The fixed step size with 128-unit nets
  also hopped on all 12 (lowest 2946, median 3411) at ~14k env-steps/s
  against ~8k, but the annealed step ends each run on its plateau rather
  than on one update's draw. SB3's defaults hop on 7 of 12 (median 3158).
- Swimmer: Hopper's shape with gamma 0.9999 (rl-baselines3-zoo's; progress
  pays off over the whole episode). The base with that gamma stayed at 0-22;
  this gets a median of 148 over seeds 0-4 (292 / 143 / 128 / 358 / 148), a
  run finding either the ~300 gait or a ~130 one. SB3's defaults: 109 / 114 /
  89 on seeds 0-2.
- The others take the base, with wider nets for Humanoid's 348-d
  observations; docs/TUNING.md has what each gets at 1M. Hopper's shape did
  not carry over to Ant (234 against 2154 on seed 0).
- On MuJoCo Warp (``sim="warp"``) a task keeps its preset's batch, minibatches
  and epochs, so it makes the same updates in a budget, but collects the batch
  in rollouts of ``WARP_STEPS`` steps over batch / ``WARP_STEPS`` worlds (128 for
  HalfCheetah, 256 for Hopper). Measured at 1M steps on Warp's CPU backend
  (same physics as on a GPU), medians of seeds 0-2: HalfCheetah 6036 (the CPU
  preset: 6296) and, with Hopper's preset of before 2026-12-01, Hopper 3220
  (3482); Hopper's preset now gave 1750 / 3273 on seeds 0-1. rsl_rl's shape
  (1024 worlds x 16 steps, 4 minibatches, 5 epochs: 61 updates) got 4431-4614
  on HalfCheetah and 1061 on Hopper (439 with the step size following the
  KL). More worlds pay off with larger budgets: override ``num_envs`` and
  ``num_steps`` for those.
"""

from __future__ import annotations

import ast
import copy
import re
from collections.abc import Iterable

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
    from .ppo import PPOConfig

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
