"""Batched simulation: n environments stepped together, physics snapshots out.

Two backends behind one interface (``make_vecsim``):

* ``"mujoco"``, for gymnasium's MuJoCo envs. Each of the n envs is a real
  gymnasium env object and we step its own ``MjData``. ``mj_step`` releases
  the GIL, so one thread per core steps a slab of envs in parallel. After the
  step each env's fields are copied into one row of a flat array, and for the
  standard v5 tasks the observation, reward and termination are computed on
  the whole batch in numpy (``_Kernel``, parameters read from the env object so
  env kwargs carry over; tests hold them to gymnasium step for step). Any
  other MuJoCo env (a subclass, a user's own) calls its own ``env.step`` per
  env in the same threads. Resets are always the env's own ``reset`` (its
  reset noise, its RNG stream).
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
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

from reward_designer import state as st

MJ_KEYS = ("qpos", "qvel", "xpos", "xquat", "cvel", "site_xpos", "sensordata")


class StepOut(NamedTuple):
    obs: np.ndarray  # [n, obs_dim] next observations, after autoreset
    env_reward: np.ndarray  # [n]
    terminated: np.ndarray  # [n] bool
    truncated: np.ndarray  # [n] bool (time limit)
    physics: dict[str, np.ndarray]  # snapshot right after the step, before any reset


def cpu_cores() -> int:
    """CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def _make(env_id: str, env_kwargs: dict | None) -> gym.Env:
    return gym.make(env_id, **(env_kwargs or {}))


# ------------------------------------------------------- vectorized kernels
def _ctrl_cost(weight: float, action: np.ndarray) -> np.ndarray:
    return weight * np.square(action).sum(1)


