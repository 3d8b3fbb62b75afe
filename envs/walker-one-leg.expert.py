"""Expert reward for walker-one-leg: stay alive with the left foot up, standing still."""

import torch

FOOT_ENDS = ((0.0, 0.1), (-0.2, 0.1))  # Walker2d-v5's foot capsules, in the foot's frame (x, z)
FOOT_RADIUS = 0.06


def clearance(state, name):
    foot = state.body(name)
    w, x, y, z = foot.quat.unbind(-1)
    r20, r22 = 2 * (x * z - w * y), 1 - 2 * (x * x + y * y)
    ends = [foot.pos[:, 2] + r20 * px + r22 * pz for px, pz in FOOT_ENDS]
    return torch.minimum(ends[0], ends[1]) - FOOT_RADIUS


def compute_reward(state, action):
    alive = torch.ones_like(state.body("torso").pos[:, 0])  # the env ends the episode at a fall
    # Up to 2 per step for a 20 cm lift of the left foot; nothing for the right one.
    lift = 10.0 * clearance(state, "foot_left").clamp(min=0.0, max=0.2)
    still = -0.5 * state.body("torso").linvel[:, 0].abs()
    effort = -1e-3 * (action**2).sum(dim=-1)
    return alive + lift + still + effort, {"alive": alive, "left_foot_lift": lift, "still": still, "effort": effort}
