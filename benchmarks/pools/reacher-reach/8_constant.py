"""a constant: nothing to learn."""

import torch


def compute_reward(state, action):
    one = torch.ones(action.shape[0])
    return one, {"one": one}
