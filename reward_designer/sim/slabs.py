"""The "mujoco" backend: gymnasium MuJoCo envs, one slab of envs per core.

Each of the n envs is a real gymnasium env object and we step its own
``MjData``: this process steps the first slab and a forked twin process
(``twin.Twin``) each other one. Processes, not threads: each env's step is a
few Python calls around ``mj_step``, and threads serialize them on the GIL
(docs/TUNING.md, "The simulator's slabs"). Each env's fields are copied into
one row of flat arrays in shared memory. For the standard v5 tasks the
observation, reward and termination are computed per slab in numpy
(``ports.PORTS``); any other MuJoCo env (a subclass, a user's own) calls its
own ``env.step`` per env in the same slabs. Resets are always the env's own
``reset`` (its reset noise, its RNG stream), in the process that owns the env.
Every ``BALANCE_EVERY`` steps the split moves envs (their MuJoCo state and
RNG) towards whichever process waited, so this process, which also does the
caller's work between ``send`` and ``recv``, steps fewer envs the more of that
work there is.
"""

from __future__ import annotations

import os
import struct
import time
import weakref
from typing import Callable

import mujoco
import numpy as np

from reward_designer import state as st
from reward_designer.sim import SimBase, StepOut, cpu_cores, host_only
from reward_designer.sim.gym_envs import extra_wrappers, make_env, mjdata_keys
from reward_designer.sim.ports import PORTS
from reward_designer.twin import Twin, shared_array

# A slab twin's requests (RESET carries an 8-byte seed) and its answer. EXPORT/IMPORT hand over the
# envs that change slabs, SAVE/LOAD every env of the slab (``save_state``).
_STEP, _RESET, _EXPORT, _IMPORT, _SAVE, _LOAD, _DONE = b"s", b"r", b"x", b"i", b"v", b"l", b"d"
# The slab split is rebalanced every this many steps (``MujocoVecSim._balance``).
BALANCE_EVERY = 64
# What moves with an env between processes: MuJoCo's state for mj_step
# (positions, velocities, warm start, controls, time) and its reset RNG.
_MJ_STATE = mujoco.mjtState.mjSTATE_INTEGRATION
_U64 = (1 << 64) - 1


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


