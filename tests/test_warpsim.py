"""The MuJoCo Warp simulator, on Warp's CPU backend here: gymnasium's semantics
step by step, and the collector and trainer on a batch whose arrays are torch tensors."""

import gymnasium as gym
import numpy as np
import pytest
import torch

from reward_designer import state as st
from reward_designer.ppo import Collector, PPOConfig, make_policy, train
from reward_designer.vecsim import SimBase, StepOut, make_vecsim

pytest.importorskip("mujoco_warp")
pytestmark = pytest.mark.filterwarnings("ignore")


def warp_sim(env_id, n, seed=0, **env_kwargs):
    return make_vecsim(env_id, n, seed=seed, env_kwargs=env_kwargs or None, backend="warp", device="cpu")


def replay(env_id, n=6, steps=60, **env_kwargs):
    """Step the Warp batch; replay each world's step in gymnasium from the same state and
    action and compare. Warp is float32 and its own solver, so each step is compared from
    a common start, not whole trajectories. Returns (terminations, truncations) seen."""
    sim = warp_sim(env_id, n, seed=3, **env_kwargs)
    ref = gym.make(env_id).unwrapped
    ref.reset(seed=0)
    noise, limit = ref._reset_noise_scale, sim.max_episode_steps
    sim.reset()
    rng = np.random.default_rng(0)
    elapsed = np.zeros(n, dtype=int)
    terminations = truncations = 0
    for t in range(steps):
        before = sim.physics()
        actions = rng.uniform(-1, 1, (n,) + sim.action_space.shape).astype(np.float32)
        out = sim.step(torch.from_numpy(actions))
        now = sim.physics()
        elapsed += 1
        for i in range(n):
            where = f"{env_id} step {t} world {i}"
            ref.set_state(before["qpos"][i].double().numpy(), before["qvel"][i].double().numpy())
            o, r, term, _, _ = ref.step(actions[i])
            np.testing.assert_allclose(out.physics["obs"][i].numpy(), o, rtol=1e-3, atol=1e-3, err_msg=where)
            np.testing.assert_allclose(out.physics["qpos"][i].numpy(), ref.data.qpos, rtol=1e-3, atol=1e-3,
                                       err_msg=where)
            assert float(out.env_reward[i]) == pytest.approx(r, rel=1e-3, abs=1e-3), where
            assert bool(out.terminated[i]) == term, where
            assert bool(out.truncated[i]) == (elapsed[i] >= limit), where
            if term or elapsed[i] >= limit:
                terminations += term
                truncations += not term
                elapsed[i] = 0
                # A new episode: the initial state plus gymnasium's reset noise.
                assert np.abs(now["qpos"][i].numpy() - ref.init_qpos).max() <= noise + 1e-6, where
                if not sim.kernel.normal_qvel:
                    assert np.abs(now["qvel"][i].numpy() - ref.init_qvel).max() <= noise + 1e-6, where
                assert not np.allclose(now["qpos"][i].numpy(), out.physics["qpos"][i].numpy()), where
            else:
                np.testing.assert_array_equal(now["qpos"][i], out.physics["qpos"][i], err_msg=where)
            np.testing.assert_array_equal(out.obs[i], now["obs"][i], err_msg=where)
    sim.close()
    return terminations, truncations


def test_hopper_matches_gymnasium_step_by_step_with_resets():
    terminations, truncations = replay("Hopper-v5", steps=60, max_episode_steps=25)
    assert terminations > 0 and truncations > 0


def test_halfcheetah_matches_gymnasium_step_by_step():
    _, truncations = replay("HalfCheetah-v5", n=4, steps=30, max_episode_steps=20)
    assert truncations == 4


def test_reset_is_seeded_and_keeps_the_arrays_on_the_device():
    sim = warp_sim("Hopper-v5", 4)
    first, again, other = sim.reset(5), sim.reset(5), sim.reset(6)
    assert isinstance(first, torch.Tensor) and first.device.type == "cpu"
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert len({tuple(row.tolist()) for row in first}) == 4  # each world its own noise


