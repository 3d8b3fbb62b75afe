"""backward speed, capped at 1 m/s."""

import torch


def compute_reward(state, action):
    back = (-state.qvel[:, 0]).clamp(max=1.0)
    return back, {"back": back}
