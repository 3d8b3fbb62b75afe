"""PPO: GAE, truncation bootstrap, the reward_fn contract, seeding, learning, checkpoints."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box

from reward_designer.policy import ArrayNets, Policy, torch_device
from reward_designer.ppo import Batch, Collector, FlatAdam, Learner, PPOConfig, compute_gae, make_policy, ppo_gradient, train
from reward_designer.presets import PRESETS, batch_steps, parse_overrides, preset_for
from reward_designer.sim import SimBase, StepOut, make_vecsim

pytestmark = pytest.mark.filterwarnings("ignore")


def test_gae_hand_computed():
    # gamma 0.9, lambda 0.8; the episode ends with transition 1.
    # t=2: delta = 3 + .9*2.0 - 1.5 = 3.3                  A = 3.3
    # t=1: delta = 2 - 1.0 = 1.0 (no bootstrap past done)  A = 1.0
    # t=0: delta = 1 + .9*1.0 - .5 = 1.4                   A = 1.4 + .9*.8*1.0 = 2.12
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[0.5], [1.0], [1.5]])
    dones = torch.tensor([[0.0], [1.0], [0.0]])
    adv, ret = compute_gae(rewards, values, dones, torch.tensor([2.0]), gamma=0.9, gae_lambda=0.8)
    torch.testing.assert_close(adv[:, 0], torch.tensor([2.12, 1.0, 3.3]))
    torch.testing.assert_close(ret[:, 0], torch.tensor([2.62, 2.0, 4.8]))


class ScriptedSim(SimBase):
    """Two envs, obs [3]: env 0 is truncated and env 1 terminated at their 2nd
    step. Observations encode (env, step, phase) so every snapshot is distinct."""

    num_envs = 2
    observation_space = Box(-np.inf, np.inf, (3,))
    action_space = Box(-1.0, 1.0, (1,))
    layout = None
    dt = 0.1

    def _obs(self, phase):
        return np.array([[i, self.t, phase] for i in range(2)], dtype=np.float64)

    def reset(self, seed=None):
        self.t = 0
        self.current = self._obs(0.0)
        return self.current.copy()

    def physics(self):
        return {"obs": self.current.copy()}

    def send(self, actions):
        pass

    def recv(self):
        self.t += 1
        final = self._obs(1.0)  # the state the step ended in
        ended = self.t == 2
        truncated = np.array([ended, False])
        terminated = np.array([False, ended])
        self.current = self._obs(-5.0) if ended else final  # autoreset: a new first state
        return StepOut(self.current.copy(), np.ones(2), terminated, truncated, {"obs": final})


def scripted_collect(reward_fn=None):
    sim = ScriptedSim()
    cfg = PPOConfig(gamma=0.9, norm_obs=False, norm_return=False)
    policy = make_policy(sim, cfg)
    collector = Collector(sim, policy, cfg, reward_fn)
    return sim, policy, collector.collect(3)


def test_truncation_bootstraps_the_final_observation_and_termination_does_not():
    sim, policy, ro = scripted_collect()
    final_env0 = torch.tensor([[0.0, 2.0, 1.0]])  # env 0 at step 2, before its reset
    with torch.no_grad():
        bootstrap = 0.9 * policy.critic(final_env0)[0, 0]
    torch.testing.assert_close(ro.rewards[1, 0], 1.0 + bootstrap)
    assert ro.rewards[1, 1] == 1.0  # terminated: no bootstrap
    assert ro.rewards[0].tolist() == [1.0, 1.0] and ro.rewards[2].tolist() == [1.0, 1.0]
    assert ro.dones[:, 0].tolist() == [0.0, 1.0, 0.0] and ro.dones[:, 1].tolist() == [0.0, 1.0, 0.0]
    # the obs after the reset is what the policy saw next (phase -5)
    assert ro.obs[2, :, 2].tolist() == [-5.0, -5.0]
    assert ro.episode_returns == [2.0, 2.0] and ro.episode_lengths == [2, 2]


def test_reward_fn_sees_the_step_before_and_after():
    seen = []

    def reward_fn(prev, now, actions, done):
        seen.append((prev["obs"].copy(), now["obs"].copy(), done.copy()))
        assert isinstance(actions, torch.Tensor) and actions.shape == (2, 1)
        assert actions.abs().max() <= 1.0  # clipped to the action space
        return torch.tensor(now["obs"][:, 1] * 10.0)

    _, _, ro = scripted_collect(reward_fn)
    (p0, n0, d0), (p1, n1, d1), (p2, n2, d2) = seen
    assert p0[:, 1:].tolist() == [[0, 0], [0, 0]] and n0[:, 1:].tolist() == [[1, 1], [1, 1]]
    assert n1[:, 1:].tolist() == [[2, 1], [2, 1]] and d1.tolist() == [True, True]  # final states
    assert p2[:, 2].tolist() == [-5.0, -5.0]  # prev of the step after a reset: the new first state
    assert ro.rewards[0].tolist() == [10.0, 10.0] and ro.rewards[1, 1] == 20.0


def test_reward_fn_returning_none_means_the_env_reward():
    calls = []
    _, _, ro = scripted_collect(lambda *args: calls.append(1))
    assert len(calls) == 3 and ro.rewards[0].tolist() == [1.0, 1.0] and ro.rewards[1, 1] == 1.0


def test_same_seed_same_weights():
    def run(seed):
        sim = make_vecsim("HalfCheetah-v5", 4, seed=seed)
        cfg = PPOConfig(total_steps=128, num_steps=16, update_epochs=2, seed=seed)
        policy = train(sim, cfg)
        sim.close()
        return policy.state_dict()

    a, b, c = run(3), run(3), run(4)
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=0, msg=k)
    assert not torch.equal(a["actor.0.weight"], c["actor.0.weight"])
    assert not torch.equal(a["obs_mean"], c["obs_mean"])


class Bandit(SimBase):
    """One-step episodes; reward -(a - 0.5)^2: PPO must move its mean action to 0.5.
    (Wide action bounds, so clipping does not bias the optimum of a wide Gaussian.)"""

    num_envs = 64
    observation_space = Box(-1.0, 1.0, (2,))
    action_space = Box(-5.0, 5.0, (1,))
    layout = None
    dt = 1.0

    def reset(self, seed=None):
        return np.ones((64, 2))

    def physics(self):
        return {"obs": np.ones((64, 2))}

    def send(self, actions):
        self.actions = actions

    def recv(self):
        reward = -np.square(self.actions[:, 0] - 0.5)
        done = np.ones(64, dtype=bool)
        return StepOut(np.ones((64, 2)), reward, done, ~done, {"obs": np.ones((64, 2))})


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="no CUDA device here"))])
def test_ppo_learns_a_bandit(device):
    # On cuda: the simulator on the CPU and the policy and update on the GPU (--device cuda --sim mujoco).
    stats = []
    cfg = PPOConfig(total_steps=64 * 8 * 40, num_steps=8, lr=3e-3, update_epochs=4, device=device)
    policy = train(Bandit(), cfg, on_iteration=stats.append)
    assert abs(float(policy.act(np.ones(2))[0]) - 0.5) < 0.1
    assert stats[-1]["global_step"] == cfg.total_steps and stats[-1]["episodes"] == cfg.total_steps
    assert stats[-1]["episode_return"] > stats[0]["episode_return"]


@pytest.mark.parametrize("field", ["total_steps", "num_steps", "num_minibatches", "update_epochs"])
def test_a_config_that_trains_nothing_is_refused_naming_the_field(field):
    with pytest.raises(ValueError, match=f"^{field} must be at least 1, got 0$"):
        PPOConfig.from_dict({field: 0})


def test_minibatches_too_small_to_learn_from_are_refused_before_training():
    # One sample per minibatch: its normalized advantage is 0, and the policy would never move.
    cfg = PPOConfig(total_steps=64, num_steps=1, num_minibatches=64, fork_learner=False)
    with pytest.raises(ValueError, match=r"^num_minibatches=64 cuts a batch of 64 samples \(64 envs x 1 steps\) "
                                         r"into minibatches of 1, under the 2 a minibatch needs: lower"):
        train(Bandit(), cfg)
    train(Bandit(), PPOConfig(total_steps=64, num_steps=1, num_minibatches=32, fork_learner=False))  # 2: enough


def test_plain_cuda_is_the_current_cuda_device_with_its_index(monkeypatch):
    # --device cuda: tensors made there report cuda:N, N the current device, and torch.device("cuda")
    # compares unequal to that. No GPU needed: the current device is stubbed.
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 1)
    assert torch_device("cuda") == torch_device(torch.device("cuda")) == torch.device("cuda", 1)
    assert torch_device("cuda:0") == torch.device("cuda", 0) and torch_device("cpu") == torch.device("cpu")
    sim = SimpleNamespace(num_envs=2, observation_space=Box(-np.inf, np.inf, (3,)), action_space=Box(-1.0, 1.0, (1,)),
                          device=torch.device("cuda"))  # as WarpVecSim kept --device cuda

    def policy_on(device):
        return SimpleNamespace(obs_mean=SimpleNamespace(device=device),
                               obs_stats=lambda: (np.zeros(3), np.ones(3), 1e-4))

    with pytest.raises(ValueError, match="same device"):
        Collector(sim, policy_on(torch.device("cuda", 0)), PPOConfig(), None)  # another GPU
    # Past the device check, the collector fails at its first use of CUDA (none here) or of the stubs.
    with pytest.raises(Exception) as past_the_check:
        Collector(sim, policy_on(torch.device("cuda", 1)), PPOConfig(), None)
    assert "same device" not in str(past_the_check.value)


def test_policy_saves_weights_without_pickle(tmp_path):
    sim = ScriptedSim()
    policy = make_policy(sim, PPOConfig(hidden=(8, 8), activation="relu"))
    policy.set_obs_stats(np.array([1.0, -2.0, 0.5]), np.array([16.0, 0.25, 1.0]), 32)
    path = tmp_path / "policy.npz"
    policy.save(path)
    with np.load(path, allow_pickle=False) as z:  # loads without pickle: plain arrays only
        assert all(z[k].dtype != object for k in z.files)
    loaded = Policy.load(path)
    obs = np.random.default_rng(0).normal(size=(5, 3))
    np.testing.assert_array_equal(policy.act(obs), loaded.act(obs))
    assert loaded.act(obs[0]).shape == (1,)
    assert np.all(np.abs(loaded.act(obs * 100)) <= 1.0)


def test_a_saved_policy_names_its_format_and_loads_through_the_registry(tmp_path):
    from reward_designer import algorithms, policy as policy_module

    policy = make_policy(ScriptedSim(), PPOConfig(hidden=(8, 8)))
    path = tmp_path / "policy.npz"
    policy.save(path)
    with np.load(path, allow_pickle=False) as z:
        assert str(z[algorithms.FORMAT_KEY]) == policy_module.FORMAT == algorithms.ALGORITHMS["ppo"].policy_format
    obs = np.random.default_rng(0).normal(size=(4, 3))
    loaded = algorithms.load_policy(path)
    assert isinstance(loaded, Policy)
    np.testing.assert_array_equal(loaded.act(obs), policy.act(obs))
    # One saved before formats were named (no tag) is PPO's; a format no algorithm saves is refused.
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    np.savez(tmp_path / "untagged.npz", **{k: v for k, v in arrays.items() if k != algorithms.FORMAT_KEY})
    np.testing.assert_array_equal(algorithms.load_policy(tmp_path / "untagged.npz").act(obs), policy.act(obs))
    np.savez(tmp_path / "other.npz", **{**arrays, algorithms.FORMAT_KEY: np.array("sac-squashed")})
    with pytest.raises(ValueError, match="'sac-squashed', which no training algorithm here loads"):
        algorithms.load_policy(tmp_path / "other.npz")


def test_algorithms_are_chosen_by_name():
    from pydantic import ValidationError

    from reward_designer.algorithms import get_algorithm
    from reward_designer.schemas import TrainJob

    assert TrainJob(env_id="Hopper-v5", code=None, total_steps=8).algorithm == "ppo"
    with pytest.raises(ValidationError, match="no training algorithm 'sac'; known: ppo"):
        TrainJob(env_id="Hopper-v5", code=None, total_steps=8, algorithm="sac")
    ppo = get_algorithm("ppo")
    cfg = ppo.make_config("Hopper-v5", "mujoco", {"num_envs": 4}, total_steps=100, seed=3, device="cpu")
    assert isinstance(cfg, PPOConfig) and (cfg.num_envs, cfg.num_steps, cfg.total_steps, cfg.seed) == (4, 128, 100, 3)
    assert ppo.batch_steps("Hopper-v5", "mujoco", {"num_envs": 4}) == 4 * 128
    with pytest.raises(ValueError, match="unknown PPOConfig fields"):
        ppo.make_config("Hopper-v5", "mujoco", {"nmu_envs": 4}, total_steps=100, seed=0, device="cpu")
    with pytest.raises(ValueError, match="continuous"):
        ppo.check_spaces(Box(-1, 1, (3,)), SimpleNamespace())


def test_the_light_config_knows_the_policys_activations():
    from reward_designer import policy as policy_module
    from reward_designer.ppo_config import ACTIVATIONS

    assert set(ACTIVATIONS) == set(policy_module.ACTIVATIONS) == set(policy_module.ARRAY_ACTIVATIONS)


def test_without_obs_normalisation_the_saved_policy_acts_on_raw_observations(tmp_path):
    """Training then feeds the nets raw, unclipped observations; a saved policy must see the same."""
    policy = make_policy(ScriptedSim(), PPOConfig(hidden=(8, 8), norm_obs=False))
    policy.save(tmp_path / "policy.npz")
    obs = np.array([[50.0, -30.0, 20.0]])  # past obs_clip (10)
    with torch.no_grad():
        raw = policy.clip(policy.actor(torch.as_tensor(obs, dtype=torch.float32))).numpy()
    np.testing.assert_allclose(Policy.load(tmp_path / "policy.npz").act(obs), raw, rtol=1e-6)


@pytest.mark.parametrize("on_device", [False, True])
@pytest.mark.parametrize("activation", ["tanh", "relu", "elu"])
def test_array_mirror_matches_torch(activation, on_device):
    """The rollout's policy mirror (numpy, or torch tensors for a simulator on a device) against the module."""
    policy = make_policy(ScriptedSim(), PPOConfig(hidden=(16, 8), activation=activation, log_std_init=-0.5))
    net = policy.arrays(on_device)
    nobs = np.random.default_rng(0).normal(size=(7, 3)).astype(np.float32)
    x = torch.from_numpy(nobs) if on_device else nobs
    rng = torch.Generator().manual_seed(1) if on_device else np.random.default_rng(1)
    with torch.no_grad():
        np.testing.assert_allclose(net.value(x), policy.critic(torch.from_numpy(nobs))[:, 0], rtol=1e-5, atol=1e-6)
        actions, logp = net.sample(x, rng)
        torch_logp = log_prob(policy, torch.from_numpy(nobs), torch.as_tensor(actions))
        np.testing.assert_allclose(logp, torch_logp.numpy(), rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(net.clip(actions * 10), policy.clip(torch.as_tensor(actions * 10)))
    assert isinstance(actions, torch.Tensor) == on_device
    if on_device:  # views of the live parameters: an in-place update shows through
        with torch.no_grad():
            policy.log_std += 1.0
        assert torch.equal(net.nets.log_std, policy.log_std.detach())


def test_presets():
    assert preset_for("HalfCheetah-v5") == preset_for("HalfCheetah-v4")
    assert preset_for("NoSuchEnv-v0") == {}
    # On MuJoCo Warp: the same batch, minibatches and epochs, in 16-step rollouts over more worlds.
    for env_id in ("Hopper-v5", "HalfCheetah-v5", "NoSuchEnv-v0"):
        cpu = PPOConfig.from_dict(preset_for(env_id))
        warp = PPOConfig.from_dict(preset_for(env_id, "warp"))
        assert warp.num_steps == 16 and warp.num_envs * 16 == cpu.num_envs * cpu.num_steps
        assert {**cpu.to_dict(), "num_envs": 0, "num_steps": 0} == {**warp.to_dict(), "num_envs": 0, "num_steps": 0}
    assert preset_for("Hopper-v5", "warp")["num_envs"] == 256
    for name in PRESETS:  # every preset is a valid config on both simulators (no misspelt field)
        for sim in ("mujoco", "warp"):
            PPOConfig.from_dict(preset_for(f"{name}-v5", sim))
    cfg = PPOConfig.from_dict(preset_for("Humanoid-v5"))
    assert isinstance(cfg.hidden, tuple)
    # batch_steps is what the config it describes trains per update, overrides and all.
    for env_id, sim, overrides in (("Hopper-v5", "mujoco", None), ("Hopper-v5", "warp", None),
                                   ("NoSuchEnv-v0", "mujoco", None), ("Ant-v5", "mujoco", {"num_envs": 4})):
        cfg = PPOConfig.from_dict({**preset_for(env_id, sim), **(overrides or {})})
        assert batch_steps(env_id, sim, overrides) == cfg.num_envs * cfg.num_steps
    assert batch_steps("Hopper-v5") == 4096 and batch_steps("Ant-v5", overrides={"num_envs": 4}) == 256
    with pytest.raises(ValueError, match="learning_rate"):
        PPOConfig.from_dict({"learning_rate": 1.0})
    # A job's JSON or a --set of the wrong type, or out of range, fails when the config is made, naming the field.
    for bad, words in (({"lr": "fast"}, "lr: Input should be a valid number"), ({"hidden": 64}, "hidden: "),
                       ({"num_envs": 2.5}, "num_envs: "), ({"num_envs": "4"}, "num_envs: "), ({"lr": True}, "lr: "),
                       ({"anneal_lr": "yes"}, "anneal_lr: "), ({"activation": "gelu"}, "activation must be one of"),
                       ({"gamma": 1.5}, r"gamma must be in \(0, 1\]"), ({"lr": float("nan")}, "lr: must be a finite number"),
                       ({"hidden": [64, 0]}, "hidden must be layer sizes"), ({"num_envs": -2}, "num_envs must be"),
                       ("lr=1", "a mapping")):
        with pytest.raises(ValueError, match=words):
            PPOConfig.from_dict(bad)
    cfg = PPOConfig.from_dict({"hidden": [32, 32], "lr": 1, "desired_kl": None})  # as JSON gives them back
    assert cfg.hidden == (32, 32) and isinstance(cfg.lr, float) and cfg.desired_kl is None


def test_overrides_from_the_command_line_and_from_a_task_card():
    from reward_designer.tasks import TaskError, parse_card

    assert parse_overrides(["lr=1e-4", "hidden=(64, 64)", "norm_obs=false", "desired_kl=None", "activation=relu"]) == {
        "lr": 1e-4, "hidden": (64, 64), "norm_obs": False, "desired_kl": None, "activation": "relu"}
    for pairs, words in ((["lr"], "expected KEY=VALUE"), (["seed=1"], "--seed"), (["total_steps=9"], "train_steps"),
                         (["num_envs=4e0"], "num_envs: "), (["lr={[1]: 2}"], "lr: Input should be a valid number")):
        with pytest.raises(ValueError, match=words):
            parse_overrides(pairs)
    # YAML reads 1e-4 (no dot) as a string: a card's is read as --set reads it.
    card = "name: x\nenv_id: Hopper-v5\ndescription: hop\nppo: {lr: 1e-4, hidden: [32, 32]}\n"
    assert parse_card(card, "card.yaml").ppo == {"lr": 1e-4, "hidden": (32, 32)}
    with pytest.raises(TaskError, match="train_steps"):
        parse_card(card.replace("lr: 1e-4", "total_steps: 5"), "card.yaml")


def log_prob(policy: Policy, nobs: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
    """log pi(a|s) through torch.distributions: the reference for the hand-written math."""
    dist = torch.distributions.Normal(policy.actor(nobs), policy.log_std.exp())
    return dist.log_prob(actions).sum(-1)


def autograd_ppo_loss(policy: Policy, mb: Batch, cfg: PPOConfig) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The PPO loss as CleanRL writes it, through autograd: the reference for ``ppo_gradient``."""
    log_ratio = log_prob(policy, mb.obs, mb.actions) - mb.logp
    ratio = log_ratio.exp()
    pg_loss = torch.max(-mb.advantages * ratio,
                        -mb.advantages * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
    value = policy.critic(mb.obs)[:, 0]
    v_err = (value - mb.returns).square()
    if cfg.clip_vloss:
        v_clipped = mb.values + (value - mb.values).clamp(-cfg.clip_coef, cfg.clip_coef)
        v_err = torch.max(v_err, (v_clipped - mb.returns).square())
    v_loss = 0.5 * v_err.mean()
    entropy = torch.distributions.Normal(0.0, policy.log_std.exp()).entropy().sum()
    loss = pg_loss - cfg.ent_coef * entropy + cfg.vf_coef * v_loss
    with torch.no_grad():
        stats = [pg_loss, v_loss, entropy, ((ratio - 1) - log_ratio).mean(),
                 ((ratio - 1).abs() > cfg.clip_coef).float().mean()]
    return loss, stats


def random_minibatch(policy: Policy, b: int, seed: int) -> Batch:
    """Actions near the policy's, old log-probabilities off by up to +-0.5: some ratios clip, some not."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randn(b, policy.arch["obs_dim"], generator=g)
    with torch.no_grad():
        actions = policy.actor(obs) + 0.5 * torch.randn(b, policy.arch["act_dim"], generator=g)
        logp = log_prob(policy, obs, actions) + torch.empty(b).uniform_(-0.5, 0.5, generator=g)
        values = policy.critic(obs)[:, 0] + 0.3 * torch.randn(b, generator=g)
    return Batch(obs, actions, logp, values, torch.randn(b, generator=g), values + torch.randn(b, generator=g))


@pytest.mark.parametrize("activation, clip_vloss, ent_coef", [
    ("tanh", False, 0.0), ("tanh", True, 0.01), ("relu", True, 0.0), ("elu", False, 0.01)])
def test_hand_written_ppo_gradient_matches_autograd(activation, clip_vloss, ent_coef):
    cfg = PPOConfig(activation=activation, clip_vloss=clip_vloss, ent_coef=ent_coef, clip_coef=0.1)
    torch.manual_seed(0)
    policy = Policy(5, 2, [-1, -1], [1, 1], hidden=(16, 8), activation=activation, log_std_init=-0.5)
    mb = random_minibatch(policy, 64, seed=1)
    ref = Policy(5, 2, [-1, -1], [1, 1], hidden=(16, 8), activation=activation)
    ref.load_state_dict(policy.state_dict())
    loss, ref_stats = autograd_ppo_loss(ref, mb, cfg)
    loss.backward()

    flat = FlatAdam(policy, lr=0.0)
    grad = np.zeros_like(flat.params)
    stats = ppo_gradient(ArrayNets.of(flat.views(flat.params)), ArrayNets.of(flat.views(grad)),
                         Batch(*(t.numpy() for t in mb)), cfg, activation, np)
    assert 0.05 < float(stats[4]) < 0.95  # both sides of the clip are exercised
    np.testing.assert_allclose([float(x) for x in stats], [float(x) for x in ref_stats], rtol=1e-5, atol=1e-7)
    ours = flat.views(grad)
    for name, p in ref.named_parameters():
        np.testing.assert_allclose(ours[name], p.grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_ppo_gradient_runs_on_torch_arrays_as_on_numpy():
    # What --device cuda runs: the same function on torch tensors (here on the CPU).
    cfg = PPOConfig(clip_vloss=True)
    torch.manual_seed(0)
    policy = Policy(5, 2, [-1, -1], [1, 1], hidden=(16, 8), log_std_init=-0.5)
    mb = random_minibatch(policy, 64, seed=2)
    flat = FlatAdam(policy, lr=0.0)
    params = torch.from_numpy(flat.params)
    grads = {xp: xp.zeros_like(params if xp is torch else flat.params) for xp in (np, torch)}
    stats = {xp: ppo_gradient(ArrayNets.of(flat.views(params if xp is torch else flat.params)),
                              ArrayNets.of(flat.views(grads[xp])),
                              mb if xp is torch else Batch(*(t.numpy() for t in mb)), cfg, "tanh", xp)
             for xp in (np, torch)}
    np.testing.assert_allclose(grads[torch].numpy(), grads[np], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose([float(x) for x in stats[torch]], [float(x) for x in stats[np]], rtol=1e-5)


def test_flat_adam_takes_torch_adams_steps_and_keeps_parameters_as_views():
    torch.manual_seed(0)
    ours, ref = Policy(5, 2, [-1, -1], [1, 1]), Policy(5, 2, [-1, -1], [1, 1])
    ref.load_state_dict(ours.state_dict())
    flat = FlatAdam(ours, lr=3e-3, eps=1e-5)
    adam = torch.optim.Adam(ref.parameters(), lr=3e-3, eps=1e-5)
    x, a = torch.randn(32, 5), torch.randn(32, 2)
    for step in range(5):
        adam.zero_grad()
        (-(log_prob(ref, x, a).mean()) + ref.critic(x).square().mean()).backward()
        grad = np.zeros_like(flat.params)
        views = flat.views(grad)
        for name, p in ref.named_parameters():
            views[name][...] = p.grad.numpy()
        flat.step(grad)
        adam.step()
        for p, q in zip(ours.parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-7)
    # The module's parameters are views of the flat vector: a step moves them.
    before = ours.log_std.detach().clone()
    flat.params += 1.0
    torch.testing.assert_close(ours.log_std.detach(), before + 1.0)


def test_update_on_torch_tensors_takes_the_same_steps_as_on_numpy():
    # Off the CPU, update runs on torch tensors; here that path runs on the CPU,
    # over torch views of the same memory, against the numpy path.
    cfg = PPOConfig(num_minibatches=4, update_epochs=2, clip_vloss=True, ent_coef=0.01)
    torch.manual_seed(0)
    policies = [Policy(5, 2, [-1, -1], [1, 1], hidden=(16, 8), log_std_init=-0.5) for _ in range(2)]
    policies[1].load_state_dict(policies[0].state_dict())
    data = random_minibatch(policies[0], 256, seed=3)
    learners = [Learner(p, cfg) for p in policies]
    opt = learners[1].optimizer
    opt.params, opt.m, opt.v = (torch.from_numpy(a) for a in (opt.params, opt.m, opt.v))
    stats = [learner.step(data, None) for learner in learners]
    assert stats[0]["lr"] != cfg.lr  # the step size followed the KL on both
    for k in stats[0]:
        assert stats[1][k] == pytest.approx(stats[0][k], rel=1e-4, abs=1e-6), k
    for a, b in zip(*(p.parameters() for p in policies)):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.equal(policies[0].log_std, torch.full((2,), -0.5))
