"""Batched simulation: n environments stepped together, physics snapshots out.

Two backends behind one interface (``make_vecsim``):

* ``"mujoco"``, for gymnasium's MuJoCo envs. Each of the n envs is a real
  gymnasium env object and we step its own ``MjData``, one slab of envs per
  core: this process steps the first slab and a forked twin process each
  other one (each env's step is a few Python calls around ``mj_step``, and
  threads serialize them on the GIL; stepping 32 HalfCheetahs, twins gave ~9%
  more steps/s than threads here, 3 noisy runs each). Each env's fields are
  copied into one row of flat arrays in shared memory, and for the standard
  v5 tasks the observation, reward and termination are computed per slab in
  numpy (``_Kernel``, parameters read from the env object so env kwargs carry
  over; tests hold them to gymnasium step for step). Any other MuJoCo env (a
  subclass, a user's own) calls its own ``env.step`` per env in the same
  slabs. Resets are always the env's own ``reset`` (its reset noise, its RNG
  stream), in the process that owns the env. Every ``BALANCE_EVERY`` steps
  the split moves envs (their MuJoCo state and RNG) towards whichever process
  waited, so this process, which also does the caller's work between
  ``send`` and ``recv``, steps fewer envs the more of that work there is.
* ``"gym"``: gymnasium's ``SyncVectorEnv`` (same-step autoreset), for any other
  registered env, and for a MuJoCo env whose entry point adds wrappers of its
  own (the slab stepper would drop them); its snapshot holds only ``obs``.

``step(actions)`` is ``send(actions)`` then ``recv()``: between the two the
twins are stepping their slabs and the caller is free (the trainer computes the
previous step's reward there); ``recv`` steps this process's slab and waits.

Autoreset is same-step: ``StepOut.obs`` holds the first observation of the new
episode for envs that finished, while ``StepOut.physics`` is the state the step
ended in (its ``obs`` the final observation), so a reward or a value bootstrap
sees the true last state.
"""

from __future__ import annotations

import logging
import os
import struct
import time
import weakref
from typing import Callable, NamedTuple

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
from reward_designer.mjlog import route_mujoco_warnings
from reward_designer.twin import Twin, shared_array

route_mujoco_warnings()  # before any env is made here or in a forked twin
log = logging.getLogger(__name__)

# A slab twin's requests (RESET carries an 8-byte seed) and its answer.
_STEP, _RESET, _EXPORT, _IMPORT, _DONE = b"s", b"r", b"x", b"i", b"d"
# The slab split is rebalanced every this many steps (``MujocoVecSim._balance``).
BALANCE_EVERY = 64
# What moves with an env between processes: MuJoCo's state for mj_step
# (positions, velocities, warm start, controls, time) and its reset RNG.
_MJ_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_U64 = (1 << 64) - 1
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


# The wrappers gym.make puts around every env (gymnasium 1.x): the env checker and the call-order
# check, which change no step, and the time limit, which the steppers here apply themselves. They step
# ``env.unwrapped``: any other wrapper (an entry point's, a spec's additional_wrappers) would be dropped.
_MAKE_WRAPPERS = (gym.wrappers.PassiveEnvChecker, gym.wrappers.OrderEnforcing, gym.wrappers.TimeLimit)


def _extra_wrappers(env: gym.Env) -> list[str]:
    """Names of the wrappers around ``env`` other than gym.make's own (each of those once)."""
    extra, seen = [], set()
    while isinstance(env, gym.Wrapper):
        if type(env) not in _MAKE_WRAPPERS or type(env) in seen:
            extra.append(type(env).__name__)
        seen.add(type(env))
        env = env.env
    return extra


# ------------------------------------------------------- vectorized kernels
def _ctrl_cost(weight: float, action):
    return weight * (action * action).sum(1)


