"""Expert reward for ant-spin: pay the yaw rate, charge distance from the start and effort."""

import torch


def compute_reward(state, action):
    torso = state.body("torso")
    yaw_rate = torso.angvel[:, 2].clamp(max=10.0)  # rad/s, counterclockwise seen from above
    stay = -0.5 * torso.pos[:, :2].norm(dim=-1)
    alive = torch.ones_like(yaw_rate)
    effort = -0.5 * (action**2).sum(dim=-1)
    return yaw_rate + stay + alive + effort, {"yaw_rate": yaw_rate, "stay": stay, "alive": alive, "effort": effort}
