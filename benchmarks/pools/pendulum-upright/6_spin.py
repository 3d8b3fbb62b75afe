"""rewards spinning fast."""

import torch


def compute_reward(state, action):
    spin = state.obs[:, 2].abs()
    return spin, {"spin": spin}
