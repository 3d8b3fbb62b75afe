"""Expert reward for halfcheetah-run-backwards: HalfCheetah-v5's own reward with the speed's sign turned."""


def compute_reward(state, action):
    backward = -state.body("torso").linvel[:, 0]  # m/s towards -x
    effort = -0.1 * (action**2).sum(dim=-1)
    return backward + effort, {"backward_speed": backward, "effort": effort}
