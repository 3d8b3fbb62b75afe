"""PPO's hyperparameters: ``PPOConfig``, checked when made.

Its own module, free of torch and the simulators, so that checking overrides
(a task card's ``ppo:``, ``--set``) stays as light as reading a card.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields

# The hidden layers' activations policy.py implements (its ACTIVATIONS; a test holds the two equal).
ACTIVATIONS = ("tanh", "relu", "elu")


@dataclass
class PPOConfig:
    total_steps: int = 1_000_000
    num_envs: int = 32  # for whoever builds the simulator; train() uses sim.num_envs
    num_steps: int = 64  # vector steps per rollout; batch = num_envs * num_steps
    lr: float = 3e-4  # the initial one when desired_kl is set
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    update_epochs: int = 10
    num_minibatches: int = 2
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = False
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    target_kl: float | None = None  # stop an update's epochs early past this KL
    # Adaptive step size (rsl_rl's schedule): per minibatch, before its step, lr /= 1.5 when the KL
    # to the behaviour policy is over 2x this, lr *= 1.5 under half of it; replaces anneal_lr.
    # Large minibatches take few steps per sample; this lets each step be as big as is safe.
    desired_kl: float | None = 0.01
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
    torch_threads: int = 1  # per process: the other core steps the simulator's second slab
    fork_learner: bool = True  # split each minibatch with a forked twin when there is a second core

    def __post_init__(self):
        # Values that would train nothing, or fail deep inside a training, are refused when the config is made.
        for name in ("total_steps", "num_envs", "num_steps", "num_minibatches", "update_epochs", "torch_threads"):
            if not getattr(self, name) >= 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)!r}")
        for name, ok, rule in (
            ("lr", 0 < self.lr < math.inf, "positive and finite"),
            ("gamma", 0 < self.gamma <= 1, "in (0, 1]"),
            ("gae_lambda", 0 <= self.gae_lambda <= 1, "in [0, 1]"),
            ("clip_coef", self.clip_coef > 0, "positive"),
            ("desired_kl", self.desired_kl is None or self.desired_kl > 0, "positive, or None"),
            ("target_kl", self.target_kl is None or self.target_kl > 0, "positive, or None"),
            ("hidden", all(h >= 1 for h in self.hidden), "layer sizes of at least 1"),
            ("value_hidden", all(h >= 1 for h in self.value_hidden or ()), "layer sizes of at least 1, or None"),
            ("activation", self.activation in ACTIVATIONS, f"one of {sorted(ACTIVATIONS)}"),
        ):
            if not ok:
                raise ValueError(f"{name} must be {rule}, got {getattr(self, name)!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "PPOConfig":
        """A config from overrides (a preset, a job's JSON, ``--set``). ValueError, naming the field, for an
        unknown key, a value of the wrong type or out of range: a bad override fails here, not in a training."""
        from pydantic import TypeAdapter, ValidationError

        if not isinstance(d, dict):
            raise ValueError(f"PPO overrides must be a mapping of PPOConfig fields, got {d!r}")
        unknown = set(d) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown PPOConfig fields: {sorted(unknown)}")
        for key, value in d.items():
            try:
                json.dumps(value, allow_nan=False)
            except (TypeError, ValueError):  # a set, bytes, NaN: nothing a job's JSON could carry
                raise ValueError(f"{key}: must be a finite number, a string, a list or None (got {value!r})") from None
        try:
            # Strict, as JSON: an int for a float and a list for a tuple, but no "4" for 4, "yes" for True,
            # True for 1 or 4.0 for 4.
            return TypeAdapter(cls).validate_json(json.dumps(d), strict=True)
        except ValidationError as exc:
            e = exc.errors()[0]
            if e["type"] == "value_error":  # __post_init__'s own message
                raise ValueError(str(e["ctx"]["error"])) from None
            where = ".".join(str(x) for x in e["loc"])
            raise ValueError(f"{where}: {e['msg']} (got {e['input']!r})") from None

    def to_dict(self) -> dict:
        return asdict(self)
