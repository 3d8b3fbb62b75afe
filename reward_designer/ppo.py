"""PPO for continuous actions, in one file (CleanRL style).

The hyperparameters are a ``PPOConfig`` (ppo_config.py). The loop:
``Collector.collect`` runs ``num_steps`` vector steps of the simulator with
the reward from a batched reward program (or the env's own);
``compute_gae`` turns them into advantages; ``update`` runs ``update_epochs``
passes of clipped-objective minibatch steps over the batch.

The loss's gradient is written out by hand (``ppo_gradient``), on numpy
arrays on the CPU and torch tensors on other devices: with 64-unit nets,
autograd's per-op overhead cost several times the math. The tests check it
against autograd of the loss as CleanRL writes it.

Truncation vs termination: an episode cut by the time limit did not end in the
MDP, so its last reward gets ``gamma * V(final obs)`` added, where the final
observation is ``StepOut.physics["obs"]`` (the state before the autoreset); a
terminated one bootstraps nothing. Both stop the GAE recursion.

Two processes (``make_learner``, ``forked_learner.py``): on a machine with a
second core, a forked twin computes the gradient of half of every minibatch
and the two average gradients before each step, so both apply the same step.
The math is this file's; only where the halves are computed changes.

Checkpoints (the last section): between two updates a training's whole state
(weights, optimizer, normalisers, step size, RNGs, step count, the
simulator's envs) is saved as plain arrays; a training given one continues
as if it had never stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections import deque
from pathlib import Path
from typing import Callable, NamedTuple

import numpy as np
import torch
from gymnasium.spaces import Box
from threadpoolctl import threadpool_limits

from reward_designer.algorithms import Checkpoints
from reward_designer.forked_learner import ForkedLearner
from reward_designer.policy import (HALF_LOG_2PI, ArrayNets, Policy, array_activation, mlp_backward, mlp_forward,
                                    torch_device)
from reward_designer.ppo_config import PPOConfig
from reward_designer.sim import cpu_cores

RewardFn = Callable[[dict, dict, torch.Tensor, np.ndarray], torch.Tensor]


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a [T, n] rollout.

    ``rewards[t]``, ``values[t] = V(s_t)``; ``dones[t]`` is 1 where the episode
    ended with transition t (its reward already holds any truncation
    bootstrap); ``last_value = V(s_T)`` [n]. Returns (advantages, returns) [T, n].
    """
    advantages = torch.zeros_like(rewards)
    gae = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(rewards.shape[0])):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        gae = delta + gamma * gae_lambda * live * gae
        advantages[t] = gae
        next_value = values[t]
    return advantages, advantages + values


class RunningMeanStd:
    """Running mean and variance of a stream of batches [b, *shape] (Chan et al.), float64.

    numpy arrays; ``to(device)`` makes them torch tensors there, for batches that live on a device.
    """

    def __init__(self, shape: tuple[int, ...] = (), mean=0.0, var=1.0, count: float = 1e-4):
        self.mean = np.broadcast_to(np.asarray(mean, dtype=np.float64), shape).copy()
        self.var = np.broadcast_to(np.asarray(var, dtype=np.float64), shape).copy()
        self.count = float(count)

    def to(self, device: torch.device) -> "RunningMeanStd":
        self.mean, self.var = (torch.as_tensor(a, device=device) for a in (self.mean, self.var))
        return self

    def update(self, x) -> None:
        b = x.shape[0]
        delta, total = x.mean(0) - self.mean, self.count + b
        var = x.var(0) if isinstance(x, np.ndarray) else x.var(0, correction=0)
        self.var = (self.var * self.count + var * b + delta**2 * self.count * b / total) / total
        self.mean = self.mean + delta * b / total
        self.count = total


class Rollout(NamedTuple):
    obs: torch.Tensor  # [T, n, obs_dim] normalized as the policy saw them
    actions: torch.Tensor  # [T, n, act_dim] sampled (unclipped)
    logp: torch.Tensor  # [T, n]
    rewards: torch.Tensor  # [T, n] scaled, truncation bootstrap folded in
    dones: torch.Tensor  # [T, n] 1.0 where an episode ended (terminated or truncated)
    values: torch.Tensor  # [T, n]
    last_value: torch.Tensor  # [n] V of the observation after the last step
    episode_returns: list[float]  # env-reward returns of episodes that finished
    episode_lengths: list[int]
    train_reward: float  # mean training reward per step, before scaling


