"""Expert reward for ant-sideways: Ant-v5's reward turned to +y, with drift along x charged."""

import torch


def compute_reward(state, action):
    velocity = state.body("torso").linvel
    sideways = velocity[:, 1]
    drift = -0.5 * velocity[:, 0].abs()
    alive = torch.ones_like(sideways)
    effort = -0.5 * (action**2).sum(dim=-1)
    return sideways + drift + alive + effort, {"sideways_speed": sideways, "x_drift": drift, "alive": alive,
                                               "effort": effort}
