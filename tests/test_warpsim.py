"""The MuJoCo Warp simulator: gymnasium's semantics step by step, and the
collector and trainer on a batch whose arrays are torch tensors. On Warp's CPU
backend, and on a GPU too where there is one (the ``device`` fixture)."""

import sys

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.registration import EnvSpec

from reward_designer import state as st
from reward_designer.ppo import Collector, PPOConfig, make_policy, train
from reward_designer.sim import SimBase, StepOut, VecSim, make_vecsim

pytest.importorskip("mujoco_warp")
pytestmark = pytest.mark.filterwarnings("ignore")


@pytest.fixture(params=["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def device(request):
    return request.param


def warp_sim(env_id, n, seed=0, device="cpu", **env_kwargs):
    return make_vecsim(env_id, n, seed=seed, env_kwargs=env_kwargs or None, backend="warp", device=device)


def host(x):
    return x.cpu().numpy()


def replay(env_id, device, n=6, steps=60, **env_kwargs):
    """Step the Warp batch; replay each world's step in gymnasium from the same state and
    action and compare. Warp is float32 and its own solver, so each step is compared from
    a common start, not whole trajectories. Returns (terminations, truncations) seen."""
    sim = warp_sim(env_id, n, seed=3, device=device, **env_kwargs)
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
        out = sim.step(torch.from_numpy(actions).to(device))
        now = sim.physics()
        elapsed += 1
        for i in range(n):
            where = f"{env_id} step {t} world {i}"
            ref.set_state(host(before["qpos"][i]).astype(float), host(before["qvel"][i]).astype(float))
            o, r, term, _, _ = ref.step(actions[i])
            np.testing.assert_allclose(host(out.physics["obs"][i]), o, rtol=1e-3, atol=1e-3, err_msg=where)
            np.testing.assert_allclose(host(out.physics["qpos"][i]), ref.data.qpos, rtol=1e-3, atol=1e-3,
                                       err_msg=where)
            assert float(out.env_reward[i]) == pytest.approx(r, rel=1e-3, abs=1e-3), where
            assert bool(out.terminated[i]) == term, where
            assert bool(out.truncated[i]) == (elapsed[i] >= limit), where
            if term or elapsed[i] >= limit:
                terminations += term
                truncations += not term
                elapsed[i] = 0
                # A new episode: the initial state plus gymnasium's reset noise.
                assert np.abs(host(now["qpos"][i]) - ref.init_qpos).max() <= noise + 1e-6, where
                if not sim.port.normal_qvel:
                    assert np.abs(host(now["qvel"][i]) - ref.init_qvel).max() <= noise + 1e-6, where
                assert not np.allclose(host(now["qpos"][i]), host(out.physics["qpos"][i])), where
            else:
                np.testing.assert_array_equal(host(now["qpos"][i]), host(out.physics["qpos"][i]), err_msg=where)
            np.testing.assert_array_equal(host(out.obs[i]), host(now["obs"][i]), err_msg=where)
    sim.close()
    return terminations, truncations


def test_hopper_matches_gymnasium_step_by_step_with_resets(device):
    terminations, truncations = replay("Hopper-v5", device, steps=60, max_episode_steps=25)
    assert terminations > 0 and truncations > 0


def test_halfcheetah_matches_gymnasium_step_by_step(device):
    _, truncations = replay("HalfCheetah-v5", device, n=4, steps=30, max_episode_steps=20)
    assert truncations == 4


def test_reset_is_seeded_and_keeps_the_arrays_on_the_device(device):
    sim = warp_sim("Hopper-v5", 4, device=device)
    # The contract's device is a torch.device (tensors out), even on Warp's CPU backend.
    assert isinstance(sim, VecSim) and isinstance(sim.device, torch.device) and sim.device.type == device
    first, again, other = sim.reset(5), sim.reset(5), sim.reset(6)
    assert isinstance(first, torch.Tensor) and first.device.type == device
    torch.testing.assert_close(first, again)
    assert not torch.equal(first, other)
    assert len({tuple(row.tolist()) for row in first}) == 4  # each world its own noise


def test_refuses_what_it_cannot_run(monkeypatch):
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "mujoco_warp", None)  # as if the extra were not installed
        with pytest.raises(ImportError, match=r"pip install 'reward-designer\[warp\]'"):
            warp_sim("Hopper-v5", 2)
    with pytest.raises(ValueError, match="'cpu' or 'cuda'"):
        warp_sim("Hopper-v5", 2, device="meta")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no CUDA device"):
            warp_sim("Hopper-v5", 2, device="cuda")
    with pytest.raises(ValueError, match="standard gymnasium MuJoCo envs"):
        warp_sim("InvertedPendulum-v5", 2)  # no port: its own step()
    spec = EnvSpec("ScaledHopper-v0", max_episode_steps=1000,
                   entry_point=lambda **kw: gym.wrappers.TransformReward(HopperEnv(**kw), lambda r: 10.0 * r))
    monkeypatch.setitem(gym.envs.registry, spec.id, spec)
    with pytest.raises(ValueError, match="wrapped in TransformReward, which it would drop"):
        warp_sim(spec.id, 2)  # a Hopper, but its reward is the wrapper's
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
        return host(self.sim.reset(seed).double())

    def physics(self):
        return {k: host(v.double()) for k, v in self.sim.physics().items()}

    def send(self, actions):
        self.sim.send(torch.as_tensor(actions))

    def recv(self):
        out = self.sim.recv()
        return StepOut(host(out.obs.double()), host(out.env_reward), host(out.terminated),
                       host(out.truncated), {k: host(v.double()) for k, v in out.physics.items()})


def forward_speed(prev, now, actions, done):
    """A reward program's view: ``State`` over the snapshots, numpy or torch alike."""
    state = st.state_pair(prev, now, None, 0.008, device=actions.device)
    return state.qvel[:, 0] - 0.1 * actions.square().sum(1)


@pytest.mark.parametrize("reward_fn", [None, forward_speed])
def test_collector_on_device_matches_the_numpy_collector(reward_fn, device):
    """The same rollout, once in torch on the batch's tensors and once in numpy on host copies.
    The policy's noise is ~1e-9, so both take the same actions whatever their generators draw."""
    rollouts = []
    for on_device in (True, False):
        cfg = PPOConfig(hidden=(16, 16), log_std_init=-20.0, seed=1, device=device if on_device else "cpu")
        sim = warp_sim("Hopper-v5", 6, device=device, max_episode_steps=30)
        policy = make_policy(sim, cfg)
        collector = Collector(sim if on_device else OnHost(sim), policy, cfg, reward_fn)
        assert collector.on_device == on_device
        rollouts.append((collector.collect(25), collector.collect(25)))
    assert rollouts[0][1].dones.sum() >= 6 and len(rollouts[0][1].episode_returns) >= 6  # the time limit, at least
    for device_ro, host_ro in zip(*rollouts):
        for k in ("obs", "actions", "rewards", "dones", "values", "last_value"):
            torch.testing.assert_close(getattr(device_ro, k).cpu(), getattr(host_ro, k), rtol=1e-3, atol=1e-3, msg=k)
        np.testing.assert_allclose(device_ro.episode_returns, host_ro.episode_returns, rtol=1e-3)
        assert device_ro.episode_lengths == host_ro.episode_lengths
        assert device_ro.train_reward == pytest.approx(host_ro.train_reward, rel=1e-3, abs=1e-3)


def test_train_on_the_warp_batch(device):
    cfg = PPOConfig(num_steps=16, num_minibatches=4, update_epochs=2, total_steps=3 * 32 * 16, seed=0, device=device)
    sim = warp_sim("Hopper-v5", 32, device=device)
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
