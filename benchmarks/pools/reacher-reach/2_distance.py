"""distance to the target alone."""

import torch


def compute_reward(state, action):
    gap = (state.body("fingertip").pos[:, :2] - state.body("target").pos[:, :2]).norm(dim=-1)
    return -gap, {"distance": -gap}
