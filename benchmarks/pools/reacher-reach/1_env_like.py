"""distance to the target, less a control cost: the env's own reward."""

import torch


def compute_reward(state, action):
    gap = (state.body("fingertip").pos[:, :2] - state.body("target").pos[:, :2]).norm(dim=-1)
    ctrl = (action**2).sum(1)
    return -gap - ctrl, {"distance": -gap, "ctrl": -ctrl}
