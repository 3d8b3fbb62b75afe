"""1 within about 18 degrees of upright, else 0 (sparse)."""

import torch


def compute_reward(state, action):
    upright = (state.obs[:, 0] > 0.95).float()
    return upright, {"upright": upright}
