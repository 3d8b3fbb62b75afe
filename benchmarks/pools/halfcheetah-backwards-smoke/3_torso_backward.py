"""backward speed of the torso body."""

import torch


def compute_reward(state, action):
    back = -state.body("torso").linvel[:, 0]
    return back, {"back": back}