def test_refuses_what_it_cannot_run():
    with pytest.raises(ValueError, match="standard gymnasium MuJoCo envs"):
        warp_sim("InvertedPendulum-v5", 2)  # no vecsim kernel: its own step()
    with pytest.raises(ValueError, match="MuJoCo Warp cannot simulate Humanoid-v5"):
        warp_sim("Humanoid-v5", 2)  # its PGS solver
    sim = warp_sim("Hopper-v5", 2)
    with pytest.raises(RuntimeError, match="reset"):
        sim.send(torch.zeros(2, 3))
    sim.reset()
    with pytest.raises(RuntimeError, match="no step in flight"):
        sim.recv()
    sim.send(torch.zeros(2, 3))
    with pytest.raises(RuntimeError, match="in flight"):
        sim.send(torch.zeros(2, 3))


class OnHost(SimBase):
    """The same Warp batch as numpy arrays: what the CPU collector takes."""

    def __init__(self, sim):
        self.sim = sim
        for k in ("num_envs", "observation_space", "action_space", "layout", "dt"):
            setattr(self, k, getattr(sim, k))

    def reset(self, seed=None):
        return self.sim.reset(seed).double().numpy()

    def physics(self):
        return {k: v.double().numpy() for k, v in self.sim.physics().items()}

    def send(self, actions):
        self.sim.send(torch.as_tensor(actions))

    def recv(self):
        out = self.sim.recv()
        return StepOut(out.obs.double().numpy(), out.env_reward.numpy(), out.terminated.numpy(),
                       out.truncated.numpy(), {k: v.double().numpy() for k, v in out.physics.items()})


def forward_speed(prev, now, actions, done):
    """A reward program's view: ``State`` over the snapshots, numpy or torch alike."""
    state = st.state_pair(prev, now, None, 0.008)
    return state.qvel[:, 0] - 0.1 * actions.square().sum(1)


@pytest.mark.parametrize("reward_fn", [None, forward_speed])
def test_collector_on_device_matches_the_numpy_collector(reward_fn):
    """The same rollout, once in torch on the batch's tensors and once in numpy on host copies.
    The policy's noise is ~1e-9, so both take the same actions whatever their generators draw."""
    cfg = PPOConfig(hidden=(16, 16), log_std_init=-20.0, seed=1)
    rollouts = []
    for on_device in (True, False):
        sim = warp_sim("Hopper-v5", 6, max_episode_steps=30)
        policy = make_policy(sim, cfg)
        collector = Collector(sim if on_device else OnHost(sim), policy, cfg, reward_fn)
        assert collector.on_device == on_device
        rollouts.append((collector.collect(25), collector.collect(25)))
    assert rollouts[0][1].dones.sum() >= 6 and len(rollouts[0][1].episode_returns) >= 6  # the time limit, at least
    for device_ro, host_ro in zip(*rollouts):
        for k in ("obs", "actions", "rewards", "dones", "values", "last_value"):
            torch.testing.assert_close(getattr(device_ro, k), getattr(host_ro, k), rtol=1e-3, atol=1e-3, msg=k)
        np.testing.assert_allclose(device_ro.episode_returns, host_ro.episode_returns, rtol=1e-3)
        assert device_ro.episode_lengths == host_ro.episode_lengths
        assert device_ro.train_reward == pytest.approx(host_ro.train_reward, rel=1e-3, abs=1e-3)


def test_train_on_the_warp_batch():
    cfg = PPOConfig(num_steps=16, num_minibatches=4, update_epochs=2, total_steps=3 * 32 * 16, seed=0)
    sim = warp_sim("Hopper-v5", 32)
    stats = []
    policy = train(sim, cfg, on_iteration=stats.append)
    first = make_policy(sim, cfg)
    assert [s["iteration"] for s in stats] == [1, 2, 3]
    assert stats[-1]["episodes"] > 0 and np.isfinite(stats[-1]["episode_return"])
    assert all(np.isfinite(s["value_loss"]) for s in stats)
    assert not torch.equal(policy.actor[0].weight, first.actor[0].weight)


def test_the_batch_and_the_policy_must_share_a_device():
    sim = warp_sim("Hopper-v5", 2)
    sim.device = torch.device("meta")  # as a batch on a GPU would be, beside a policy on the CPU
    with pytest.raises(ValueError, match="same device"):
        Collector(sim, make_policy(sim, PPOConfig()), PPOConfig(), None)
