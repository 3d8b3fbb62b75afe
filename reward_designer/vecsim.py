"""Batched simulation: n environments stepped together, physics snapshots out.

Two backends behind one interface (``make_vecsim``):

* ``"mujoco"``: for gymnasium's MuJoCo envs. Each env is a gymnasium env object
  whose own ``MjData`` we step; ``mj_step`` releases the GIL, so a slab of envs
  per core steps in parallel threads. Observation, reward, termination and
  reset are the env's own methods, so semantics (reset noise, frame skip,
  healthy ranges, env kwargs) are gymnasium's by construction.
* ``"gym"``: gymnasium's ``SyncVectorEnv`` (same-step autoreset), for any other
  registered env; its snapshot holds only ``obs``.

Autoreset is same-step: ``StepOut.obs`` holds the first observation of the new
episode for envs that finished, while ``StepOut.physics`` is the state the step
ended in (its ``obs`` the final observation), so a reward or a value bootstrap
sees the true last state.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

import gymnasium as gym
import mujoco
import numpy as np

from reward_designer import state as st

MJ_KEYS = ("qpos", "qvel", "xpos", "xquat", "cvel", "site_xpos", "sensordata")


class StepOut(NamedTuple):
    obs: np.ndarray  # [n, obs_dim] next observations, after autoreset
    env_reward: np.ndarray  # [n]
    terminated: np.ndarray  # [n] bool
    truncated: np.ndarray  # [n] bool (time limit)
    physics: dict[str, np.ndarray]  # snapshot right after the step, before any reset


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _make(env_id: str, env_kwargs: dict | None) -> gym.Env:
    return gym.make(env_id, **(env_kwargs or {}))


class MujocoVecSim:
    """gymnasium MuJoCo envs stepped in threads, one slab of envs per core."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                 threads: int | None = None):
        wrapped = [_make(env_id, env_kwargs) for _ in range(num_envs)]
        self.max_episode_steps = wrapped[0].spec.max_episode_steps if wrapped[0].spec else None
        self.envs = [w.unwrapped for w in wrapped]
        e0 = self.envs[0]
        self.num_envs = num_envs
        self.observation_space = e0.observation_space
        self.action_space = e0.action_space
        self.layout = st.layout_from_model(e0.model)
        self.dt = float(e0.dt)
        self._seed = seed
        threads = max(1, min(threads or _cores(), num_envs))
        self._slabs = [range(i * num_envs // threads, (i + 1) * num_envs // threads) for i in range(threads)]
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._elapsed = np.zeros(num_envs, dtype=np.int64)
        self._obs = np.zeros((num_envs,) + self.observation_space.shape)

    # ---------------------------------------------------------------- helpers
    def _alloc(self) -> dict[str, np.ndarray]:
        d = self.envs[0].data
        snap = {"obs": np.empty_like(self._obs)}
        for k in MJ_KEYS:
            snap[k] = np.empty((self.num_envs,) + np.shape(getattr(d, k)))
        return snap

    def _read(self, snap: dict[str, np.ndarray], i: int) -> None:
        d = self.envs[i].data
        for k in MJ_KEYS:
            snap[k][i] = getattr(d, k)

    def _parallel(self, fn) -> None:
        """Run ``fn(slab)`` on every slab: the first in this thread, the rest in the pool."""
        futures = [self._pool.submit(fn, s) for s in self._slabs[1:]] if self._pool else []
        fn(self._slabs[0])
        for f in futures:
            f.result()

    # -------------------------------------------------------------- interface
    def reset(self, seed: int | None = None) -> np.ndarray:
        seed = self._seed if seed is None else seed
        for i, e in enumerate(self.envs):
            self._obs[i] = e.reset(seed=seed + i)[0]
        self._elapsed[:] = 0
        self._current = self._alloc()
        self._current["obs"][:] = self._obs
        for i in range(self.num_envs):
            self._read(self._current, i)
        return self._obs.copy()

    def physics(self) -> dict[str, np.ndarray]:
        """Snapshot of the current state (after resets)."""
        return {k: v.copy() for k, v in self._current.items()}

    def step(self, actions: np.ndarray) -> StepOut:
        actions = np.asarray(actions, dtype=np.float64)
        n = self.num_envs
        now, cur = self._alloc(), self._alloc()
        reward = np.empty(n)
        terminated = np.zeros(n, dtype=bool)
        self._elapsed += 1
        truncated = (
            self._elapsed >= self.max_episode_steps if self.max_episode_steps else np.zeros(n, dtype=bool)
        )
        obs = self._obs

        def work(slab: range) -> None:
            for i in slab:
                e = self.envs[i]
                o, reward[i], terminated[i], _, _ = e.step(actions[i])
                now["obs"][i] = o
                self._read(now, i)
                if terminated[i] or truncated[i]:
                    o = e.reset()[0]
                    self._read(cur, i)
                else:
                    for k in MJ_KEYS:
                        cur[k][i] = now[k][i]
                obs[i] = o

        self._parallel(work)
        done = terminated | truncated
        self._elapsed[done] = 0
        cur["obs"][:] = obs
        self._current = cur
        return StepOut(obs.copy(), reward, terminated, truncated.copy(), now)

    def close(self) -> None:
        if self._pool:
            self._pool.shutdown()
        for e in self.envs:
            e.close()


class GymVecSim:
    """Fallback for any registered env: gymnasium's SyncVectorEnv, same-step autoreset."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None):
        self._env = gym.vector.SyncVectorEnv(
            [lambda: _make(env_id, env_kwargs) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.num_envs = num_envs
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space
        unwrapped = self._env.envs[0].unwrapped
        model = getattr(unwrapped, "model", None)
        self.layout = st.layout_from_model(model) if isinstance(model, mujoco.MjModel) else None
        self.dt = float(getattr(unwrapped, "dt", 0.0) or 1.0 / unwrapped.metadata.get("render_fps", 1) or 1.0)
        self._seed = seed
        self._obs = None

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._obs, _ = self._env.reset(seed=self._seed if seed is None else seed)
        return self._obs

    def physics(self) -> dict[str, np.ndarray]:
        return {"obs": np.asarray(self._obs, dtype=np.float64).reshape(self.num_envs, -1).copy()}

    def step(self, actions: np.ndarray) -> StepOut:
        obs, reward, terminated, truncated, info = self._env.step(actions)
        final = np.array(obs, dtype=np.float64).reshape(self.num_envs, -1)
        if "_final_obs" in info:
            for i in np.flatnonzero(info["_final_obs"]):
                final[i] = np.asarray(info["final_obs"][i], dtype=np.float64).reshape(-1)
        self._obs = obs
        return StepOut(obs, np.asarray(reward, dtype=np.float64), terminated, truncated, {"obs": final})

    def close(self) -> None:
        self._env.close()


VecSim = MujocoVecSim | GymVecSim


def make_vecsim(env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                backend: str = "auto") -> VecSim:
    """A batched simulator for ``env_id``; ``backend``: "auto", "mujoco" or "gym"."""
    if backend == "auto":
        probe = _make(env_id, env_kwargs)
        backend = "mujoco" if isinstance(probe.unwrapped, gym.envs.mujoco.MujocoEnv) else "gym"
        probe.close()
    if backend == "mujoco":
        return MujocoVecSim(env_id, num_envs, seed, env_kwargs)
    if backend == "gym":
        return GymVecSim(env_id, num_envs, seed, env_kwargs)
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'mujoco' or 'gym'")