class Batch(NamedTuple):
    """What an update reads: a rollout flattened to [T * n, ...], with its advantages."""

    obs: torch.Tensor
    actions: torch.Tensor
    logp: torch.Tensor  # behaviour log-probabilities
    values: torch.Tensor
    advantages: torch.Tensor
    returns: torch.Tensor

    @classmethod
    def of(cls, ro: Rollout, advantages: torch.Tensor, returns: torch.Tensor) -> "Batch":
        b = advantages.numel()
        return cls(ro.obs.reshape(b, -1), ro.actions.reshape(b, -1), ro.logp.reshape(b), ro.values.reshape(b),
                   advantages.reshape(b), returns.reshape(b))


class Collector:
    """Steps the simulator with the current policy; carries state across rollouts.

    For a simulator on the CPU everything per step is numpy: the policy is
    evaluated through its numpy mirror (``Policy.arrays``) and the statistics
    are numpy, because on batches of 16-64 envs torch's per-op overhead costs
    more than the math. The rollout goes to torch (and to cfg.device) once, at
    its end. A simulator on a device (``sim.warp``, ``sim.device``) hands out
    torch tensors there, and then the same steps run on them in torch,
    thousands of envs wide, with nothing copied to the host but the finished
    episodes' returns.
    """

    def __init__(self, sim, policy: Policy, cfg: PPOConfig, reward_fn: RewardFn | None):
        self.sim, self.policy, self.cfg, self.reward_fn = sim, policy, cfg, reward_fn
        self.device = policy.obs_mean.device
        self.n = sim.num_envs
        self.obs_dim = int(np.prod(sim.observation_space.shape))
        # VecSim.device: the str "cpu" for numpy arrays on the host, a torch.device for tensors there
        # (Warp's, on its CPU backend too).
        self.on_device = isinstance(sim.device, torch.device)
        self.ret_rms = RunningMeanStd()
        self.obs_rms = RunningMeanStd((self.obs_dim,), *policy.obs_stats())
        if self.on_device:
            if torch_device(sim.device) != self.device:
                raise ValueError(f"the simulator is on {sim.device} and the policy on {self.device}: "
                                 "give both the same device")
            self.xp = torch
            self.rng = torch.Generator(device=self.device).manual_seed(cfg.seed)  # exploration noise
            self.zeros = lambda shape, dtype=torch.float32: torch.zeros(shape, dtype=dtype, device=self.device)
            self.ret_rms.to(self.device)
            self.obs_rms.to(self.device)
        else:
            self.xp = np
            self.rng = np.random.default_rng(cfg.seed)
            self.zeros = lambda shape, dtype=np.float32: np.zeros(shape, dtype=dtype)
        f64, i64 = (torch.float64, torch.int64) if self.on_device else (np.float64, np.int64)
        self.disc_return = self.zeros(self.n, f64)
        self.ep_return, self.ep_length = self.zeros(self.n, f64), self.zeros(self.n, i64)
        self.next_obs = sim.reset(cfg.seed)
        self.prev = sim.physics() if reward_fn else None

    def observe(self, raw, update: bool):
        """Observations as the policy sees them (float32); ``update``: fold them into the statistics first."""
        xp = self.xp
        x = raw.reshape(self.n, self.obs_dim).double() if self.on_device else \
            np.asarray(raw, dtype=np.float64).reshape(self.n, self.obs_dim)
        if self.cfg.norm_obs:
            if update:
                self.obs_rms.update(x)
            x = xp.clip((x - self.obs_rms.mean) / xp.sqrt(self.obs_rms.var + 1e-8),
                        -self.cfg.obs_clip, self.cfg.obs_clip)
        return x.float() if self.on_device else x.astype(np.float32)

    def scale(self, reward, done):
        """Divide by the std of the discounted return (as gymnasium's NormalizeReward); a new float64 array."""
        cfg, xp = self.cfg, self.xp
        if not cfg.norm_return:
            return reward.double().clone() if self.on_device else reward.astype(np.float64)  # the caller adds into it
        self.disc_return = self.disc_return * cfg.gamma + reward
        self.ret_rms.update(self.disc_return)
        self.disc_return[done] = 0.0
        return xp.clip(reward / xp.sqrt(self.ret_rms.var + 1e-8), -cfg.reward_clip, cfg.reward_clip)

    def collect(self, num_steps: int) -> Rollout:
        cfg, sim, n, zeros = self.cfg, self.sim, self.n, self.zeros
        net = self.policy.arrays(self.on_device)
        obs = zeros((num_steps, n, self.obs_dim))
        actions = zeros((num_steps, n) + tuple(sim.action_space.shape))
        logps, rewards, dones, values = (zeros((num_steps, n)) for _ in range(4))
        # Each env's episode return and length so far, per step: read where episodes ended, at the end.
        f64, i64 = self.ep_return.dtype, self.ep_length.dtype
        so_far_return, so_far_length = zeros((num_steps, n), f64), zeros((num_steps, n), i64)
        train_reward = 0.0

        def settle(t: int, out, env_action, prev: dict | None, cut, bootstrap) -> None:
            """Step t's reward (the program's, scaled, truncation bootstrap added) and episode records."""
            nonlocal train_reward
            done = out.terminated | out.truncated
            reward = None
            if self.reward_fn is not None:
                reward = self.reward_fn(prev, out.physics, torch.as_tensor(env_action, device=self.device), done)
            if reward is None:
                reward = out.env_reward
            elif self.on_device:
                reward = reward.detach().double().reshape(n)
            else:
                reward = reward.detach().cpu().numpy().astype(np.float64).reshape(n)
            train_reward = train_reward + reward.sum()  # an array: no wait for a device
            reward = self.scale(reward, done)
            if self.on_device:  # every env's bootstrap, added where cut: no wait for the device
                reward = reward + cfg.gamma * torch.where(cut, bootstrap, 0.0)
            elif bootstrap is not None:
                reward[cut] += cfg.gamma * bootstrap
            rewards[t], dones[t] = reward, done
            self.ep_return += out.env_reward
            self.ep_length += 1
            so_far_return[t], so_far_length[t] = self.ep_return, self.ep_length
            self.ep_return[done], self.ep_length[done] = 0.0, 0

        pending = None
        for t in range(num_steps):
            nobs = self.observe(self.next_obs, update=True)
            action, logp = net.sample(nobs, self.rng)
            env_action = net.clip(action)
            sim.send(env_action)
            # While the simulator's twins step their slabs, this process settles the step before.
            obs[t], actions[t], logps[t], values[t] = nobs, action, logp, net.value(nobs)
            if pending is not None:
                settle(*pending)
            out = sim.recv()
            cut = out.truncated & ~out.terminated
            # Normalized now, before the next observe() moves the statistics.
            if self.on_device:
                bootstrap = net.value(self.observe(out.physics["obs"], update=False))
            else:
                bootstrap = net.value(self.observe(out.physics["obs"], update=False)[cut]) if cut.any() else None
            prev, self.prev = self.prev, (sim.physics() if self.reward_fn else None)
            pending = (t, out, env_action, prev, cut, bootstrap)
            self.next_obs = out.obs
        settle(*pending)
        last_value = net.value(self.observe(self.next_obs, update=False))
        ended = dones > 0
        to = lambda a: torch.as_tensor(a, device=self.device)  # noqa: E731
        return Rollout(to(obs), to(actions), to(logps), to(rewards), to(dones), to(values), to(last_value),
                       so_far_return[ended].tolist(), so_far_length[ended].tolist(),
                       float(train_reward) / (num_steps * n))

    # What a checkpoint keeps of the collector (``state``, ``restore``), besides the simulator's envs.
    _KEPT = ("disc_return", "ep_return", "ep_length", "next_obs")

    def state(self) -> dict[str, np.ndarray]:
        """The normalisers, the episodes under way, the exploration RNG and, where the simulator can
        save its envs (the "mujoco" backend on the standard tasks), their whole state."""
        rng = self.rng.get_state() if self.on_device else np.array(json.dumps(self.rng.bit_generator.state))
        arrays = {"rng": _host(rng), **{k: _host(getattr(self, k)) for k in self._KEPT}}
        for name, rms in (("obs_rms", self.obs_rms), ("ret_rms", self.ret_rms)):
            arrays.update({f"{name}/mean": _host(rms.mean), f"{name}/var": _host(rms.var),
                           f"{name}/count": np.float64(rms.count)})
        if getattr(self.sim, "movable", False):
            arrays.update(_prefixed("sim/", self.sim.save_state()))
        return arrays

    def restore(self, arrays: dict[str, np.ndarray], reseed: int) -> None:
        """Back to a ``state``. A simulator that could not save its envs starts new episodes in all of
        them instead (seeded with ``reseed``): the training goes on, though not as it would have."""
        like = (lambda a: torch.as_tensor(a, device=self.device)) if self.on_device else (lambda a: a.copy())
        if self.on_device:
            self.rng.set_state(torch.from_numpy(arrays["rng"].copy()))
        else:
            self.rng.bit_generator.state = json.loads(str(arrays["rng"]))
        for name, rms in (("obs_rms", self.obs_rms), ("ret_rms", self.ret_rms)):
            rms.mean, rms.var = like(arrays[f"{name}/mean"]), like(arrays[f"{name}/var"])
            rms.count = float(arrays[f"{name}/count"])
        sim_state = _part(arrays, "sim/")
        if sim_state:
            self.sim.load_state(sim_state)
            for k in self._KEPT:
                setattr(self, k, like(arrays[k]))
        else:
            self.next_obs = self.sim.reset(reseed)
        self.prev = self.sim.physics() if self.reward_fn else None


