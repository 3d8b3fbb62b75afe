"""wrong sign: -1 per step, so falling early pays."""

import torch


def compute_reward(state, action):
    cost = -torch.ones(action.shape[0])
    return cost, {"cost": cost}
