"""Expert reward for halfcheetah-target-speed: a peak at 2 m/s, a smooth pitch, little effort."""

import torch


def compute_reward(state, action):
    speed = state.body("torso").linvel[:, 0]
    # 1 at 2 m/s, falling off over ~0.5 m/s, with a linear term so a standing cheetah still feels the slope.
    on_speed = torch.exp(-((speed - 2.0) ** 2) / 0.25) - 0.2 * (speed - 2.0).abs()
    # A bouncing, pitching gait swings the speed within a stride: keep the torso's pitch rate low.
    steady = -0.02 * state.joint("rooty").qvel.abs()
    effort = -0.05 * (action**2).sum(dim=-1)
    return on_speed + steady + effort, {"on_speed": on_speed, "steady": steady, "effort": effort}
