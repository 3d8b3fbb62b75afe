"""The gymnasium envs the backends step: making them, the wrappers they keep, the MuJoCo fields read."""

from __future__ import annotations

import gymnasium as gym
from gymnasium.envs.mujoco import MujocoEnv

from reward_designer.mjlog import route_mujoco_warnings

route_mujoco_warnings()  # before any env is made here or in a forked twin

# The MjData fields of a MuJoCo snapshot besides ``obs`` (state.PHYSICS_KEYS).
MJ_KEYS = ("qpos", "qvel", "xpos", "xquat", "cvel", "site_xpos", "sensordata")


def mjdata_keys(contacts: bool, extra: tuple[str, ...] = ()) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(the fields a snapshot hands over, every field a backend reads): ``MJ_KEYS``, with ``cfrc_ext`` for
    a program that reads contacts (``contacts``); then a port's ``extra`` fields, which only its step reads."""
    shown = MJ_KEYS + (("cfrc_ext",) if contacts else ())
    return shown, shown + tuple(k for k in extra if k not in shown)

# The wrappers gym.make puts around every env (gymnasium 1.x): the env checker and the call-order
# check, which change no step, and the time limit, which the steppers here apply themselves. The
# MuJoCo backends step ``env.unwrapped``: any other wrapper (an entry point's, a spec's
# additional_wrappers) would be dropped.
MAKE_WRAPPERS = (gym.wrappers.PassiveEnvChecker, gym.wrappers.OrderEnforcing, gym.wrappers.TimeLimit)


def make_env(env_id: str, env_kwargs: dict | None) -> gym.Env:
    return gym.make(env_id, **(env_kwargs or {}))


def extra_wrappers(env: gym.Env) -> list[str]:
    """Names of the wrappers around ``env`` other than gym.make's own (each of those once)."""
    extra, seen = [], set()
    while isinstance(env, gym.Wrapper):
        if type(env) not in MAKE_WRAPPERS or type(env) in seen:
            extra.append(type(env).__name__)
        seen.add(type(env))
        env = env.env
    return extra


def is_mujoco(env: gym.Env) -> bool:
    """Whether ``env`` is a gymnasium MuJoCo env (its state in an MjData the backends can read)."""
    return isinstance(env.unwrapped, MujocoEnv)
