"""backward speed of the root, less a control cost."""

import torch


def compute_reward(state, action):
    back = -state.qvel[:, 0]
    ctrl = 0.1 * (action**2).sum(1)
    return back - ctrl, {"back": back, "ctrl": -ctrl}
