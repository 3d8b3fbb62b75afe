"""closeness of the pole to upright."""

import torch


def compute_reward(state, action):
    angle = state.obs[:, 1]
    upright = 1.0 - 10.0 * angle**2
    return upright, {"upright": upright}