class FlatAdam:
    """torch.optim.Adam's step over a module's trainable parameters, kept in one flat vector.

    Each parameter becomes a view of one flat tensor, so a gradient is one
    vector too, and the Adam step, the gradient clipping and a twin's gradient
    average are a few array ops on it, however many layers the nets have. On
    the CPU ``params`` is that tensor's numpy view: the update runs in numpy.
    """

    def __init__(self, module: torch.nn.Module, lr: float, eps: float = 1e-5, betas=(0.9, 0.999)):
        named = [(k, p) for k, p in module.named_parameters() if p.requires_grad]
        flat = torch.cat([p.detach().reshape(-1) for _, p in named])
        self.layout, offset = [], 0  # (name, shape, offset) per parameter
        for k, p in named:
            p.data = flat[offset : offset + p.numel()].view_as(p)
            self.layout.append((k, tuple(p.shape), offset))
            offset += p.numel()
        self.params = flat.numpy() if flat.device.type == "cpu" else flat
        self.lr, self.eps, self.betas = lr, eps, betas
        self.m, self.v = self.params * 0, self.params * 0  # zeros, numpy or torch as params
        self.t = 0

    def views(self, flat) -> dict:
        """Each parameter's view of ``flat`` (the parameters, or a gradient laid out like them), by name."""
        return {k: flat[o : o + math.prod(shape)].reshape(shape) for k, shape, o in self.layout}

    def step(self, grad) -> None:
        b1, b2 = self.betas
        self.t += 1
        self.m *= b1
        self.m += (1 - b1) * grad
        self.v *= b2
        self.v += (1 - b2) * grad * grad
        denom = self.v**0.5 / math.sqrt(1 - b2**self.t) + self.eps
        self.params -= (self.lr / (1 - b1**self.t)) * self.m / denom


