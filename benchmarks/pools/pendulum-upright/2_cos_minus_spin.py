"""height of the tip, less a spin penalty."""

import torch


def compute_reward(state, action):
    height = state.obs[:, 0]
    spin = 0.05 * state.obs[:, 2] ** 2
    return height - spin, {"height": height, "spin": -spin}
