"""height of the tip alone."""

import torch


def compute_reward(state, action):
    height = state.obs[:, 0]
    return height, {"height": height}
