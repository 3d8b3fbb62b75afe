"""The worker's per-step reward (StepReward): what every candidate's training calls on the whole batch."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from reward_designer.vecsim import make_vecsim
from reward_designer.worker import ProgramError, StepReward

N = 4


@pytest.fixture(scope="module")
def pair():
    sim = make_vecsim("InvertedPendulum-v5", N, seed=0)
    sim.reset(0)
    prev = sim.physics()
    sim.step(np.zeros((N, 1)))
    yield sim, prev, sim.physics()
    sim.close()


def step_reward(sim, program, fitness=None, aggregate="sum") -> StepReward:
    return StepReward(program, fitness, aggregate, sim.layout, sim.dt, N, "cpu")


def test_components_and_fitness_are_metered_per_episode(pair):
    sim, prev, now = pair
    ones = torch.ones(N)

    def program(state, action):
        return 3 * ones, {"a": ones, "b": 2 * ones}

    reward = step_reward(sim, program, fitness=lambda state, action: ones)
    actions = torch.zeros(N, 1)
    running = np.zeros(N, bool)
    for _ in range(3):
        assert torch.equal(reward(prev, now, actions, running), 3 * ones)
    assert reward.episode_means() == {}  # no episode has ended
    reward(prev, now, actions, np.array([True, False, False, False]))
    assert reward.episode_means() == {"fitness": 4.0, "component/a": 1.0, "component/b": 2.0}
    assert reward.episode_means() == {}  # each ended episode is reported once
    reward(prev, now, actions, torch.tensor([False, True, False, False]))  # a done mask from a device batch
    assert reward.episode_means()["fitness"] == 5.0


def test_a_rare_nonfinite_reward_is_zeroed_and_a_habit_fails(pair):
    sim, prev, now = pair

    def program(state, action):
        r = torch.tensor([1.0, float("nan"), float("inf"), 1.0])
        return r, {"r": r}

    reward = step_reward(sim, program)
    actions, running = torch.zeros(N, 1), np.zeros(N, bool)
    assert torch.equal(reward(prev, now, actions, running), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    with pytest.raises(ProgramError, match="NaN or infinite on more than 1%"):
        for _ in range(100):
            reward(prev, now, actions, running)


def test_huge_finite_rewards_are_kept(pair):
    sim, prev, now = pair
    huge = torch.full((N,), 3e38)  # their float32 sum overflows; no value is non-finite

    reward = step_reward(sim, lambda state, action: (huge, {"h": huge}))
    assert torch.equal(reward(prev, now, torch.zeros(N, 1), np.zeros(N, bool)), huge)
    assert reward.nonfinite == 0


def test_the_env_reward_leaves_the_fitness_metered(pair):
    sim, prev, now = pair
    reward = step_reward(sim, None, fitness=lambda state, action: torch.arange(N).float(), aggregate="max")
    assert reward(prev, now, torch.zeros(N, 1), np.ones(N, bool)) is None
    assert reward.episode_means() == {"fitness": 1.5}
