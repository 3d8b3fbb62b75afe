"""PPO hyperparameters per standard MuJoCo task, as overrides of ``PPOConfig``.

``preset_for("Hopper-v5")`` -> a dict of PPOConfig overrides; unknown envs get
``{}`` (the PPOConfig defaults). The version suffix is ignored: the presets
are about the task, not one revision of its XML.
"""

from __future__ import annotations

import copy
import re

# Shared by the locomotion tasks: many envs with short rollouts to use the
# batched simulator, large minibatches to keep the update cheap.
_LOCOMOTION = {
    "num_envs": 64,
    "num_steps": 32,
    "num_minibatches": 2,
    "update_epochs": 10,
    "lr": 3e-4,
    "gamma": 0.99,
    "gae_lambda": 0.95,
}

PRESETS: dict[str, dict] = {
    "HalfCheetah": {**_LOCOMOTION},
    "Hopper": {**_LOCOMOTION},
    "Walker2d": {**_LOCOMOTION},
    "Ant": {**_LOCOMOTION},
    "Humanoid": {**_LOCOMOTION, "hidden": (256, 256)},
    "HumanoidStandup": {**_LOCOMOTION, "hidden": (256, 256)},
    "Swimmer": {**_LOCOMOTION, "gamma": 0.9999},
    "Reacher": {**_LOCOMOTION},
    "Pusher": {**_LOCOMOTION},
    "InvertedPendulum": {**_LOCOMOTION},
    "InvertedDoublePendulum": {**_LOCOMOTION},
}


def preset_for(env_id: str) -> dict:
    """PPOConfig overrides for ``env_id`` ("Hopper-v5", "gymnasium/Hopper-v4", ...)."""
    name = re.sub(r"-v\d+$", "", env_id.rsplit("/", 1)[-1])
    return copy.deepcopy(PRESETS.get(name, {}))
