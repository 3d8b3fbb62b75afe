"""Expert reward for ant-run-backwards: Ant-v5's own reward (less its contact cost) with the speed's sign turned."""

import torch


def compute_reward(state, action):
    backward = -state.body("torso").linvel[:, 0]  # m/s towards -x
    alive = torch.ones_like(backward)  # the env ends the episode when the torso leaves 0.2-1.0 m
    effort = -0.5 * (action**2).sum(dim=-1)
    return backward + alive + effort, {"backward_speed": backward, "alive": alive, "effort": effort}
