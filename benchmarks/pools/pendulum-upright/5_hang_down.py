"""wrong sign: rewards hanging down."""

import torch


def compute_reward(state, action):
    low = -state.obs[:, 0]
    return low, {"low": low}
