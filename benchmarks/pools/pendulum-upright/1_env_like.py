"""Pendulum's own cost: angle from upright, spin and torque."""

import torch


def compute_reward(state, action):
    cos, sin, speed = state.obs[:, 0], state.obs[:, 1], state.obs[:, 2]
    angle = torch.atan2(sin, cos)
    reward = -(angle**2 + 0.1 * speed**2 + 0.001 * (action**2).sum(1))
    return reward, {"angle": -angle**2, "spin": -0.1 * speed**2}
