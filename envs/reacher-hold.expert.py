"""Expert reward for reacher-hold: Reacher-v5's own reward (distance and effort), a sharp bonus for being on
the target, and a charge for moving there."""

import torch


def compute_reward(state, action):
    tip = state.body("fingertip")
    gap = (tip.pos[:, :2] - state.body("target").pos[:, :2]).norm(dim=-1)
    reach = -gap
    on_target = 0.2 * torch.exp(-((gap / 0.02) ** 2))  # worth ~0.07 at 2 cm, 0.2 on the target
    # Motion counts against it only near the target: it has to get there first.
    still = -0.1 * tip.linvel[:, :2].norm(dim=-1) * (gap < 0.05).float()
    effort = -(action**2).sum(dim=-1)
    return reach + on_target + still + effort, {"reach": reach, "on_target": on_target, "still": still,
                                                "effort": effort}
