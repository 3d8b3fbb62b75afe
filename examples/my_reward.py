"""An example reward program for HalfCheetah-v5: `reward-designer check examples/my_reward.py --env HalfCheetah-v5`."""

import torch


def compute_reward(state, action):
    forward = state.body("torso").linvel[:, 0]
    ctrl_cost = -0.1 * (action**2).sum(dim=-1)
    return forward + ctrl_cost, {"forward": forward, "ctrl_cost": ctrl_cost}