class _Kernel:
    """Observation, reward, termination and reset noise of one gymnasium env class, batched.

    ``f``/``before``/``after`` map MjData field names to [n, ...] arrays, numpy
    or torch (``xp``: this stepper's on the CPU, ``warpsim``'s on a device);
    ``extra`` names the fields needed beyond ``MJ_KEYS``; ``rne`` whether they
    need ``mj_rnePostConstraint`` (contact forces), which gymnasium runs every
    step. ``normal_qvel``: the class's ``reset_model`` draws qvel noise from a
    normal (times the noise scale), not a uniform.
    """

    extra: tuple[str, ...] = ()
    rne = False
    normal_qvel = False

    def __init__(self, env, xp=np):
        self.env, self.xp = env, xp
        self.dt = env.dt

    def obs(self, f: dict):
        raise NotImplementedError

    def reward(self, before, after, action) -> tuple:
        raise NotImplementedError


class _HalfCheetah(_Kernel):
    normal_qvel = True

    def obs(self, f):
        skip = int(self.env._exclude_current_positions_from_observation)
        return self.xp.concatenate([f["qpos"][:, skip:], f["qvel"]], axis=1)

    def reward(self, before, after, action):
        e = self.env
        vx = (after["qpos"][:, 0] - before["qpos"][:, 0]) / self.dt
        r = e._forward_reward_weight * vx - _ctrl_cost(e._ctrl_cost_weight, action)
        return r, self.xp.zeros_like(r, dtype=bool)


class _Swimmer(_HalfCheetah):
    normal_qvel = False

    def obs(self, f):
        skip = 2 * int(self.env._exclude_current_positions_from_observation)
        return self.xp.concatenate([f["qpos"][:, skip:], f["qvel"]], axis=1)


class _Walker2d(_Kernel):
    def obs(self, f):
        skip = int(self.env._exclude_current_positions_from_observation)
        return self.xp.concatenate([f["qpos"][:, skip:], self.xp.clip(f["qvel"], -10, 10)], axis=1)

    def healthy(self, f):
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
        rest = self.xp.concatenate([f["qpos"][:, 2:], f["qvel"]], axis=1)
        return super().healthy(f) & ((lo < rest) & (rest < hi)).all(1)


class _Ant(_Kernel):
    extra = ("cfrc_ext",)
    rne = True
    normal_qvel = True

    def __init__(self, env, xp=np):
        super().__init__(env, xp)
        self.main = env.data.body(env._main_body).id

    def obs(self, f):
        e, xp = self.env, self.xp
        skip = 2 * int(e._exclude_current_positions_from_observation)
        parts = [f["qpos"][:, skip:], f["qvel"]]
        if e._include_cfrc_ext_in_observation:
            parts.append(xp.clip(f["cfrc_ext"][:, 1:], *e._contact_force_range).reshape(len(f["qpos"]), -1))
        return xp.concatenate(parts, axis=1)

    def reward(self, before, after, action):
        e, xp = self.env, self.xp
        vx = (after["xpos"][:, self.main, 0] - before["xpos"][:, self.main, 0]) / self.dt
        contact = e._contact_cost_weight * xp.square(xp.clip(after["cfrc_ext"], *e._contact_force_range)).sum((1, 2))
        lo, hi = e._healthy_z_range
        z = after["qpos"][:, 2]
        finite = xp.isfinite(after["qpos"]).all(1) & xp.isfinite(after["qvel"]).all(1)
        healthy = finite & (lo <= z) & (z <= hi)
        r = (e._forward_reward_weight * vx + healthy * e._healthy_reward
             - _ctrl_cost(e._ctrl_cost_weight, action) - contact)
        return r, ~healthy & bool(e._terminate_when_unhealthy)


class _Humanoid(_Kernel):
    extra = ("cinert", "qfrc_actuator", "cfrc_ext", "xipos", "ctrl")
    rne = True

    def __init__(self, env, xp=np):
        super().__init__(env, xp)
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
        return self.xp.concatenate(parts, axis=1)

    def reward(self, before, after, action):
        e, xp = self.env, self.xp
        # numpy only: Warp refuses Humanoid's PGS solver, so this kernel never sees torch tensors.
        com = lambda f: np.einsum("b,nbj->nj", self.mass, f["xipos"])[:, 0]  # noqa: E731
        vx = (com(after) - com(before)) / self.dt
        contact = xp.clip(e._contact_cost_weight * xp.square(after["cfrc_ext"]).sum((1, 2)), *e._contact_cost_range)
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


