"""backward speed of the root."""

import torch


def compute_reward(state, action):
    back = -state.qvel[:, 0]
    return back, {"back": back}
