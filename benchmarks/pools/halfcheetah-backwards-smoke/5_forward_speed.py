"""wrong sign: forward speed."""

import torch


def compute_reward(state, action):
    forward = state.qvel[:, 0]
    return forward, {"forward": forward}