def ppo_gradient(net: ArrayNets, grad: ArrayNets, mb: Batch, cfg: PPOConfig, activation: str, xp):
    """The gradient of the PPO loss on minibatch ``mb``, written into ``grad``; the loss terms out.

    loss = clipped surrogate - ent_coef * entropy + vf_coef * value loss, each a
    mean over the minibatch (``mb.advantages`` already normalized). Written out
    by hand rather than through autograd, whose per-op cost dominated on these
    small nets: a whole 64-sample step took 0.92 ms with autograd, 0.24 ms so
    (1024 samples: 2.5 ms, 1.5 ms).
    ``xp`` is numpy or torch, whichever ``net``'s arrays are.
    """
    act, act_grad = array_activation(activation, xp)
    b = mb.advantages.shape[0]

    # Policy: log pi(a|s) of a diagonal Gaussian, z = (a - mean) / std.
    outs = mlp_forward(net.actor, mb.obs, act)
    inv_std = xp.exp(-net.log_std)
    z = (mb.actions - outs[-1]) * inv_std
    logp = (-0.5 * z * z - net.log_std).sum(1) - HALF_LOG_2PI * z.shape[1]
    log_ratio = logp - mb.logp
    ratio = xp.exp(log_ratio)
    # Clipped surrogate: mean(max(-A r, -A clip(r))). Where the unclipped term is
    # the max, d/d logp = -A r (dr/dlogp = r); where the clipped one is, 0.
    unclipped = -mb.advantages * ratio
    clipped = -mb.advantages * xp.clip(ratio, 1 - cfg.clip_coef, 1 + cfg.clip_coef)
    pg_loss = xp.maximum(unclipped, clipped).mean()
    d_logp = xp.where(unclipped >= clipped, unclipped, 0) / b
    # d logp / d mean = z / std; d logp / d log_std = z^2 - 1; entropy = sum(log_std) + const.
    mlp_backward(net.actor, outs, d_logp[:, None] * z * inv_std, grad.actor, act_grad)
    grad.log_std[...] = (d_logp[:, None] * (z * z - 1)).sum(0) - cfg.ent_coef
    entropy = (net.log_std + HALF_LOG_2PI + 0.5).sum()

    # Value: 0.5 * mean((V - R)^2), or PPO2's clipped form: the larger of that and
    # the error of V kept within clip_coef of the old value (no gradient where clipped).
    outs = mlp_forward(net.critic, mb.obs, act)
    value = outs[-1][:, 0]
    d_value = value - mb.returns
    v_err = d_value * d_value
    if cfg.clip_vloss:
        step = value - mb.values
        held = xp.clip(step, -cfg.clip_coef, cfg.clip_coef)
        clipped_err = mb.values + held - mb.returns
        use_clipped = clipped_err * clipped_err > v_err
        v_err = xp.where(use_clipped, clipped_err * clipped_err, v_err)
        d_value = xp.where(use_clipped, clipped_err * (held == step), d_value)
    v_loss = 0.5 * v_err.mean()
    mlp_backward(net.critic, outs, (cfg.vf_coef / b) * d_value[:, None], grad.critic, act_grad)

    # k3 estimator of KL(old || new) (Schulman, "Approximating KL divergence").
    approx_kl = ((ratio - 1) - log_ratio).mean()
    clipfrac = (abs(ratio - 1) > cfg.clip_coef).sum() / b
    return pg_loss, v_loss, entropy, approx_kl, clipfrac


