"""wrong sign: rewards moving away from the target."""

import torch


def compute_reward(state, action):
    gap = (state.body("fingertip").pos[:, :2] - state.body("target").pos[:, :2]).norm(dim=-1)
    return gap, {"away": gap}
