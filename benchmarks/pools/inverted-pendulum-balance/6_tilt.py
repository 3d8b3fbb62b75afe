"""rewards tilting the pole (which ends the episode)."""

import torch


def compute_reward(state, action):
    tilt = state.obs[:, 1].abs()
    return tilt, {"tilt": tilt}