def update(policy: Policy, optimizer: FlatAdam, data: Batch, cfg: PPOConfig,
           generator: torch.Generator, peer=None) -> dict[str, float]:
    """``update_epochs`` passes of clipped-objective minibatch steps; mean losses out.

    ``peer`` (``forked_learner.Peer``): another process runs this same update (same
    generator, same weights); each computes half of every minibatch, and
    ``peer.average`` makes both gradients, and the statistics the step size
    follows, those of the whole minibatch.
    """
    on_cpu = isinstance(optimizer.params, np.ndarray)
    xp = np if on_cpu else torch
    if on_cpu:
        data = Batch(*(t.numpy() for t in data))
    batch = data.advantages.shape[0]
    minibatch = batch // cfg.num_minibatches
    rank, world = (peer.rank, 2) if peer is not None else (0, 1)
    net = ArrayNets.of(optimizer.views(optimizer.params))
    flat_grad = optimizer.params * 0
    grad = ArrayNets.of(optimizer.views(flat_grad))
    names = ("policy_loss", "value_loss", "entropy", "approx_kl", "clipfrac")
    sums = 0.0  # summed as arrays: no device sync per step
    steps = 0
    for _ in range(cfg.update_epochs):
        perm = torch.randperm(batch, generator=generator, device=generator.device)
        perm = perm.numpy() if on_cpu else perm
        for lo in range(0, batch - minibatch + 1, minibatch):
            idx = perm[lo : lo + minibatch]
            adv = data.advantages[idx]
            if cfg.norm_adv:  # over the whole minibatch, whoever computes which half
                adv = adv - adv.mean()
                adv = adv / (((adv * adv).sum() / max(len(adv) - 1, 1)) ** 0.5 + 1e-8)
            idx, adv = idx[rank::world], adv[rank::world]
            mb = Batch(data.obs[idx], data.actions[idx], data.logp[idx], data.values[idx], adv, data.returns[idx])
            stats = xp.stack(ppo_gradient(net, grad, mb, cfg, policy.arch["activation"], xp))
            g = flat_grad
            if peer is not None:
                g, stats = peer.average(g, stats, len(idx) / minibatch)
            approx_kl = stats[3]
            if cfg.desired_kl is not None:  # this minibatch's KL sizes its own step
                kl = float(approx_kl)
                if kl > 2.0 * cfg.desired_kl:
                    optimizer.lr = max(1e-5, optimizer.lr / 1.5)
                elif kl < 0.5 * cfg.desired_kl:
                    optimizer.lr = min(1e-2, optimizer.lr * 1.5)
            g = g * (cfg.max_grad_norm / (((g * g).sum()) ** 0.5 + 1e-6)).clip(max=1.0)  # clip_grad_norm_
            optimizer.step(g)
            sums = sums + stats
            steps += 1
        if cfg.target_kl is not None and float(approx_kl) > cfg.target_kl:
            break
    var_ret = float(data.returns.var())
    explained = float("nan") if var_ret == 0 else 1.0 - float((data.returns - data.values).var()) / var_ret
    return {**dict(zip(names, (sums / steps).tolist())), "explained_variance": explained}


