"""Expert reward for halfcheetah-backflip: pay the backward pitch rate, a little height, and charge the effort."""

import torch


def compute_reward(state, action):
    # rooty's velocity is negative when the cheetah rotates nose-up and over backwards.
    spin = -state.joint("rooty").qvel.clamp(min=-15.0, max=15.0)
    # Height of the torso above its resting ~0.6 m: a flip needs air.
    height = 1.0 * (state.body("torso").pos[:, 2] - 0.6).clamp(min=0.0)
    effort = -0.1 * (action**2).sum(dim=-1)
    return spin + height + effort, {"backward_spin": spin, "height": height, "effort": effort}
