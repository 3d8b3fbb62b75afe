"""Expert reward for hopper-jump-high: pay the foot's height off the ground and the torso's upward speed."""

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
    # A small bonus for staying up: each jump is another try at the height, but standing still all episode
    # must not pay more than jumping.
    alive = 0.1 * torch.ones_like(torso.pos[:, 0])
    height = 20.0 * foot_clearance(state).clamp(min=0.0)
    launch = 0.5 * torso.linvel[:, 2].clamp(min=0.0)
    effort = -1e-3 * (action**2).sum(dim=-1)
    return alive + height + launch + effort, {"alive": alive, "height": height, "launch": launch, "effort": effort}
