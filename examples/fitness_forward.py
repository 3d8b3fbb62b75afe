"""An example fitness file (`--fitness`): mean forward speed of the torso over an episode."""

AGGREGATE = "mean"


def compute_fitness(state, action):
    return state.body("torso").linvel[:, 0]