def check_spaces(observation_space, action_space) -> None:
    """ValueError unless this PPO can act in these spaces: Box observations, Box (continuous) actions."""
    if not isinstance(observation_space, Box):
        raise ValueError(f"this PPO takes Box observations; the env has {observation_space}")
    if not isinstance(action_space, Box):
        raise ValueError(f"this PPO takes continuous (Box) actions; the env has {action_space}")


def make_policy(sim, cfg: PPOConfig) -> Policy:
    """A fresh policy for ``sim``'s spaces; its initial weights depend only on cfg.seed."""
    check_spaces(sim.observation_space, sim.action_space)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        policy = Policy(
            int(np.prod(sim.observation_space.shape)), int(np.prod(sim.action_space.shape)),
            sim.action_space.low.tolist(), sim.action_space.high.tolist(),
            hidden=cfg.hidden, value_hidden=cfg.value_hidden, activation=cfg.activation,
            # Without normalisation training feeds the nets raw observations, unclipped: so must acting.
            log_std_init=cfg.log_std_init, obs_clip=cfg.obs_clip if cfg.norm_obs else float("inf"),
        )
    return policy.to(torch_device(cfg.device))


class Learner:
    """Owns the policy's optimizer; ``step`` runs ``update`` on a batch in this process."""

    def __init__(self, policy: Policy, cfg: PPOConfig):
        self.policy, self.cfg = policy, cfg
        self.optimizer = FlatAdam(policy, lr=cfg.lr, eps=1e-5)
        self.generator = torch.Generator(device=cfg.device).manual_seed(cfg.seed)
        self.resumed = False  # its state came from a checkpoint (load_state)

    def step(self, data: Batch, lr: float | None, peer=None) -> dict[str, float]:
        """One update; ``lr`` sets the step size first (None: keep the optimizer's)."""
        if lr is not None:
            self.optimizer.lr = lr
        return {**update(self.policy, self.optimizer, data, self.cfg, self.generator, peer),
                "lr": self.optimizer.lr}

    def close(self) -> None:
        pass

    def state(self) -> dict[str, np.ndarray]:
        opt = self.optimizer
        return {"params": _host(opt.params), "adam_m": _host(opt.m), "adam_v": _host(opt.v),
                "adam_t": np.int64(opt.t), "lr": np.float64(opt.lr), "generator": _host(self.generator.get_state())}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        opt = self.optimizer
        for key, dst in (("params", opt.params), ("adam_m", opt.m), ("adam_v", opt.v)):
            _assign(dst, state[key], key)
        opt.t, opt.lr = int(state["adam_t"]), float(state["lr"])
        self.generator.set_state(torch.from_numpy(state["generator"].copy()))
        self.resumed = True


def make_learner(sim, cfg: PPOConfig, on_fork: Callable[[], None] | None = None,
                 resume: dict | None = None) -> Learner | ForkedLearner:
    """A learner for a fresh policy: with a forked twin when ``cfg.fork_learner`` and a second core allow.

    ``on_fork`` runs first thing in the twin (the worker confines it). Where
    fork is refused (a process already confined) the learner is inline.
    ``resume``: a checkpoint's arrays (``load_checkpoint``), loaded before the fork, which copies them.
    """
    # Before the fork: a twin forked while torch's pool had more threads summed (slightly) differently,
    # so a training's weights hung on what its process had run before.
    torch.set_num_threads(cfg.torch_threads)
    learner = Learner(make_policy(sim, cfg), cfg)
    if resume is not None:
        check_checkpoint(resume, cfg)
        learner.load_state(_part(resume, "learner/"))
    if not (cfg.fork_learner and cfg.device == "cpu" and cpu_cores() >= 2):
        return learner
    b = cfg.num_steps * sim.num_envs
    obs_dim, act_dim = int(np.prod(sim.observation_space.shape)), int(np.prod(sim.action_space.shape))
    shapes = Batch(obs=(b, obs_dim), actions=(b, act_dim), logp=(b,), values=(b,), advantages=(b,), returns=(b,))
    try:
        return ForkedLearner(learner, shapes, on_fork)
    except OSError:
        return learner


