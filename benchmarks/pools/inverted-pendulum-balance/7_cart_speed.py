"""rewards moving the cart fast."""

import torch


def compute_reward(state, action):
    speed = state.obs[:, 2].abs()
    return speed, {"speed": speed}
