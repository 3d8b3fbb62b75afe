"""only a control cost."""

import torch


def compute_reward(state, action):
    ctrl = -(action**2).sum(1)
    return ctrl, {"ctrl": ctrl}