def train(sim, cfg: PPOConfig, reward_fn: RewardFn | None = None,
          on_iteration: Callable[[dict], None] | None = None,
          learner: Learner | ForkedLearner | None = None, checkpoints: Checkpoints | None = None) -> Policy:
    """Train a policy on ``sim``; reward from ``reward_fn`` (None: the env's own reward).

    ``reward_fn(prev, now, actions, done) -> tensor [n]`` is called once per
    vector step on the batch: ``prev`` the snapshot before the step, ``now`` the
    one right after (``StepOut.physics``), ``actions`` the clipped actions
    applied, ``done`` terminated | truncated. Returning None uses the env's
    reward for that step (a reward_fn that only watches, e.g. a fitness meter).
    ``learner``: from ``make_learner(sim, cfg)`` (the default); train closes it.
    ``checkpoints``: where and how often to save the training's state, where to stop
    early, the state to continue (its learner made with ``make_learner(..., resume=)``).
    """
    torch.set_num_threads(cfg.torch_threads)
    # numpy's BLAS too: its own threads would fight the simulator's slabs for the cores.
    with threadpool_limits(cfg.torch_threads, user_api="blas"):
        learner = learner or make_learner(sim, cfg, resume=checkpoints.resume if checkpoints else None)
        try:
            return _train(sim, cfg, reward_fn, on_iteration, learner, checkpoints or Checkpoints())
        finally:
            learner.close()


def _train(sim, cfg: PPOConfig, reward_fn: RewardFn | None, on_iteration: Callable[[dict], None] | None,
           learner: Learner | ForkedLearner, checkpoints: Checkpoints) -> Policy:
    batch = cfg.num_steps * sim.num_envs
    # Advantages are normalized over a minibatch, and each process's part of it needs 2 samples:
    # one sample's advantage normalizes to 0 and gives no gradient, an empty part a division by zero.
    forked = isinstance(learner, ForkedLearner)
    need = 4 if forked else 2
    if batch // cfg.num_minibatches < need:
        raise ValueError(
            f"num_minibatches={cfg.num_minibatches} cuts a batch of {batch} samples ({sim.num_envs} envs x "
            f"{cfg.num_steps} steps) into minibatches of {batch // cfg.num_minibatches}, under the {need} a "
            f"minibatch needs{' (2 for each of the two processes that share it)' if forked else ''}: "
            "lower num_minibatches or raise num_steps")
    policy = learner.policy
    collector = Collector(sim, policy, cfg, reward_fn)
    iterations = max(1, cfg.total_steps // batch)
    recent_returns, recent_lengths = deque(maxlen=100), deque(maxlen=100)  # env-reward episodes
    episodes, done, before = 0, 0, 0.0  # done: updates before this job; before: their seconds
    if checkpoints.resume is not None:
        done, episodes, before = _restore(checkpoints.resume, cfg, learner, collector,
                                          recent_returns, recent_lengths)
    start = time.perf_counter() - before
    for iteration in range(done + 1, iterations + 1):
        lr = cfg.lr * (1.0 - (iteration - 1) / iterations) if cfg.anneal_lr and cfg.desired_kl is None else None
        ro = collector.collect(cfg.num_steps)
        policy.set_obs_stats(collector.obs_rms.mean, collector.obs_rms.var, collector.obs_rms.count)
        with torch.no_grad():
            advantages, returns = compute_gae(ro.rewards, ro.values, ro.dones, ro.last_value,
                                              cfg.gamma, cfg.gae_lambda)
        losses = learner.step(Batch.of(ro, advantages, returns), lr)
        recent_returns.extend(ro.episode_returns)
        recent_lengths.extend(ro.episode_lengths)
        episodes += len(ro.episode_returns)
        if on_iteration is not None:
            elapsed = time.perf_counter() - start
            on_iteration({
                "iteration": iteration,
                "iterations": iterations,
                "global_step": iteration * batch,
                "seconds": elapsed,
                "steps_per_second": iteration * batch / elapsed,
                **losses,
                "train_reward_mean": ro.train_reward,
                "episodes": episodes,
                # over the last (up to) 100 finished episodes; nan before the first
                "episode_return": float(np.mean(recent_returns)) if recent_returns else float("nan"),
                "episode_length": float(np.mean(recent_lengths)) if recent_lengths else float("nan"),
            })
        stop = checkpoints.stop_at is not None and iteration * batch >= checkpoints.stop_at
        if iteration < iterations and (stop or checkpoints.every and iteration % checkpoints.every == 0):
            save_checkpoint(checkpoints.path, {
                "config": np.array(_config_json(cfg)), "iteration": np.int64(iteration),
                "global_step": np.int64(iteration * batch),
                "episodes": np.int64(episodes), "seconds": np.float64(time.perf_counter() - start),
                "recent_returns": np.array(recent_returns, np.float64),
                "recent_lengths": np.array(recent_lengths, np.int64), "torch_rng": _host(torch.get_rng_state()),
                **_prefixed("learner/", learner.state()), **_prefixed("collector/", collector.state())})
        if stop:
            break
    return policy


# ------------------------------------------------------------------ checkpoints
# What a checkpoint file says it holds; a file of another format (or version) is refused.
CHECKPOINT_FORMAT = "ppo-checkpoint-1"


def save_checkpoint(path: Path, arrays: dict[str, np.ndarray]) -> None:
    """An npz of plain arrays, written whole or not at all (a kill mid-write leaves the last one)."""
    tmp = Path(path).with_name(f".{Path(path).name}.tmp")
    with open(tmp, "wb") as f:
        np.savez(f, __format__=np.array(CHECKPOINT_FORMAT), **arrays)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, np.ndarray]:
    """A checkpoint's arrays. Nothing is unpickled: a worker that ran untrusted code wrote it."""
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if str(arrays.get("__format__", "")) != CHECKPOINT_FORMAT:
        raise ValueError(f"{Path(path).name} is not a checkpoint of this PPO ({CHECKPOINT_FORMAT})")
    return arrays