class _Kernel:
    """Observation, reward and termination of one gymnasium env class, batched.

    ``f``/``before``/``after`` map MjData field names to [n, ...] arrays; ``extra``
    names the fields needed beyond ``MJ_KEYS``; ``rne`` whether they need
    ``mj_rnePostConstraint`` (contact forces), which gymnasium runs every step.
    """

    extra: tuple[str, ...] = ()
    rne = False

    def __init__(self, env):
        self.env = env
        self.dt = env.dt

    def obs(self, f: dict[str, np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def reward(self, before, after, action) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError


class _HalfCheetah(_Kernel):
    def obs(self, f):
        skip = int(self.env._exclude_current_positions_from_observation)
        return np.concatenate([f["qpos"][:, skip:], f["qvel"]], axis=1)

    def reward(self, before, after, action):
        e = self.env
        vx = (after["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt
        r = e._forward_reward_weight * vx - _ctrl_cost(e._ctrl_cost_weight, action)
        return r, np.zeros(len(r), dtype=bool)


class _Swimmer(_HalfCheetah):
    def obs(self, f):
        skip = 2 * int(self.env._exclude_current_positions_from_observation)
        return np.concatenate([f["qpos"][:, skip:], f["qvel"]], axis=1)


class _Walker2d(_Kernel):
    def obs(self, f):
        skip = int(self.env._exclude_current_positions_from_observation)
        return np.concatenate([f["qpos"][:, skip:], np.clip(f["qvel"], -10, 10)], axis=1)

    def healthy(self, f) -> np.ndarray:
        e = self.env
        z, angle = f["qpos"][:, 1], f["qpos"][:, 2]
        (zlo, zhi), (alo, ahi) = e._healthy_z_range, e._healthy_angle_range
        return (zlo < z) & (z < zhi) & (alo < angle) & (angle < ahi)

    def reward(self, before, after, action):
        e = self.env
        healthy = self.healthy(after)
        vx = (after["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt
        r = e._forward_reward_weight * vx + healthy * e._healthy_reward - _ctrl_cost(e._ctrl_cost_weight, action)
        return r, ~healthy & bool(e._terminate_when_unhealthy)


class _Hopper(_Walker2d):
    def healthy(self, f):
        lo, hi = self.env._healthy_state_range
        rest = np.concatenate([f["qpos"][:, 2:], f["qvel"]], axis=1)
        return super().healthy(f) & ((lo < rest) & (rest < hi)).all(1)


class _Ant(_Kernel):
    extra = ("cfrc_ext",)
    rne = True

    def __init__(self, env):
        super().__init__(env)
        self.main = env.data.body(env._main_body).id

    def obs(self, f):
        e = self.env
        skip = 2 * int(e._exclude_current_positions_from_observation)
        parts = [f["qpos"][:, skip:], f["qvel"]]
        if e._include_cfrc_ext_in_observation:
            parts.append(np.clip(f["cfrc_ext"][:, 1:], *e._contact_force_range).reshape(len(f["qpos"]), -1))
        return np.concatenate(parts, axis=1)

    def reward(self, before, after, action):
        e = self.env
        vx = (after["xpos"][:, self.main, 0] - before["xpos"][:, self.main, 0]) / self.dt
        contact = e._contact_cost_weight * np.square(np.clip(after["cfrc_ext"], *e._contact_force_range)).sum((1, 2))
        lo, hi = e._healthy_z_range
        z = after["qpos"][:, 2]
        finite = np.isfinite(after["qpos"]).all(1) & np.isfinite(after["qvel"]).all(1)
        healthy = finite & (lo <= z) & (z <= hi)
        r = (e._forward_reward_weight * vx + healthy * e._healthy_reward
             - _ctrl_cost(e._ctrl_cost_weight, action) - contact)
        return r, ~healthy & bool(e._terminate_when_unhealthy)


class _Humanoid(_Kernel):
    extra = ("cinert", "qfrc_actuator", "cfrc_ext", "xipos", "ctrl")
    rne = True

    def __init__(self, env):
        super().__init__(env)
        self.mass = env.model.body_mass / env.model.body_mass.sum()

    def obs(self, f):
        e = self.env
        n = len(f["qpos"])
        skip = 2 * int(e._exclude_current_positions_from_observation)
        parts = [f["qpos"][:, skip:], f["qvel"]]
        if e._include_cinert_in_observation:
            parts.append(f["cinert"][:, 1:].reshape(n, -1))
        if e._include_cvel_in_observation:
            parts.append(f["cvel"][:, 1:].reshape(n, -1))
        if e._include_qfrc_actuator_in_observation:
            parts.append(f["qfrc_actuator"][:, 6:])
        if e._include_cfrc_ext_in_observation:
            parts.append(f["cfrc_ext"][:, 1:].reshape(n, -1))
        return np.concatenate(parts, axis=1)

    def reward(self, before, after, action):
        e = self.env
        com = lambda f: np.einsum("b,nbj->nj", self.mass, f["xipos"])[:, 0]  # noqa: E731
        vx = (com(after) - com(before)) / self.dt
        contact = np.clip(e._contact_cost_weight * np.square(after["cfrc_ext"]).sum((1, 2)), *e._contact_cost_range)
        lo, hi = e._healthy_z_range
        z = after["qpos"][:, 2]
        healthy = (lo < z) & (z < hi)
        # gymnasium's Humanoid charges the control it applied (data.ctrl), not the action.
        r = (e._forward_reward_weight * vx + healthy * e._healthy_reward
             - _ctrl_cost(e._ctrl_cost_weight, after["ctrl"]) - contact)
        return r, ~healthy & bool(e._terminate_when_unhealthy)


# Exact classes only: a subclass may override step() and must keep its own semantics.
KERNELS: dict[type, type[_Kernel]] = {
    HalfCheetahEnv: _HalfCheetah,
    HopperEnv: _Hopper,
    Walker2dEnv: _Walker2d,
    AntEnv: _Ant,
    HumanoidEnv: _Humanoid,
    SwimmerEnv: _Swimmer,
}


class _Rows:
    """Where each MjData field of one env lives in a row of a flat [n, width] array."""

    def __init__(self, data: mujoco.MjData, keys: tuple[str, ...]):
        self.keys = keys
        self.shapes = [np.shape(getattr(data, k)) for k in keys]
        sizes = [int(np.prod(s)) for s in self.shapes]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).tolist()
        self.width = self.offsets[-1]

    def views(self, data: mujoco.MjData) -> list[np.ndarray]:
        # Views into MjData's memory stay valid for its lifetime: build them once.
        return [getattr(data, k).reshape(-1) for k in self.keys]

    def split(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        n = len(flat)
        return {
            k: flat[:, a:b].reshape((n,) + s)
            for k, s, a, b in zip(self.keys, self.shapes, self.offsets[:-1], self.offsets[1:])
        }


class MujocoVecSim:
    """gymnasium MuJoCo envs stepped in threads, one slab of envs per core."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                 threads: int | None = None):
        wrapped = [_make(env_id, env_kwargs) for _ in range(num_envs)]
        self.max_episode_steps = wrapped[0].spec.max_episode_steps if wrapped[0].spec else None
        self.envs = [w.unwrapped for w in wrapped]
        e0 = self.envs[0]
        kernel = KERNELS.get(type(e0))
        self.kernel = kernel(e0) if kernel else None
        self.num_envs = num_envs
        self.observation_space = e0.observation_space
        self.action_space = e0.action_space
        self.layout = st.layout_from_model(e0.model)
        self.dt = float(e0.dt)
        self._seed = seed
        keys = MJ_KEYS + tuple(k for k in (self.kernel.extra if self.kernel else ()) if k not in MJ_KEYS)
        self._rows = _Rows(e0.data, keys)
        self._views = [self._rows.views(e.data) for e in self.envs]
        self._steppers = [(e.model, e.data, e.frame_skip, e.data.ctrl, v) for e, v in zip(self.envs, self._views)]
        threads = max(1, min(threads or cpu_cores(), num_envs))
        self._slabs = [range(i * num_envs // threads, (i + 1) * num_envs // threads) for i in range(threads)]
        self._pool = ThreadPoolExecutor(threads - 1) if threads > 1 else None
        self._elapsed = np.zeros(num_envs, dtype=np.int64)

    def _parallel(self, fn) -> None:
        """Run ``fn(slab)`` on every slab: the first in this thread, the rest in the pool."""
        futures = [self._pool.submit(fn, s) for s in self._slabs[1:]] if self._pool else []
        fn(self._slabs[0])
        for f in futures:
            f.result()

    def _snapshot(self, flat: np.ndarray, obs: np.ndarray) -> dict[str, np.ndarray]:
        f = self._rows.split(flat)
        return {"obs": obs, **{k: f[k] for k in MJ_KEYS}}

    def reset(self, seed: int | None = None) -> np.ndarray:
        seed = self._seed if seed is None else seed
        self._obs = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(self.envs)]).astype(np.float64)
        self._flat = np.empty((self.num_envs, self._rows.width))
        for i, views in enumerate(self._views):
            np.concatenate(views, out=self._flat[i])
        self._elapsed[:] = 0
        return self._obs.copy()

    def physics(self) -> dict[str, np.ndarray]:
        """Snapshot of the current state (after any resets)."""
        return self._snapshot(self._flat.copy(), self._obs.copy())

    def step(self, actions: np.ndarray) -> StepOut:
        actions = np.asarray(actions, dtype=np.float64).reshape(self.num_envs, -1)
        n = self.num_envs
        flat = np.empty((n, self._rows.width))
        envs, views = self.envs, self._views

        if self.kernel is not None:
            steppers, rne = self._steppers, self.kernel.rne
            mj_step, mj_rne, concatenate = mujoco.mj_step, mujoco.mj_rnePostConstraint, np.concatenate

            def work(slab: range) -> None:  # the hot loop: locals only
                for i in slab:
                    model, data, frame_skip, ctrl, row_views = steppers[i]
                    ctrl[:] = actions[i]
                    mj_step(model, data, frame_skip)
                    if rne:
                        mj_rne(model, data)
                    concatenate(row_views, out=flat[i])

            self._parallel(work)
            after = self._rows.split(flat)
            final_obs = self.kernel.obs(after)
            reward, terminated = self.kernel.reward(self._rows.split(self._flat), after, actions)
        else:
            final_obs = np.empty_like(self._obs)
            reward, terminated = np.empty(n), np.zeros(n, dtype=bool)

            def work(slab: range) -> None:
                for i in slab:
                    final_obs[i], reward[i], terminated[i], _, _ = envs[i].step(actions[i])
                    np.concatenate(views[i], out=flat[i])

            self._parallel(work)

        self._elapsed += 1
        if self.max_episode_steps:
            truncated = self._elapsed >= self.max_episode_steps
        else:
            truncated = np.zeros(n, dtype=bool)
        done = terminated | truncated
        obs, current = final_obs, flat
        if done.any():
            obs, current = final_obs.copy(), flat.copy()
            for i in np.flatnonzero(done):
                obs[i] = envs[i].reset()[0]
                np.concatenate(views[i], out=current[i])
            self._elapsed[done] = 0
        self._obs, self._flat = obs, current
        return StepOut(obs.copy(), reward, terminated, truncated, self._snapshot(flat, final_obs))

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
        fps = unwrapped.metadata.get("render_fps")
        self.dt = float(getattr(unwrapped, "dt", None) or (1.0 / fps if fps else 1.0))
        self._seed = seed

    def _flat(self, obs) -> np.ndarray:
        return np.asarray(obs, dtype=np.float64).reshape(self.num_envs, -1).copy()

    def reset(self, seed: int | None = None) -> np.ndarray:
        self._obs, _ = self._env.reset(seed=self._seed if seed is None else seed)
        return self._obs

    def physics(self) -> dict[str, np.ndarray]:
        return {"obs": self._flat(self._obs)}

    def step(self, actions: np.ndarray) -> StepOut:
        obs, reward, terminated, truncated, info = self._env.step(actions)
        final = self._flat(obs)
        for i in np.flatnonzero(info.get("_final_obs", ())):
            final[i] = np.asarray(info["final_obs"][i], dtype=np.float64).reshape(-1)
        self._obs = obs
        return StepOut(obs, np.asarray(reward, dtype=np.float64), terminated, truncated, {"obs": final})

    def close(self) -> None:
        self._env.close()


VecSim = MujocoVecSim | GymVecSim


def make_vecsim(env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                backend: str = "auto", threads: int | None = None) -> VecSim:
    """A batched simulator for ``env_id``.

    ``backend``: "auto" (MuJoCo envs get the threaded stepper, others gymnasium's
    vector env), "mujoco" or "gym". ``threads``: stepping threads for the MuJoCo
    backend (default: one per available core).
    """
    if backend == "auto":
        probe = _make(env_id, env_kwargs)
        backend = "mujoco" if isinstance(probe.unwrapped, gym.envs.mujoco.MujocoEnv) else "gym"
        probe.close()
    if backend == "mujoco":
        return MujocoVecSim(env_id, num_envs, seed, env_kwargs, threads)
    if backend == "gym":
        return GymVecSim(env_id, num_envs, seed, env_kwargs)
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'mujoco' or 'gym'")
