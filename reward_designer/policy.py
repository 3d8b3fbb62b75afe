"""The actor-critic: a Gaussian MLP policy, an MLP value, observation statistics.

Saved as plain weights: one ``.npz`` with every tensor, the architecture as
a JSON string and the format's name (``FORMAT``, which ``algorithms.load_policy``
reads), loaded with ``allow_pickle=False`` so a checkpoint can never run code.
"""

from __future__ import annotations

import functools
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch
from torch import nn

HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)
FORMAT = "actor-critic"  # what a saved file says it holds, under algorithms.FORMAT_KEY


ACTIVATIONS = {"tanh": nn.Tanh, "relu": nn.ReLU, "elu": nn.ELU}

# The same activations on arrays, numpy or torch (``xp`` is the module): the
# function, and its derivative written in its output y, which backprop keeps.
ARRAY_ACTIVATIONS = {
    "tanh": (lambda xp, x: xp.tanh(x), lambda y: 1 - y * y),
    "relu": (lambda xp, x: x * (x > 0), lambda y: y > 0),
    "elu": (lambda xp, x: xp.where(x > 0, x, xp.expm1(x.clip(max=0))), lambda y: 1 + y * (y < 0)),
}


def torch_device(device: str | torch.device) -> torch.device:
    """``device`` as a torch.device, a CUDA one with its index. Plain "cuda" is the current CUDA device,
    which tensors made there report as cuda:N; torch.device("cuda") compares unequal to that."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


def array_activation(name: str, xp) -> tuple:
    """``name``'s (function, derivative from the output) on ``xp``'s arrays (numpy or torch)."""
    fn, grad = ARRAY_ACTIVATIONS[name]
    return functools.partial(fn, xp), grad


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

    # ----------------------------------------------------------------- acting
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
            np.savez(f, __format__=np.array(FORMAT), __arch__=np.array(json.dumps(self.arch)), **arrays)

    @classmethod
    def load(cls, path: str | Path, device: str | torch.device = "cpu") -> "Policy":
        with np.load(path, allow_pickle=False) as z:
            arch = json.loads(str(z["__arch__"]))
            state = {k: torch.from_numpy(z[k]) for k in z.files if not k.startswith("__")}  # not the labels
        arch["hidden"] = tuple(arch["hidden"])
        arch["value_hidden"] = tuple(arch["value_hidden"])
        policy = cls(**arch)
        policy.load_state_dict(state)
        policy._refresh_norm()
        return policy.to(device)

    def arrays(self, on_device: bool = False) -> "ArrayPolicy":
        """The nets as numpy arrays on the CPU, or (``on_device``) as tensors on this module's device."""
        return ArrayPolicy(self, on_device)

    def _apply(self, fn, *args, **kwargs):
        # Keep the cached normalisation tensors on the same device as the buffers.
        out = super()._apply(fn, *args, **kwargs)
        self._refresh_norm()
        return out


class ArrayNets(NamedTuple):
    """The actor-critic's parameters as arrays: per MLP ``[(w [in, out], b [out]), ...]``, and the log-std.

    Built over named arrays (``Policy`` parameter names), numpy or torch: the
    parameters themselves, or a gradient laid out like them, to write into.
    """

    actor: list
    critic: list
    log_std: Any

    @classmethod
    def of(cls, named: dict) -> "ArrayNets":
        def mlp(prefix: str) -> list:
            layers = sorted({int(k.split(".")[1]) for k in named if k.startswith(prefix + ".")})
            return [(named[f"{prefix}.{i}.weight"].T, named[f"{prefix}.{i}.bias"]) for i in layers]

        return cls(mlp("actor"), mlp("critic"), named["log_std"])


def mlp_forward(layers: list, x, act) -> list:
    """Every layer's output, the input first: ``[x, h1, ..., out]`` (``act(x)``: the hidden activation)."""
    outs = [x]
    for i, (w, b) in enumerate(layers):
        x = x @ w + b
        if i < len(layers) - 1:
            x = act(x)
        outs.append(x)
    return outs


def mlp_backward(layers: list, outs: list, d_out, grads: list, act_grad) -> None:
    """Backpropagate ``d_out`` (d loss / d output) through ``mlp_forward``'s ``outs``;
    each layer's d loss / d w and / d b are written into ``grads`` (same layout as ``layers``)."""
    d = d_out
    for i in reversed(range(len(layers))):
        gw, gb = grads[i]
        gw[...] = outs[i].T @ d
        gb[...] = d.sum(0)
        if i:
            d = (d @ layers[i][0].T) * act_grad(outs[i])


class ArrayPolicy:
    """The policy's mirror in plain arrays (numpy on the CPU), which steps the simulator.

    On the CPU the arrays are numpy (float32): a rollout step evaluates both
    nets on 16-64 observations, where torch's per-op overhead dominates, and
    this costs a quarter of the torch forward here. For a simulator on a device
    (``sim.warp``) they are torch tensors there, and the noise comes from a
    ``torch.Generator`` on it. Either way the arrays are views of the live
    parameters where they share a device, so they follow the optimizer's
    in-place updates; otherwise they are copies (make a fresh one after each update).
    """

    def __init__(self, policy: Policy, on_device: bool = False):
        self.xp = torch if on_device else np
        arrays = (lambda t: t.detach()) if on_device else (lambda t: t.detach().cpu().numpy())
        self.nets = ArrayNets.of({k: arrays(p) for k, p in policy.named_parameters()})
        self.act_low, self.act_high = arrays(policy.act_low), arrays(policy.act_high)
        self.activation = array_activation(policy.arch["activation"], self.xp)[0]

    def value(self, nobs):
        return mlp_forward(self.nets.critic, nobs, self.activation)[-1][:, 0]

    def sample(self, nobs, rng: np.random.Generator | torch.Generator) -> tuple:
        """Sampled actions (unclipped) [b, act_dim] and their log-probabilities [b]."""
        mean = mlp_forward(self.nets.actor, nobs, self.activation)[-1]
        log_std = self.nets.log_std
        if self.xp is np:
            noise = rng.standard_normal(mean.shape, dtype=np.float32)
        else:
            noise = torch.randn(mean.shape, generator=rng, device=mean.device)
        logp = (-0.5 * noise * noise - log_std - np.float32(HALF_LOG_2PI)).sum(1)
        return mean + noise * self.xp.exp(log_std), logp

    def clip(self, actions):
        return self.xp.clip(actions, self.act_low, self.act_high)
