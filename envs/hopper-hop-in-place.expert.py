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
    clearance = foot_clearance(state)
    # Paid only while bouncing (the torso moving up or down, or the foot off the ground): standing still for
    # the whole episode, the easy way to collect a plain alive bonus, earns nothing.
    bouncing = ((torso.linvel[:, 2].abs() > 0.3) | (clearance > 0.02)).float()
    # Up to 2 per step for a 20 cm clearance: hops, not a stance on tiptoe (the foot's lowest point counts).
    hop = 10.0 * clearance.clamp(min=0.0, max=0.2)
    stay = -2.0 * torso.pos[:, 0].abs() - 0.5 * torso.linvel[:, 0].abs()
    effort = -1e-3 * (action**2).sum(dim=-1)
    return bouncing + hop + stay + effort, {"bouncing": bouncing, "hop": hop, "stay": stay, "effort": effort}
