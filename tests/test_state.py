"""State's named views agree with MuJoCo's own arrays."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from reward_designer.state import State, layout_from_model, snapshot, state_pair


@pytest.fixture(scope="module")
def cheetah():
    env = gym.make("HalfCheetah-v5")
    env.reset(seed=0)
    u = env.unwrapped
    before = snapshot([u.data], u._get_obs()[None])
    env.step(env.action_space.sample())
    now = snapshot([u.data], u._get_obs()[None])
    return u, layout_from_model(u.model), before, now


def test_named_access_matches_mujoco(cheetah):
    u, layout, before, now = cheetah
    s = state_pair(before, now, layout, u.dt)
    torso = u.model.body("torso").id
    np.testing.assert_allclose(s.body("torso").pos[0].numpy(), u.data.xpos[torso], rtol=1e-5, atol=1e-6)
    j = u.model.joint("bthigh")
    assert s.joint("bthigh").qpos.shape == (1,)
    np.testing.assert_allclose(s.joint("bthigh").qpos.numpy(), u.data.qpos[j.qposadr], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s.joint("bthigh").qvel.numpy(), u.data.qvel[j.dofadr], rtol=1e-5, atol=1e-6)
    expected = (now["xpos"][0, torso] - before["xpos"][0, torso]) / u.dt
    np.testing.assert_allclose(s.body("torso").linvel[0].numpy(), expected, rtol=1e-4, atol=1e-4)
    assert s.prev is not None and s.prev.prev is None and s.dt == pytest.approx(0.05)


def test_unknown_name_lists_the_known_ones(cheetah):
    u, layout, before, now = cheetah
    with pytest.raises(KeyError, match="torso"):
        State(now, layout, u.dt).body("head")


def test_writes_into_the_state_change_nothing_outside(cheetah):
    u, layout, before, now = cheetah
    kept = now["qpos"].copy()
    s = State(now, layout, u.dt)
    s.qpos.add_(100.0)
    assert np.array_equal(now["qpos"], kept)


def test_non_mujoco_state_has_only_obs():
    s = State({"obs": np.zeros((3, 2))}, None, 0.05)
    assert s.obs.shape == (3, 2) and s.obs.dtype == torch.float32
    with pytest.raises(AttributeError, match="qpos"):
        _ = s.qpos


def test_the_previous_state_has_no_linvel_rather_than_zeros(cheetah):
    u, layout, before, now = cheetah
    s = state_pair(before, now, layout, u.dt)
    assert s.body("torso").linvel.abs().sum() > 0
    with pytest.raises(ValueError, match="state.prev has no prev"):
        s.prev.body("torso").linvel
