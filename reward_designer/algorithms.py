"""Training algorithms by name: what a training worker runs, and how a saved policy is loaded back.

A ``TrainJob`` names its algorithm (``TrainJob.algorithm``, an ``ALGORITHMS``
key); ``worker.run_train`` makes its config, its learner and the training
through that entry, and the analyze worker loads the saved policy with
``load_policy``, which reads the format the file names and hands it to the
entry that saves that format. PPO (ppo.py) is the only entry.

Light to import (no numpy, torch or simulator): an entry imports its algorithm
only when it is used, so a job's algorithm is checked by name where the job is
made.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Protocol

if TYPE_CHECKING:
    import numpy as np

DEFAULT = "ppo"
# A saved policy is an npz of plain arrays (loaded without pickle); this entry of it names its format.
FORMAT_KEY = "__format__"


class SavedPolicy(Protocol):
    """A trained policy as the analyzer rolls it out."""

    def act(self, obs: np.ndarray, deterministic: bool = True) -> np.ndarray:
        """Actions [b, act_dim], within the action bounds, for raw observations [b, obs_dim]."""

    def save(self, path: str | Path) -> None:
        """An npz with ``FORMAT_KEY`` naming the format, which ``load_policy`` reads back."""


@dataclass
class Checkpoints:
    """Where and when a training saves its whole state, where it stops early, and the state it continues
    (a checkpoint: plain arrays, saved between two updates; continuing one gives what an unbroken
    training would have)."""

    path: Path | None = None  # where each checkpoint is written, over the last one
    every: int = 0  # updates between checkpoints; 0: only where the training stops early
    stop_at: int | None = None  # env steps: after the update that reaches them, save a checkpoint and stop
    resume: dict | None = None  # a checkpoint's arrays (``load_checkpoint``): continue that training


class Config(Protocol):
    """An algorithm's hyperparameters, as the training worker reads them."""

    num_envs: int  # the simulator is built with this many envs
    device: str  # where the learner (and a device simulator) runs

    def to_dict(self) -> dict: ...


class TrainingAlgorithm(Protocol):
    policy_format: str  # what its saved policies' FORMAT_KEY says

    def make_config(self, env_id: str, sim: str, overrides: dict, *, total_steps: int, seed: int,
                    device: str) -> Config:
        """Its hyperparameters for ``env_id`` on simulator ``sim``: its defaults for the env with ``overrides``
        over them. ValueError, naming the field, for a bad override."""

    def batch_steps(self, env_id: str, sim: str, overrides: dict) -> int:
        """Env steps per update: a training takes whole batches of them."""

    def check_spaces(self, observation_space: Any, action_space: Any) -> None:
        """ValueError, saying why, unless it can act in these (single-env) spaces."""

    def make_learner(self, sim: Any, cfg: Config, on_fork: Callable[[], None] | None,
                     resume: dict | None = None) -> Any:
        """What trains a fresh policy (``resume``: a checkpoint's, in its state), made before the worker
        confines itself: it may fork, and ``on_fork`` runs first thing in a forked process."""

    def train(self, sim: Any, cfg: Config, learner: Any, reward_fn: Callable | None,
              on_iteration: Callable[[dict], None] | None, checkpoints: Checkpoints | None = None) -> SavedPolicy:
        """Train on ``sim`` with ``reward_fn`` (None: the env's own reward; see ppo.train for its contract),
        calling ``on_iteration(stats)`` after each update; saving, stopping and continuing as
        ``checkpoints`` says."""

    def load_checkpoint(self, path: Path) -> dict:
        """A checkpoint's arrays, checked to be this algorithm's (ValueError otherwise)."""

    def load(self, path: Path) -> SavedPolicy:
        """A policy this algorithm saved."""


class PPO:
    """ppo.py, with the per-task presets of presets.py; saves a ``policy.Policy``."""

    policy_format = "actor-critic"  # policy.FORMAT (kept as text here: policy.py imports torch)

    def make_config(self, env_id, sim, overrides, *, total_steps, seed, device):
        from .ppo_config import PPOConfig
        from .presets import preset_for

        return PPOConfig.from_dict({**preset_for(env_id, sim), **overrides, "total_steps": total_steps,
                                    "seed": seed, "device": device})

    def batch_steps(self, env_id, sim, overrides):
        from .presets import batch_steps

        return batch_steps(env_id, sim, overrides)

    def check_spaces(self, observation_space, action_space):
        from .ppo import check_spaces

        check_spaces(observation_space, action_space)

    def make_learner(self, sim, cfg, on_fork, resume=None):
        from .ppo import make_learner

        return make_learner(sim, cfg, on_fork=on_fork, resume=resume)

    def train(self, sim, cfg, learner, reward_fn, on_iteration, checkpoints=None):
        from .ppo import train

        return train(sim, cfg, reward_fn=reward_fn, on_iteration=on_iteration, learner=learner,
                     checkpoints=checkpoints)

    def load_checkpoint(self, path):
        from .ppo import load_checkpoint

        return load_checkpoint(path)

    def load(self, path):
        from .policy import Policy

        return Policy.load(path)


ALGORITHMS: dict[str, TrainingAlgorithm] = {"ppo": PPO()}


def get_algorithm(name: str) -> TrainingAlgorithm:
    """The algorithm called ``name``; ValueError listing the known ones."""
    try:
        return ALGORITHMS[name]
    except KeyError:
        raise ValueError(f"no training algorithm {name!r}; known: {', '.join(sorted(ALGORITHMS))}") from None


def load_policy(path: str | Path) -> SavedPolicy:
    """The policy saved at ``path``, by the algorithm whose format the file names. The file may come from a
    worker that ran untrusted code: nothing in it is unpickled, and a format no entry saves is refused."""
    import numpy as np

    with np.load(path, allow_pickle=False) as saved:
        # Files saved before formats were named are PPO's, the only algorithm then.
        fmt = str(saved[FORMAT_KEY]) if FORMAT_KEY in saved.files else PPO.policy_format
    for algorithm in ALGORITHMS.values():
        if algorithm.policy_format == fmt:
            return algorithm.load(Path(path))
    raise ValueError(f"{Path(path).name}: a policy of format {fmt[:64]!r}, which no training algorithm here loads")
