"""Expert reward for reacher-hold: Reacher-v5's distance reward, a bonus on target, a charge for moving there."""


def compute_reward(state, action):
    tip = state.body("fingertip")
    gap = (tip.pos[:, :2] - state.body("target").pos[:, :2]).norm(dim=-1)
    reach = -10.0 * gap
    on_target = (gap < 0.02).float()
    # Motion counts against it only near the target: it has to get there first.
    still = -1.0 * tip.linvel[:, :2].norm(dim=-1) * (gap < 0.05).float()
    effort = -0.1 * (action**2).sum(dim=-1)
    return reach + on_target + still + effort, {"reach": reach, "on_target": on_target, "still": still,
                                                "effort": effort}
