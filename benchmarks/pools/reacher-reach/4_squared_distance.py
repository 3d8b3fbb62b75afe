"""squared distance to the target."""

import torch


def compute_reward(state, action):
    gap = (state.body("fingertip").pos[:, :2] - state.body("target").pos[:, :2]).norm(dim=-1)
    cost = -10.0 * gap**2
    return cost, {"distance": cost}