def _even_bounds(start: int, stop: int, parts: int) -> list[int]:
    """``parts + 1`` bounds that cut [start, stop) into parts whose sizes differ by at most one."""
    return [start + k * (stop - start) // parts for k in range(parts + 1)]


class SimBase:
    """A batched simulator: ``reset``, ``physics``, ``send``, ``recv``, ``close``.

    ``step`` is ``send`` then ``recv``; between them the caller may do other
    work while the simulator steps (the trainer settles the previous step's
    reward there). ``reset(seed)`` seeds env i with seed + i; without a seed it
    reseeds with the one given at construction (unlike gymnasium, whose
    unseeded reset goes on from the RNG's state), so it repeats the same starts.
    """

    def step(self, actions: np.ndarray) -> StepOut:
        self.send(actions)
        return self.recv()


class MujocoVecSim(SimBase):
    """gymnasium MuJoCo envs, one slab of envs per core: this process steps the
    first, a forked twin process (``twin.Twin``) each of the others.

    ``envs[i]`` of a twin's slab is, in this process, a stale copy from before
    the fork: read state through ``step``'s snapshot or ``physics()``."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                 workers: int | None = None, on_fork: Callable[[], None] | None = None):
        wrapped = [_make(env_id, env_kwargs) for _ in range(num_envs)]
        if wrappers := _extra_wrappers(wrapped[0]):
            raise ValueError(f"{env_id} is wrapped in {', '.join(wrappers)}, which the 'mujoco' backend "
                             "would drop: use the 'gym' backend")
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
        # Every slab writes its rows of these; shared, so a twin's rows are seen here.
        n, obs_dim = num_envs, int(np.prod(self.observation_space.shape))
        self._act = shared_array((n, int(np.prod(self.action_space.shape))))
        self._after = shared_array((n, self._rows.width))  # the state each step ended in
        self._current = shared_array((n, self._rows.width))  # after autoresets
        self._final_obs, self._obs = shared_array((n, obs_dim)), shared_array((n, obs_dim))
        self._reward = shared_array((n,))
        self._terminated, self._truncated = shared_array((n,), bool), shared_array((n,), bool)
        self._elapsed = shared_array((n,), np.int64)
        workers = max(1, min(workers or cpu_cores(), num_envs))
        # Slab j is envs [bounds[j], bounds[j+1]). Shared, so a twin sees a new split.
        # Equal to start; ``_balance`` then moves envs to whichever process waits.
        self._bounds = shared_array((workers + 1,), np.int64)
        self._bounds[:] = _even_bounds(0, n, workers)
        self._next_bounds = shared_array((workers + 1,), np.int64)
        self._busy = shared_array((workers,))  # seconds each process spent on steps since the last balance
        self._steps, self._sent_at = 0, 0.0
        self._extra: float | None = None  # this process's work besides its slab, in env-steps, averaged
        # Only the exact gymnasium classes are known to keep no state outside MjData and the RNG.
        self.movable = self.kernel is not None and isinstance(e0.np_random.bit_generator, np.random.PCG64)
        if self.movable:
            self._handoff = shared_array((n, mujoco.mj_stateSize(e0.model, _MJ_STATE)))
            self._handoff_rng = shared_array((n, 6), np.uint64)
        self._twins: list[Twin] = []
        # A sim dropped without close() must not leave its twins running, holding their pipes.
        self._close_twins = weakref.finalize(self, _close_all, self._twins, os.getpid())
        self._in_flight = False
        self._unusable: str | None = None  # why every later request is refused
        try:
            for j in range(1, workers):
                self._twins.append(Twin(lambda twin, j=j: self._serve(twin, j), on_fork))
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------ one slab's work
    def _slab(self, j: int, bounds: np.ndarray | None = None) -> slice:
        b = self._bounds if bounds is None else bounds
        return slice(int(b[j]), int(b[j + 1]))

    def _serve(self, twin: Twin, j: int) -> None:
        """Twin ``j``: step, reset or hand over envs of slab ``j`` on each request until the parent goes."""
        while request := twin.read(1):
            if request == _STEP:
                self._timed_step(j, time.perf_counter())
            elif request == _RESET:
                (seed,) = struct.unpack("q", twin.read(8))
                self._reset_slab(self._slab(j), seed)
            elif request == _EXPORT:
                self._export(j)
            elif request == _IMPORT:
                self._import(j)
            else:
                return
            twin.send(_DONE)

    def _timed_step(self, j: int, since: float) -> None:
        """Step slab j; count the time from ``since`` as process j's (``_balance`` reads it)."""
        self._step_slab(self._slab(j))
        self._busy[j] += time.perf_counter() - since

    def _moving(self, j: int, src: np.ndarray, dst: np.ndarray) -> list[int]:
        """Envs in process j's slab under ``src`` bounds and not under ``dst``."""
        a, b = self._slab(j, src), self._slab(j, dst)
        return [i for i in range(a.start, a.stop) if not b.start <= i < b.stop]

    def _export(self, j: int) -> None:
        """Write the state of the envs leaving slab j to the handoff rows."""
        for i in self._moving(j, self._bounds, self._next_bounds):
            env = self.envs[i]
            mujoco.mj_getState(env.model, env.data, self._handoff[i], _MJ_STATE)
            rng = env.np_random.bit_generator.state
            s, inc = rng["state"]["state"], rng["state"]["inc"]
            self._handoff_rng[i] = (s >> 64, s & _U64, inc >> 64, inc & _U64, rng["has_uint32"], rng["uinteger"])

    def _import(self, j: int) -> None:
        """Take over the envs joining slab j from the handoff rows (this process's copies are stale)."""
        for i in self._moving(j, self._next_bounds, self._bounds):
            env = self.envs[i]
            mujoco.mj_setState(env.model, env.data, self._handoff[i], _MJ_STATE)
            s_hi, s_lo, inc_hi, inc_lo, has_uint32, uinteger = (int(x) for x in self._handoff_rng[i])
            env.np_random.bit_generator.state = {
                "bit_generator": "PCG64", "state": {"state": s_hi << 64 | s_lo, "inc": inc_hi << 64 | inc_lo},
                "has_uint32": has_uint32, "uinteger": uinteger}

    def _reset_env(self, i: int, seed: int | None = None) -> None:
        self._obs[i] = self.envs[i].reset(seed=seed)[0]
        np.concatenate(self._views[i], out=self._current[i])
        self._elapsed[i] = 0

    def _reset_slab(self, slab: slice, seed: int) -> None:
        for i in range(slab.start, slab.stop):
            self._reset_env(i, seed + i)

    def _step_slab(self, slab: slice) -> None:
        """Step the envs of ``slab`` on ``self._act``: fill their rows of every output, then autoreset."""
        actions, after, current = self._act, self._after, self._current
        if self.kernel is not None:
            steppers, rne = self._steppers, self.kernel.rne
            mj_step, mj_rne, concatenate = mujoco.mj_step, mujoco.mj_rnePostConstraint, np.concatenate
            for i in range(slab.start, slab.stop):  # the hot loop: locals only
                model, data, frame_skip, ctrl, row_views = steppers[i]
                ctrl[:] = actions[i]
                mj_step(model, data, frame_skip)
                if rne:
                    mj_rne(model, data)
                concatenate(row_views, out=after[i])
            fields = self._rows.split(after[slab])
            self._final_obs[slab] = self.kernel.obs(fields)
            self._reward[slab], self._terminated[slab] = self.kernel.reward(
                self._rows.split(current[slab]), fields, actions[slab])
        else:
            for i in range(slab.start, slab.stop):
                self._final_obs[i], self._reward[i], self._terminated[i], _, _ = self.envs[i].step(actions[i])
                np.concatenate(self._views[i], out=after[i])
        self._elapsed[slab] += 1
        self._truncated[slab] = (self._elapsed[slab] >= self.max_episode_steps) if self.max_episode_steps else False
        self._obs[slab], current[slab] = self._final_obs[slab], after[slab]
        done = self._terminated[slab] | self._truncated[slab]
        for i in np.flatnonzero(done) + slab.start:
            self._reset_env(i)

    def _idle(self) -> None:
        if self._unusable:
            raise RuntimeError(self._unusable)
        if self._in_flight:
            raise RuntimeError("a step is in flight: recv() it first")

    def _each_twin(self, talk: Callable[[Twin], None]) -> None:
        """``talk(twin)`` for every twin. Cut short (Ctrl-C, a twin's death), it may leave a request
        unsent or an answer unread, which the next request would take for its own: so the twins are
        closed and the sim refuses every later request."""
        try:
            for twin in self._twins:
                talk(twin)
        except BaseException:
            self._unusable = ("this simulator's twin processes were closed when a request to them was cut "
                              "short (by the error raised then): make a new simulator")
            self._close_twins()
            raise

    def _ask(self, request: bytes) -> None:
        """``request`` to every twin; the caller has checked ``_idle``."""
        self._each_twin(lambda twin: twin.send(request))
        self._in_flight = True

    def _answer(self, here: Callable[[int], None]) -> None:
        """``here(0)`` for this process's slab, then wait for the twins' answers to the request in flight."""
        if self._unusable or not self._in_flight:
            raise RuntimeError(self._unusable or "no step in flight: send() actions first")
        self._in_flight = False
        try:
            here(0)
        finally:  # an error here still takes the twins' answers: the next request must not read them
            self._each_twin(lambda twin: twin.expect(_DONE))

    # --------------------------------------------------------------- the API
    def _snapshot(self, flat: np.ndarray, obs: np.ndarray) -> dict[str, np.ndarray]:
        f = self._rows.split(flat)
        return {"obs": obs, **{k: f[k] for k in MJ_KEYS}}

    def reset(self, seed: int | None = None) -> np.ndarray:
        seed = self._seed if seed is None else seed
        self._idle()
        self._ask(_RESET + struct.pack("q", seed))
        self._answer(lambda j: self._reset_slab(self._slab(j), seed))
        return self._obs.copy()

    @property
    def slab_sizes(self) -> list[int]:
        """Envs stepped by each process, this one first."""
        return np.diff(self._bounds).tolist()

    def resplit(self, sizes: list[int]) -> None:
        """Move envs between processes so that process j steps ``sizes[j]`` of them.

        Each moved env takes its whole state along (MuJoCo's integration state
        and its reset RNG), so a split changes where an env is stepped, never
        what it does."""
        self._idle()
        if not self.movable:
            raise RuntimeError(f"{type(self.envs[0]).__name__} envs stay in their slabs: only the standard "
                               "gymnasium MuJoCo classes are known to keep all their state in MjData")
        workers = len(self._twins) + 1
        if len(sizes) != workers or min(sizes) < 1 or sum(sizes) != self.num_envs:
            raise ValueError(f"sizes must be {workers} counts of at least 1 that sum to "
                             f"{self.num_envs}, got {sizes}")
        self._next_bounds[:] = np.concatenate([[0], np.cumsum(sizes)])
        for request, here in ((_EXPORT, self._export), (_IMPORT, self._import)):
            self._ask(request)
            self._answer(here)
        self._bounds[:] = self._next_bounds

    def _balance(self) -> None:
        """Move one env towards the split at which every process would finish a
        step at the same time, judged by the time each spent on steps lately.

        This process's time runs from ``send`` to the end of its own slab, so it
        includes what the caller does in between (the trainer settles rewards
        there), counted in env-steps at the twins' mean cost: its slab shrinks
        as that work grows. Timings on a shared machine are noisy, so that
        count is averaged over balances and the split moves one env at a time."""
        sizes, busy = np.diff(self._bounds), self._busy / self._steps
        self._busy[:], self._steps = 0.0, 0
        workers, n = len(sizes), self.num_envs
        if workers == 1 or not self.movable:
            return
        per_env = busy[1:].sum() / sizes[1:].sum()
        extra = busy[0] / per_env - sizes[0]
        self._extra = extra if self._extra is None else 0.75 * self._extra + 0.25 * extra
        # All finish together when each twin has (n + extra) / workers envs, this process the rest.
        target = n - (workers - 1) * (n + self._extra) / workers
        here = int(sizes[0] + np.clip(round(target - sizes[0]), -1, 1))
        here = min(max(here, 1), n - (workers - 1))
        new = np.diff([0, *_even_bounds(here, n, workers - 1)]).tolist()
        if new != sizes.tolist():
            self.resplit(new)

    def physics(self) -> dict[str, np.ndarray]:
        """Snapshot of the current state (after any resets)."""
        self._idle()
        return self._snapshot(self._current.copy(), self._obs.copy())

    def send(self, actions: np.ndarray) -> None:
        """Start a step: the twins step their slabs while this process does other work until ``recv``."""
        self._idle()
        self._act[:] = np.asarray(actions, dtype=np.float64).reshape(self._act.shape)
        self._ask(_STEP)
        self._sent_at = time.perf_counter()

    def recv(self) -> StepOut:
        """Finish the step ``send`` started: step this process's slab, wait for the twins."""
        # This process's time counts from send(): the caller's work in between is its too.
        self._answer(lambda j: self._timed_step(j, self._sent_at))
        self._steps += 1
        if self._steps >= BALANCE_EVERY:
            self._balance()
        # Copies: the shared arrays are overwritten by the next step.
        return StepOut(self._obs.copy(), self._reward.copy(), self._terminated.copy(), self._truncated.copy(),
                       self._snapshot(self._after.copy(), self._final_obs.copy()))

    def close(self) -> None:
        self._unusable = "this simulator is closed"
        self._close_twins()
        for e in self.envs:
            e.close()


def _close_all(twins: list[Twin], owner: int) -> None:
    # A process forked later (a learner's twin) may collect its copy of the sim: the twins are not its
    # children, and it closed their pipes' fds at the fork, whose numbers may now be its own files'.
    if os.getpid() == owner:
        for twin in twins:
            twin.close()


class GymVecSim(SimBase):
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

    def send(self, actions: np.ndarray) -> None:
        self._actions = actions

    def recv(self) -> StepOut:
        obs, reward, terminated, truncated, info = self._env.step(self._actions)
        final = self._flat(obs)
        for i in np.flatnonzero(info.get("_final_obs", ())):
            final[i] = np.asarray(info["final_obs"][i], dtype=np.float64).reshape(-1)
        self._obs = obs
        return StepOut(obs, np.asarray(reward, dtype=np.float64), terminated, truncated, {"obs": final})

    def close(self) -> None:
        self._env.close()


VecSim = MujocoVecSim | GymVecSim


def make_vecsim(env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None,
                backend: str = "auto", workers: int | None = None,
                on_fork: Callable[[], None] | None = None, device: str | None = None) -> VecSim:
    """A batched simulator for ``env_id``.

    ``backend``: "auto" (MuJoCo envs get the slab stepper, others and wrapped
    MuJoCo envs gymnasium's vector env), "mujoco", "gym", or "warp" (``warpsim.WarpVecSim``: one MuJoCo
    Warp batch on ``device``, its arrays torch tensors there). ``workers``:
    slabs of envs stepped at once by the MuJoCo backend, this process and
    ``workers - 1`` forked twins (default: one per available core); ``on_fork``
    runs first in each twin.
    """
    if backend == "auto":
        probe = _make(env_id, env_kwargs)
        is_mujoco, wrappers = isinstance(probe.unwrapped, gym.envs.mujoco.MujocoEnv), _extra_wrappers(probe)
        probe.close()
        if is_mujoco and wrappers:
            log.info("%s is wrapped in %s: stepped through gymnasium's vector env, which keeps what they do",
                     env_id, ", ".join(wrappers))
        backend = "mujoco" if is_mujoco and not wrappers else "gym"
    if backend == "mujoco":
        return MujocoVecSim(env_id, num_envs, seed, env_kwargs, workers, on_fork)
    if backend == "gym":
        return GymVecSim(env_id, num_envs, seed, env_kwargs)
    if backend == "warp":
        from reward_designer.warpsim import WarpVecSim  # an optional extra

        return WarpVecSim(env_id, num_envs, seed, env_kwargs, device)
    raise ValueError(f"unknown backend {backend!r}: expected 'auto', 'mujoco', 'gym' or 'warp'")
