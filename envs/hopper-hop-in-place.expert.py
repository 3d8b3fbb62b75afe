"""Expert reward for hopper-hop-in-place: stay alive, get the foot off the ground, stay over the start."""

import torch

FOOT_ENDS = ((0.13, 0.1), (-0.26, 0.1))  # Hopper-v5's foot capsule, in the foot's frame (x, z)
FOOT_RADIUS = 0.06


def foot_clearance(state):
    foot = state.body("foot")
    w, x, y, z = foot.quat.unbind(-1)
    r20, r22 = 2 * (x * z - w * y), 1 - 2 * (x * x + y * y)
    ends = [foot.pos[:, 2] + r20 * px + r22 * pz for px, pz in FOOT_ENDS]
    return torch.minimum(ends[0], ends[1]) - FOOT_RADIUS


def compute_reward(state, action):
    torso = state.body("torso")
    alive = torch.ones_like(torso.pos[:, 0])  # the env ends the episode at a fall
    # Up to 1 per step for a 10 cm clearance: hops, not a stance on tiptoe.
    hop = 10.0 * foot_clearance(state).clamp(min=0.0, max=0.1)
    stay = -2.0 * torso.pos[:, 0].abs() - 0.5 * torso.linvel[:, 0].abs()
    effort = -1e-3 * (action**2).sum(dim=-1)
    return alive + hop + stay + effort, {"alive": alive, "hop": hop, "stay": stay, "effort": effort}
