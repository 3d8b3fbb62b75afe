"""Batched simulation: n environments stepped together, physics snapshots out.

The contract every backend keeps is ``VecSim``; ``make_vecsim`` builds one by
name from ``BACKENDS`` (a new backend is one module and one line there):

* ``"mujoco"`` (``slabs.py``), for gymnasium's MuJoCo envs: each env's own
  ``MjData``, one slab of envs per core, the slabs past the first in forked
  twin processes;
* ``"gym"`` (``gym_vector.py``): gymnasium's ``SyncVectorEnv``, for any other
  registered env and for a MuJoCo env whose entry point adds wrappers of its
  own (the slab stepper would drop them); its snapshot holds only ``obs``;
* ``"warp"`` (``warp.py``): the worlds of one MuJoCo Warp batch on a device,
  torch tensors out (the ``warp`` extra).

The standard v5 MuJoCo tasks' observation, reward, termination and reset
noise are ported to batched numpy/torch in ``ports.py``, which the slabs and
Warp share. This module imports neither MuJoCo nor torch: a backend is
imported when it is asked for.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import TYPE_CHECKING, Any, Callable, NamedTuple, Protocol, runtime_checkable

if TYPE_CHECKING:
    import gymnasium as gym
    import torch

    from reward_designer.state import ModelLayout

log = logging.getLogger(__name__)

# A simulator on the host: its arrays are numpy. One on a device says which
# torch.device instead, and its arrays are torch tensors there.
HOST = "cpu"


class StepOut(NamedTuple):
    """One vector step. numpy arrays from a host simulator, torch tensors on the device from another."""

    obs: Any  # [n, obs_dim] next observations, after autoreset
    env_reward: Any  # [n]
    terminated: Any  # [n] bool
    truncated: Any  # [n] bool (time limit)
    physics: dict[str, Any]  # snapshot right after the step, before any reset


@runtime_checkable
class VecSim(Protocol):
    """n envs stepped together, with same-step autoreset.

    ``step(actions)`` is ``send(actions)`` then ``recv()``: between the two the
    simulator may step on its own (the slab twins, a GPU) while the caller
    works (the trainer settles the previous step's reward there). ``StepOut.obs``
    holds the first observation of the new episode for envs that finished, while
    ``StepOut.physics`` is the state the step ended in (its ``obs`` the final
    observation), so a reward or a value bootstrap sees the true last state.
    ``reset(seed)`` seeds env i with seed + i; without a seed it reseeds with
    the one given at construction, so it repeats the same starts.
    """

    num_envs: int
    observation_space: gym.Space  # of one env
    action_space: gym.Space  # of one env
    layout: ModelLayout | None  # names -> indices of a MuJoCo model; None for other envs
    dt: float  # seconds per env step
    device: str | torch.device  # HOST ("cpu", the str): numpy arrays; a torch.device: tensors there

    def reset(self, seed: int | None = None) -> Any: ...

    def step(self, actions) -> StepOut: ...

    def send(self, actions) -> None: ...

    def recv(self) -> StepOut: ...

    def physics(self) -> dict[str, Any]: ...  # snapshot of the current state (after any resets)

    def close(self) -> None: ...


class SimBase:
    """What every backend shares: ``step`` as ``send`` then ``recv``, and the host as device."""

    device: str | torch.device = HOST

    def step(self, actions) -> StepOut:
        self.send(actions)
        return self.recv()


def host_only(backend: str, device) -> str:
    """``HOST``, for a backend that simulates on the CPU; a request for another device is refused."""
    if device is not None and str(device) != HOST:
        raise ValueError(f"the {backend!r} backend simulates on the CPU, not on {device}: "
                         "the 'warp' backend runs on a device")
    return HOST


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


# Backend name -> its class, imported on first use (MuJoCo, torch and Warp load only when asked for).
# Each takes (env_id, num_envs, seed, env_kwargs, *, slabs, on_fork, device, contacts).
BACKENDS = {
    "mujoco": "reward_designer.sim.slabs.MujocoVecSim",
    "gym": "reward_designer.sim.gym_vector.GymVecSim",
    "warp": "reward_designer.sim.warp.WarpVecSim",
}


def backend_class(name: str) -> type:
    """The class of backend ``name``."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: expected 'auto' or one of {', '.join(map(repr, BACKENDS))}")
    module, _, cls = BACKENDS[name].rpartition(".")
    return getattr(importlib.import_module(module), cls)


def make_vecsim(env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                backend: str = "auto", slabs: int | None = None,
                on_fork: Callable[[], None] | None = None, device: str | None = None,
                contacts: bool = False) -> VecSim:
    """A batched simulator for ``env_id``.

    ``backend``: "auto" (MuJoCo envs get the slab stepper, others and wrapped
    MuJoCo envs gymnasium's vector env) or a name in ``BACKENDS``. ``slabs``:
    slabs of envs stepped at once by the "mujoco" backend, this process and
    ``slabs - 1`` forked twins (default: one per available core); ``on_fork``
    runs first in each twin. ``device``: where the "warp" batch lives (default:
    CUDA if there is one); the host backends take only the CPU. ``contacts``: each snapshot
    holds ``cfrc_ext``, the bodies' contact forces (MuJoCo envs on "mujoco" or "warp" only; the
    "gym" backend refuses, saying why).
    """
    if backend == "auto":
        from reward_designer.sim.gym_envs import extra_wrappers, is_mujoco, make_env

        probe = make_env(env_id, env_kwargs)
        mujoco_env, wrappers = is_mujoco(probe), extra_wrappers(probe)
        probe.close()
        if mujoco_env and wrappers:
            log.info("%s is wrapped in %s: stepped through gymnasium's vector env, which keeps what they do",
                     env_id, ", ".join(wrappers))
        backend = "mujoco" if mujoco_env and not wrappers else "gym"
    return backend_class(backend)(env_id, num_envs, seed, env_kwargs, slabs=slabs, on_fork=on_fork, device=device,
                                  contacts=contacts)