class MujocoVecSim(SimBase):
    """gymnasium MuJoCo envs, one slab of envs per core: this process steps the
    first, a forked twin process (``twin.Twin``) each of the others.

    ``envs[i]`` of a twin's slab is, in this process, a stale copy from before
    the fork: read state through ``step``'s snapshot or ``physics()``."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None, *,
                 slabs: int | None = None, on_fork: Callable[[], None] | None = None, device: str | None = None,
                 contacts: bool = False):
        self.device = host_only("mujoco", device)
        wrapped = [make_env(env_id, env_kwargs) for _ in range(num_envs)]
        if wrappers := extra_wrappers(wrapped[0]):
            raise ValueError(f"{env_id} is wrapped in {', '.join(wrappers)}, which the 'mujoco' backend "
                             "would drop: use the 'gym' backend")
        self.max_episode_steps = wrapped[0].spec.max_episode_steps if wrapped[0].spec else None
        self.envs = [w.unwrapped for w in wrapped]
        e0 = self.envs[0]
        port = PORTS.get(type(e0))
        self.port = port(e0) if port else None
        self.num_envs = num_envs
        self.observation_space = e0.observation_space
        self.action_space = e0.action_space
        self.layout = st.layout_from_model(e0.model)
        self.dt = float(e0.dt)
        self._seed = seed
        # ``contacts``: snapshots hold cfrc_ext, for which a ported step runs mj_rnePostConstraint (an
        # env's own step always does: gymnasium's MujocoEnv runs it after every mj_step).
        self._snapshot_keys, keys = mjdata_keys(contacts, self.port.extra if self.port else ())
        self._rne = contacts or (self.port is not None and self.port.rne)
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
        slabs = max(1, min(slabs or cpu_cores(), num_envs))
        # Slab j is envs [bounds[j], bounds[j+1]). Shared, so a twin sees a new split.
        # Equal to start; ``_balance`` then moves envs to whichever process waits.
        self._bounds = shared_array((slabs + 1,), np.int64)
        self._bounds[:] = _even_bounds(0, n, slabs)
        self._next_bounds = shared_array((slabs + 1,), np.int64)
        self._busy = shared_array((slabs,))  # seconds each process spent on steps since the last balance
        self._steps, self._sent_at = 0, 0.0
        self._extra: float | None = None  # this process's work besides its slab, in env-steps, averaged
        # Only the exact gymnasium classes are known to keep no state outside MjData and the RNG.
        self.movable = self.port is not None and isinstance(e0.np_random.bit_generator, np.random.PCG64)
        if self.movable:
            self._handoff = shared_array((n, mujoco.mj_stateSize(e0.model, _MJ_STATE)))
            self._handoff_rng = shared_array((n, 6), np.uint64)
        self._twins: list[Twin] = []
        # A sim dropped without close() must not leave its twins running, holding their pipes.
        self._close_twins = weakref.finalize(self, _close_all, self._twins, os.getpid())
        self._in_flight = False
        self._unusable: str | None = None  # why every later request is refused
        try:
            for j in range(1, slabs):
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
            elif request == _SAVE:
                self._export(j, everyone=True)
            elif request == _LOAD:
                self._import(j, everyone=True)
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

    def _export(self, j: int, everyone: bool = False) -> None:
        """Write the state of the envs leaving slab j (``everyone``: of all its envs) to the handoff rows."""
        slab = self._slab(j)
        for i in range(slab.start, slab.stop) if everyone else self._moving(j, self._bounds, self._next_bounds):
            env = self.envs[i]
            mujoco.mj_getState(env.model, env.data, self._handoff[i], _MJ_STATE)
            rng = env.np_random.bit_generator.state
            s, inc = rng["state"]["state"], rng["state"]["inc"]
            self._handoff_rng[i] = (s >> 64, s & _U64, inc >> 64, inc & _U64, rng["has_uint32"], rng["uinteger"])

    def _import(self, j: int, everyone: bool = False) -> None:
        """Take over the envs joining slab j (``everyone``: all its envs) from the handoff rows (this
        process's copies are stale)."""
        slab = self._slab(j)
        for i in range(slab.start, slab.stop) if everyone else self._moving(j, self._next_bounds, self._bounds):
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
        if self.port is not None:
            steppers, rne = self._steppers, self._rne
            mj_step, mj_rne, concatenate = mujoco.mj_step, mujoco.mj_rnePostConstraint, np.concatenate
            for i in range(slab.start, slab.stop):  # the hot loop: locals only
                model, data, frame_skip, ctrl, row_views = steppers[i]
                ctrl[:] = actions[i]
                mj_step(model, data, frame_skip)
                if rne:
                    mj_rne(model, data)
                concatenate(row_views, out=after[i])
            fields = self._rows.split(after[slab])
            self._final_obs[slab] = self.port.obs(fields)
            self._reward[slab], self._terminated[slab] = self.port.reward(
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
        return {"obs": obs, **{k: f[k] for k in self._snapshot_keys}}

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
        slabs = len(self._twins) + 1
        if len(sizes) != slabs or min(sizes) < 1 or sum(sizes) != self.num_envs:
            raise ValueError(f"sizes must be {slabs} counts of at least 1 that sum to "
                             f"{self.num_envs}, got {sizes}")
        self._next_bounds[:] = np.concatenate([[0], np.cumsum(sizes)])
        for request, here in ((_EXPORT, self._export), (_IMPORT, self._import)):
            self._ask(request)
            self._answer(here)
        self._bounds[:] = self._next_bounds

    # What a saved state holds besides each env's MuJoCo state and reset RNG: the shared rows a step
    # reads (the current state, the pending observations, the steps into each episode).
    _SAVED_ROWS = ("_current", "_obs", "_elapsed")

    def save_state(self) -> dict[str, np.ndarray]:
        """Every env's whole state as plain arrays: its MuJoCo integration state, reset RNG, steps into
        its episode, current snapshot row and pending observation. ``load_state`` puts it back, into
        whichever process steps each env then, and the envs go on as if never stopped."""
        self._check_movable("have their state saved")
        self._idle()
        self._ask(_SAVE)
        self._answer(lambda j: self._export(j, everyone=True))
        return {"mj_state": self._handoff.copy(), "rng": self._handoff_rng.copy(),
                **{name[1:]: getattr(self, name).copy() for name in self._SAVED_ROWS}}

    def load_state(self, state: dict[str, np.ndarray]) -> None:
        """Put back a ``save_state``; ValueError if its arrays do not fit these envs."""
        self._check_movable("have their state loaded")
        self._idle()
        names = {"mj_state": self._handoff, "rng": self._handoff_rng,
                 **{name[1:]: getattr(self, name) for name in self._SAVED_ROWS}}
        for key, dst in names.items():
            src = state.get(key)
            if src is None or np.shape(src) != dst.shape:
                raise ValueError(f"a saved simulator state's {key!r} does not fit {self.num_envs} "
                                 f"{type(self.envs[0]).__name__} envs (shape {np.shape(src)}, not {dst.shape})")
        for key, dst in names.items():
            dst[:] = state[key]
        self._ask(_LOAD)
        self._answer(lambda j: self._import(j, everyone=True))

    def _check_movable(self, what: str) -> None:
        if not self.movable:
            raise RuntimeError(f"{type(self.envs[0]).__name__} envs cannot {what}: only the standard "
                               "gymnasium MuJoCo classes are known to keep all their state in MjData")

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
        slabs, n = len(sizes), self.num_envs
        if slabs == 1 or not self.movable:
            return
        per_env = busy[1:].sum() / sizes[1:].sum()
        extra = busy[0] / per_env - sizes[0]
        self._extra = extra if self._extra is None else 0.75 * self._extra + 0.25 * extra
        # All finish together when each twin has (n + extra) / slabs envs, this process the rest.
        target = n - (slabs - 1) * (n + self._extra) / slabs
        here = int(sizes[0] + np.clip(round(target - sizes[0]), -1, 1))
        here = min(max(here, 1), n - (slabs - 1))
        new = np.diff([0, *_even_bounds(here, n, slabs - 1)]).tolist()
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
