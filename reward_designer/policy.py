"""The actor-critic: a Gaussian MLP policy, an MLP value, observation statistics.

Saved as plain weights: one ``.npz`` with every tensor and the architecture as
a JSON string, loaded with ``allow_pickle=False`` so a checkpoint can never
run code.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


class _TanhFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x):
        y = torch.sigmoid(x * 2).mul_(2).sub_(1)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx, grad):
        (y,) = ctx.saved_tensors
        return torch.ops.aten.tanh_backward(grad, y)


class Tanh(nn.Module):
    """tanh as 2*sigmoid(2x)-1: torch's CPU tanh runs at ~1/3 the speed of its
    sigmoid here and was 30% of a PPO update (64-unit MLP, minibatch 2048).
    Below ~16k elements (a 256-row minibatch) the Python autograd.Function costs
    more than it saves (forward + backward on 64 x 64: 72 us vs tanh's 42 us)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.requires_grad and x.numel() >= 16384:
            return _TanhFn.apply(x)
        return torch.tanh(x)  # small batches: one kernel (and no Python autograd.Function) beats three


ACTIVATIONS = {"tanh": Tanh, "relu": nn.ReLU, "elu": nn.ELU}


def _mlp(sizes: list[int], activation: str, out_gain: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        lin = nn.Linear(a, b)
        last = i == len(sizes) - 2
        # Orthogonal init (Andrychowicz et al. 2021): small last layer of the
        # actor so the initial policy is near-uniform around zero.
        nn.init.orthogonal_(lin.weight, out_gain if last else math.sqrt(2))
        nn.init.zeros_(lin.bias)
        layers.append(lin)
        if not last:
            layers.append(ACTIVATIONS[activation]())
    return nn.Sequential(*layers)


class Policy(nn.Module):
    """Diagonal Gaussian actor (state-independent log-std) and a separate value MLP,
    both on observations normalized by running statistics kept in the module."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        act_low: list[float],
        act_high: list[float],
        hidden: tuple[int, ...] = (64, 64),
        value_hidden: tuple[int, ...] | None = None,
        activation: str = "tanh",
        log_std_init: float = 0.0,
        obs_clip: float = 10.0,
    ):
        super().__init__()
        self.arch = {
            "obs_dim": obs_dim,
            "act_dim": act_dim,
            "act_low": [float(x) for x in act_low],
            "act_high": [float(x) for x in act_high],
            "hidden": list(hidden),
            "value_hidden": list(value_hidden or hidden),
            "activation": activation,
            "log_std_init": log_std_init,
            "obs_clip": obs_clip,
        }
        self.actor = _mlp([obs_dim, *hidden, act_dim], activation, 0.01)
        self.critic = _mlp([obs_dim, *(value_hidden or hidden), 1], activation, 1.0)
        self.log_std = nn.Parameter(torch.full((act_dim,), float(log_std_init)))
        self.obs_clip = obs_clip
        # Running observation statistics (float64: they accumulate millions of samples).
        self.register_buffer("obs_mean", torch.zeros(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_var", torch.ones(obs_dim, dtype=torch.float64))
        self.register_buffer("obs_count", torch.tensor(1e-4, dtype=torch.float64))
        self.register_buffer("act_low", torch.tensor(act_low, dtype=torch.float32))
        self.register_buffer("act_high", torch.tensor(act_high, dtype=torch.float32))
        self._refresh_norm()

    # ------------------------------------------------- observation statistics
    def _refresh_norm(self) -> None:
        self._shift = self.obs_mean.float()
        self._scale = (self.obs_var + 1e-8).rsqrt().float()

    def obs_stats(self) -> tuple[np.ndarray, np.ndarray, float]:
        """(mean, var, count) of the observations seen in training."""
        return self.obs_mean.cpu().numpy().copy(), self.obs_var.cpu().numpy().copy(), float(self.obs_count)

    @torch.no_grad()
    def set_obs_stats(self, mean: np.ndarray, var: np.ndarray, count: float) -> None:
        self.obs_mean.copy_(torch.as_tensor(mean, dtype=torch.float64))
        self.obs_var.copy_(torch.as_tensor(var, dtype=torch.float64))
        self.obs_count.fill_(count)
        self._refresh_norm()

    def normalize(self, obs: torch.Tensor) -> torch.Tensor:
        return ((obs - self._shift) * self._scale).clamp(-self.obs_clip, self.obs_clip)

    # ----------------------------------------------------------------- heads
    def value(self, nobs: torch.Tensor) -> torch.Tensor:
        """V of normalized observations, [b]."""
        return self.critic(nobs).squeeze(-1)

    def log_prob(self, nobs: torch.Tensor, actions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """log pi(a|s) [b] and the policy's entropy [b]; a diagonal Gaussian written out
        (torch.distributions costs more per call than the math here)."""
        mean = self.actor(nobs)
        z = (actions - mean) * torch.exp(-self.log_std)
        logp = (-0.5 * z.square() - self.log_std - _HALF_LOG_2PI).sum(-1)
        entropy = (self.log_std + _HALF_LOG_2PI + 0.5).sum().expand(nobs.shape[0])
        return logp, entropy

    def clip(self, actions: torch.Tensor) -> torch.Tensor:
        return torch.max(torch.min(actions, self.act_high), self.act_low)

    @torch.no_grad()
    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions for raw observations ([obs_dim] or [b, obs_dim]), clipped to the action bounds."""
        device = self.obs_mean.device
        x = torch.as_tensor(np.asarray(obs), dtype=torch.float32, device=device)
        mean = self.actor(self.normalize(x))
        a = mean if deterministic else mean + torch.randn_like(mean) * self.log_std.exp()
        return self.clip(a).cpu().numpy()

    # ----------------------------------------------------------- persistence
    def save(self, path: str | Path) -> None:
        arrays = {k: v.detach().cpu().numpy() for k, v in self.state_dict().items()}
        with open(path, "wb") as f:  # a file object: np.savez would append ".npz" to a bare name
            np.savez(f, __arch__=np.array(json.dumps(self.arch)), **arrays)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        with np.load(path, allow_pickle=False) as z:
            arch = json.loads(str(z["__arch__"]))
            state = {k: torch.from_numpy(z[k]) for k in z.files if k != "__arch__"}
        arch["hidden"] = tuple(arch["hidden"])
        arch["value_hidden"] = tuple(arch["value_hidden"])
        policy = cls(**arch)
        policy.load_state_dict(state)
        policy._refresh_norm()
        return policy.to(device)

    def numpy(self) -> "NumpyPolicy":
        return NumpyPolicy(self)

    def _apply(self, fn, *args, **kwargs):
        # Keep the cached normalisation tensors on the same device as the buffers.
        out = super()._apply(fn, *args, **kwargs)
        self._refresh_norm()
        return out


NUMPY_ACTIVATIONS = {
    "tanh": np.tanh,
    "relu": lambda x: np.maximum(x, 0.0),
    "elu": lambda x: np.where(x > 0, x, np.expm1(np.minimum(x, 0.0))),
}


class NumpyPolicy:
    """The same actor-critic evaluated in numpy (float32), for stepping the simulator.

    A rollout step evaluates both nets on 16-64 observations, where torch's
    per-op overhead dominates: this costs a quarter of the torch forward here.
    On the CPU the arrays are views of the live parameters, so they follow the
    optimizer's in-place updates; from another device they are copies (make a
    fresh one after each update).
    """

    def __init__(self, policy: Policy):
        def layers(net: nn.Sequential) -> list[tuple[np.ndarray, np.ndarray]]:
            return [(m.weight.detach().cpu().numpy().T, m.bias.detach().cpu().numpy())
                    for m in net if isinstance(m, nn.Linear)]

        self.actor, self.critic = layers(policy.actor), layers(policy.critic)
        self.log_std = policy.log_std.detach().cpu().numpy()
        self.act_low, self.act_high = policy.act_low.cpu().numpy(), policy.act_high.cpu().numpy()
        self.activation = NUMPY_ACTIVATIONS[policy.arch["activation"]]

    def _mlp(self, x: np.ndarray, layers) -> np.ndarray:
        for i, (w, b) in enumerate(layers):
            x = x @ w + b
            if i < len(layers) - 1:
                x = self.activation(x)
        return x

    def value(self, nobs: np.ndarray) -> np.ndarray:
        return self._mlp(nobs, self.critic)[:, 0]

    def sample(self, nobs: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Sampled actions (unclipped) [b, act_dim] and their log-probabilities [b]."""
        mean = self._mlp(nobs, self.actor)
        noise = rng.standard_normal(mean.shape, dtype=np.float32)
        logp = (-0.5 * noise * noise - self.log_std - np.float32(_HALF_LOG_2PI)).sum(1)
        return mean + noise * np.exp(self.log_std), logp

    def clip(self, actions: np.ndarray) -> np.ndarray:
        return np.clip(actions, self.act_low, self.act_high)
