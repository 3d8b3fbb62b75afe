"""PPO for continuous actions, in one file (CleanRL style).

The loop: collect ``num_steps`` vector steps from the simulator, with the
reward from a batched reward program (or the env's own); fold time-limit
truncations into the reward as a bootstrap; compute GAE; run
``update_epochs`` passes of clipped-objective minibatch updates.

Truncation vs termination: an episode cut by the time limit did not end in the
MDP, so its last reward gets ``gamma * V(final obs)`` added, where the final
observation is ``StepOut.physics["obs"]`` (the state before the autoreset);
a terminated one bootstraps nothing. Both stop the GAE recursion.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, fields
from typing import Callable

import numpy as np
import torch

from reward_designer.policy import Policy

RewardFn = Callable[[dict, dict, torch.Tensor, np.ndarray], torch.Tensor]


@dataclass
class PPOConfig:
    total_steps: int = 1_000_000
    num_envs: int = 16  # for whoever builds the simulator; train() uses sim.num_envs
    num_steps: int = 128  # vector steps per rollout; batch = num_envs * num_steps
    lr: float = 3e-4
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 10
    num_minibatches: int = 4
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = False
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None  # stop an update's epochs early past this KL
    norm_obs: bool = True
    norm_return: bool = True
    obs_clip: float = 10.0
    reward_clip: float = 10.0
    hidden: tuple[int, ...] = (64, 64)
    value_hidden: tuple[int, ...] | None = None  # None: same as hidden
    activation: str = "tanh"
    log_std_init: float = 0.0
    seed: int = 0
    device: str = "cpu"
    torch_threads: int = 1  # one per process: the simulator's threads want the other core

    @classmethod
    def from_dict(cls, d: dict) -> "PPOConfig":
        """A config from overrides (e.g. a preset or a job's JSON); unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown PPOConfig fields: {sorted(unknown)}")
        d = dict(d)
        for k in ("hidden", "value_hidden"):
            if d.get(k) is not None:
                d[k] = tuple(d[k])
        return cls(**d)

    def to_dict(self) -> dict:
        return asdict(self)


def compute_gae(
    rewards: torch.Tensor,
    values: torch.Tensor,
    dones: torch.Tensor,
    last_value: torch.Tensor,
    gamma: float,
    gae_lambda: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalized advantage estimation over a [T, n] rollout.

    ``rewards[t]``, ``values[t] = V(s_t)``, ``dones[t]``: 1 where the episode ended
    with transition t (its reward already holds any truncation bootstrap);
    ``last_value = V(s_T)`` [n]. Returns (advantages, returns), both [T, n].
    """
    T = rewards.shape[0]
    advantages = torch.zeros_like(rewards)
    gae = torch.zeros_like(last_value)
    next_value = last_value
    for t in reversed(range(T)):
        live = 1.0 - dones[t]
        delta = rewards[t] + gamma * next_value * live - values[t]
        gae = delta + gamma * gae_lambda * live * gae
        advantages[t] = gae
        next_value = values[t]
    return advantages, advantages + values


class RunningMeanStd:
    """Running mean/variance of a stream of scalars (for return normalisation)."""

    def __init__(self):
        self.mean, self.var, self.count = 0.0, 1.0, 1e-4

    def update(self, x: np.ndarray) -> None:
        b, mean, var = x.size, float(x.mean()), float(x.var())
        delta, total = mean - self.mean, self.count + b
        self.var = (self.var * self.count + var * b + delta**2 * self.count * b / total) / total
        self.mean += delta * b / total
        self.count = total


def train(sim, cfg: PPOConfig, reward_fn: RewardFn | None = None,
          on_iteration: Callable[[dict], None] | None = None) -> Policy:
    """Train a policy on ``sim``; reward from ``reward_fn`` (None: the env's own reward)."""
    torch.set_num_threads(cfg.torch_threads)
    device = torch.device(cfg.device)
    n = sim.num_envs
    obs_dim = int(np.prod(sim.observation_space.shape))
    act_dim = int(np.prod(sim.action_space.shape))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        policy = Policy(
            obs_dim, act_dim, sim.action_space.low.tolist(), sim.action_space.high.tolist(),
            hidden=cfg.hidden, value_hidden=cfg.value_hidden, activation=cfg.activation,
            log_std_init=cfg.log_std_init, obs_clip=cfg.obs_clip,
        ).to(device)
    gen = torch.Generator(device=device).manual_seed(cfg.seed)
    optimizer = torch.optim.Adam(policy.parameters(), lr=cfg.lr, eps=1e-5)

    T = cfg.num_steps
    batch = T * n
    minibatch = max(1, batch // cfg.num_minibatches)
    iterations = max(1, cfg.total_steps // batch)
    buf_obs = torch.zeros((T, n, obs_dim), device=device)
    buf_act = torch.zeros((T, n, act_dim), device=device)
    buf_logp = torch.zeros((T, n), device=device)
    buf_rew = torch.zeros((T, n), device=device)
    buf_done = torch.zeros((T, n), device=device)
    buf_val = torch.zeros((T, n), device=device)

    ret_rms = RunningMeanStd()
    disc_return = np.zeros(n)
    ep_return, ep_length = np.zeros(n), np.zeros(n, dtype=np.int64)

    def observe(raw: np.ndarray, update: bool) -> torch.Tensor:
        x = torch.as_tensor(raw.reshape(n, obs_dim), dtype=torch.float32, device=device)
        if cfg.norm_obs:
            if update:
                policy.update_obs_stats(x)
            return policy.normalize(x)
        return x

    next_obs = sim.reset(cfg.seed)
    prev = sim.physics() if reward_fn else None
    global_step = 0
    start = time.perf_counter()
    for iteration in range(1, iterations + 1):
        if cfg.anneal_lr:
            optimizer.param_groups[0]["lr"] = cfg.lr * (1.0 - (iteration - 1) / iterations)
        finished_returns, finished_lengths = [], []
        train_reward = 0.0

        with torch.no_grad():
            for t in range(T):
                nobs = observe(next_obs, update=True)
                action, logp = policy.sample(nobs, gen)
                env_action = policy.clip(action)
                out = sim.step(env_action.cpu().numpy())
                done = out.terminated | out.truncated
                if reward_fn is None:
                    reward = torch.as_tensor(out.env_reward, dtype=torch.float32, device=device)
                else:
                    reward = reward_fn(prev, out.physics, env_action, done).detach()
                    reward = reward.to(device=device, dtype=torch.float32).reshape(n)
                    prev = sim.physics()
                train_reward += float(reward.sum())

                if cfg.norm_return:
                    disc_return = disc_return * cfg.gamma + reward.cpu().numpy()
                    ret_rms.update(disc_return)
                    disc_return[done] = 0.0
                    reward = (reward / np.sqrt(ret_rms.var + 1e-8)).clamp(-cfg.reward_clip, cfg.reward_clip)
                cut = out.truncated & ~out.terminated
                if cut.any():
                    idx = torch.as_tensor(np.flatnonzero(cut), device=device)
                    final = observe(out.physics["obs"], update=False)[idx]
                    reward[idx] += cfg.gamma * policy.value(final)

                buf_obs[t], buf_act[t], buf_logp[t] = nobs, action, logp
                buf_val[t] = policy.value(nobs)
                buf_rew[t] = reward
                buf_done[t] = torch.as_tensor(done, dtype=torch.float32, device=device)

                ep_return += out.env_reward
                ep_length += 1
                for i in np.flatnonzero(done):
                    finished_returns.append(float(ep_return[i]))
                    finished_lengths.append(int(ep_length[i]))
                ep_return[done], ep_length[done] = 0.0, 0
                next_obs = out.obs
            last_value = policy.value(observe(next_obs, update=False))
            advantages, returns = compute_gae(buf_rew, buf_val, buf_done, last_value, cfg.gamma, cfg.gae_lambda)
        global_step += batch

        b_obs, b_act = buf_obs.reshape(batch, obs_dim), buf_act.reshape(batch, act_dim)
        b_logp, b_adv = buf_logp.reshape(batch), advantages.reshape(batch)
        b_ret, b_val = returns.reshape(batch), buf_val.reshape(batch)
        stats = {"policy_loss": 0.0, "value_loss": 0.0, "entropy": 0.0, "approx_kl": 0.0, "clipfrac": 0.0}
        updates = 0
        for _ in range(cfg.update_epochs):
            perm = torch.randperm(batch, generator=gen, device=device)
            for lo in range(0, batch - minibatch + 1, minibatch):
                idx = perm[lo : lo + minibatch]
                logp, entropy = policy.log_prob(b_obs[idx], b_act[idx])
                log_ratio = logp - b_logp[idx]
                ratio = log_ratio.exp()
                adv = b_adv[idx]
                if cfg.norm_adv:
                    adv = (adv - adv.mean()) / (adv.std() + 1e-8)
                pg_loss = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef)).mean()
                value = policy.value(b_obs[idx])
                v_err = (value - b_ret[idx]).square()
                if cfg.clip_vloss:
                    v_clipped = b_val[idx] + (value - b_val[idx]).clamp(-cfg.clip_coef, cfg.clip_coef)
                    v_err = torch.max(v_err, (v_clipped - b_ret[idx]).square())
                v_loss = 0.5 * v_err.mean()
                ent = entropy.mean()
                loss = pg_loss - cfg.ent_coef * ent + cfg.vf_coef * v_loss
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), cfg.max_grad_norm)
                optimizer.step()
                with torch.no_grad():
                    # k3 estimator of KL(old || new) (Schulman, "Approximating KL divergence").
                    approx_kl = float(((ratio - 1) - log_ratio).mean())
                    stats["clipfrac"] += float(((ratio - 1).abs() > cfg.clip_coef).float().mean())
                stats["policy_loss"] += float(pg_loss)
                stats["value_loss"] += float(v_loss)
                stats["entropy"] += float(ent)
                stats["approx_kl"] += approx_kl
                updates += 1
            if cfg.target_kl is not None and approx_kl > cfg.target_kl:
                break

        if on_iteration is not None:
            stats = {k: v / max(updates, 1) for k, v in stats.items()}
            var_ret = float(b_ret.var())
            elapsed = time.perf_counter() - start
            on_iteration({
                "iteration": iteration,
                "iterations": iterations,
                "global_step": global_step,
                "seconds": elapsed,
                "steps_per_second": global_step / elapsed,
                **stats,
                "explained_variance": float("nan") if var_ret == 0 else 1 - float((b_ret - b_val).var()) / var_ret,
                "lr": optimizer.param_groups[0]["lr"],
                "train_reward_mean": train_reward / batch,
                "episodes": len(finished_returns),
                "episode_return": float(np.mean(finished_returns)) if finished_returns else float("nan"),
                "episode_length": float(np.mean(finished_lengths)) if finished_lengths else float("nan"),
            })
    return policy