def check_checkpoint(arrays: dict, cfg: PPOConfig) -> None:
    """ValueError, naming the fields, unless the checkpoint is of a training with this config."""
    saved, now = json.loads(str(arrays["config"])), json.loads(_config_json(cfg))
    if saved != now:
        differ = sorted(k for k in saved.keys() | now.keys() if saved.get(k) != now.get(k))
        raise ValueError(f"the checkpoint is of another training: its {', '.join(differ)} differ")


def _restore(arrays: dict, cfg: PPOConfig, learner, collector: Collector, recent_returns: deque,
             recent_lengths: deque) -> tuple[int, int, float]:
    """Put a checkpoint's loop and collector state back (its learner's went back in make_learner);
    (updates done, episodes, seconds) out."""
    if not getattr(learner, "resumed", False):
        raise ValueError("a training that continues a checkpoint needs its learner made with it: "
                         "make_learner(..., resume=the checkpoint)")
    iteration = int(arrays["iteration"])
    collector.restore(_part(arrays, "collector/"), reseed=cfg.seed + iteration)
    learner.policy.set_obs_stats(*(_host(x) for x in (collector.obs_rms.mean, collector.obs_rms.var)),
                                 collector.obs_rms.count)
    recent_returns.extend(arrays["recent_returns"].tolist())
    recent_lengths.extend(arrays["recent_lengths"].tolist())
    torch.set_rng_state(torch.from_numpy(arrays["torch_rng"].copy()))
    return iteration, int(arrays["episodes"]), float(arrays["seconds"])


def _config_json(cfg: PPOConfig) -> str:
    return json.dumps(cfg.to_dict(), sort_keys=True)


def _host(x) -> np.ndarray:
    """A copy of ``x`` (a numpy array or a torch tensor anywhere) as a numpy array."""
    return x.detach().cpu().numpy().copy() if isinstance(x, torch.Tensor) else np.array(x)


def _assign(dst, src: np.ndarray, name: str) -> None:
    """Overwrite ``dst`` (numpy or torch) in place with ``src``, of the same shape."""
    if tuple(dst.shape) != src.shape:
        raise ValueError(f"the checkpoint's {name} has shape {src.shape}, not {tuple(dst.shape)}")
    if isinstance(dst, torch.Tensor):
        dst.copy_(torch.as_tensor(src, device=dst.device))
    else:
        dst[...] = src


def _prefixed(prefix: str, arrays: dict) -> dict:
    return {prefix + k: v for k, v in arrays.items()}


def _part(arrays: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}
