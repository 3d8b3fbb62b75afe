"""The "warp" backend: thousands of envs as one MuJoCo Warp batch on a GPU.

``WarpVecSim`` has the slab stepper's semantics (the same observations,
rewards and terminations, computed by the same ``ports``, same-step autoreset
with gymnasium's reset noise), but its n envs
are the worlds of one ``mujoco_warp`` batch on a device, and every array it
hands out is a torch tensor on that device: the simulator's state is read
through ``wp.to_torch`` views of Warp's own arrays, never copied to the host.
The trainer's collector then keeps the whole rollout on the device.

Differences from the CPU stepper, by construction:
* Warp simulates in float32 (MuJoCo C in float64): trajectories agree to
  ~1e-5 over a few steps and then drift apart, as any two integrators would.
* Reset noise comes from a torch generator seeded by ``reset(seed)``, so it
  has gymnasium's distribution but not its draws.
* Only the standard gymnasium MuJoCo classes (those with a port in
  ``ports.PORTS``): an env with its own ``step`` cannot run inside a Warp batch.

Requires the ``warp`` extra (``mujoco-warp``). It also runs on Warp's CPU
backend, slowly (docs/TUNING.md, "The simulator's slabs"): that is for tests;
on a CPU the slab stepper (``slabs.py``) is the fast path.
"""

from __future__ import annotations

from typing import Callable

import torch

from reward_designer import state as st
from reward_designer.policy import torch_device
from reward_designer.sim import SimBase, StepOut
from reward_designer.sim.gym_envs import extra_wrappers, make_env, mjdata_keys
from reward_designer.sim.ports import PORTS


def _warp():
    try:
        import mujoco_warp
        import warp
    except ImportError as exc:  # an optional extra: say how to get it
        raise ImportError("the 'warp' backend needs MuJoCo Warp: pip install 'reward-designer[warp]'") from exc
    # No greeting, no line per kernel module loaded: warnings and errors only.
    warp.config.log_level = warp.LOG_WARNING
    return warp, mujoco_warp


class WarpVecSim(SimBase):
    """n gymnasium MuJoCo envs as the worlds of one MuJoCo Warp batch on ``device``."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None, *,
                 slabs: int | None = None, on_fork: Callable[[], None] | None = None,
                 device: str | torch.device | None = None, contacts: bool = False):
        # One process, one batch: ``slabs`` and ``on_fork`` (for forked twins) have nothing to apply to.
        wp, mjw = _warp()
        wrapped = make_env(env_id, env_kwargs)
        if wrappers := extra_wrappers(wrapped):
            raise ValueError(f"the 'warp' backend steps the MuJoCo env itself; {env_id} is wrapped in "
                             f"{', '.join(wrappers)}, which it would drop")
        self.max_episode_steps = wrapped.spec.max_episode_steps if wrapped.spec else None
        env = self._env = wrapped.unwrapped
        port = PORTS.get(type(env))
        if port is None:
            raise ValueError(f"the 'warp' backend runs the standard gymnasium MuJoCo envs "
                             f"({', '.join(k.__name__ for k in PORTS)}); {env_id} is a {type(env).__name__}")
        self.port = port(env, xp=torch)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if device.type not in ("cpu", "cuda"):
            raise ValueError(f"the 'warp' backend runs on 'cpu' or 'cuda', not {device.type!r}")
        if device.type == "cuda" and not torch.cuda.is_available():
            raise ValueError("device 'cuda': no CUDA device is available here")
        # A torch.device (VecSim.device: tensors out, even on Warp's CPU backend), indexed as the
        # policy's tensors on it report it.
        self.device = torch_device(device)
        self._wp_device = str(self.device)  # "cpu" or "cuda:<index>"
        self.num_envs, self._seed = num_envs, seed
        self.observation_space, self.action_space = env.observation_space, env.action_space
        self.layout = st.layout_from_model(env.model)
        self.dt = float(env.dt)
        self._frame_skip = env.frame_skip
        self._noise = float(env._reset_noise_scale)
        self._init_qpos = torch.as_tensor(env.init_qpos, dtype=torch.float32, device=self.device)
        self._init_qvel = torch.as_tensor(env.init_qvel, dtype=torch.float32, device=self.device)
        self._wp, self._mjw = wp, mjw
        with wp.ScopedDevice(self._wp_device):
            try:
                self._model = mjw.put_model(env.model)
            except NotImplementedError as exc:  # e.g. Humanoid's PGS solver
                raise ValueError(f"MuJoCo Warp cannot simulate {env_id}: {exc}") from exc
            self._data = mjw.put_data(env.model, env.data, nworld=num_envs)
        # Zero-copy torch views of the batch's fields: reading them reads Warp's memory.
        # ``contacts``: snapshots hold cfrc_ext, computed after every step (rne_postconstraint) as for Ant.
        self._snapshot_keys, keys = mjdata_keys(contacts, self.port.extra)
        self._rne = contacts or self.port.rne
        self._fields = {k: wp.to_torch(getattr(self._data, k)) for k in keys}
        self._ctrl = wp.to_torch(self._data.ctrl)
        self._rng = torch.Generator(device=self.device)
        self._elapsed = torch.zeros(num_envs, dtype=torch.long, device=self.device)
        self._current: dict[str, torch.Tensor] = {}
        self._obs: torch.Tensor | None = None
        self._actions: torch.Tensor | None = None
        self._graph = None  # on a GPU, one env step (frame_skip physics steps) captured as a CUDA graph

    # ------------------------------------------------------------ internals
    def _snapshot(self) -> dict[str, torch.Tensor]:
        # Copies: the batch's memory is overwritten by the next step.
        return {k: v.clone() for k, v in self._fields.items()}

    def _physics_steps(self) -> None:
        wp, mjw = self._wp, self._mjw
        with wp.ScopedDevice(self._wp_device):
            if self._wp_device == "cpu":
                for _ in range(self._frame_skip):
                    mjw.step(self._model, self._data)
            else:
                if self._graph is None:
                    with wp.ScopedCapture() as capture:
                        for _ in range(self._frame_skip):
                            mjw.step(self._model, self._data)
                    self._graph = capture.graph
                wp.capture_launch(self._graph)
            if self._rne:  # contact forces, as gymnasium's step computes them
                mjw.rne_postconstraint(self._model, self._data)

    def _reset_worlds(self, mask: torch.Tensor) -> None:
        """gymnasium's reset for the worlds in ``mask``: mj_resetData, init state plus noise, mj_forward.

        Noise is drawn for every world and kept where ``mask`` is: nothing here waits for the device."""
        wp, mjw, n, s = self._wp, self._mjw, self.num_envs, self._noise

        def uniform(like: torch.Tensor) -> torch.Tensor:
            return (torch.rand((n, len(like)), generator=self._rng, device=self.device) * 2 - 1) * s

        qpos = self._init_qpos + uniform(self._init_qpos)
        if self.port.normal_qvel:
            qvel = self._init_qvel + torch.randn((n, len(self._init_qvel)), generator=self._rng,
                                                 device=self.device) * s
        else:
            qvel = self._init_qvel + uniform(self._init_qvel)
        with wp.ScopedDevice(self._wp_device):
            mjw.reset_data(self._model, self._data, reset=wp.from_torch(mask.contiguous()))
            for key, fresh in (("qpos", qpos), ("qvel", qvel)):
                self._fields[key].copy_(torch.where(mask[:, None], fresh, self._fields[key]))
            if "cfrc_ext" in self._fields:  # mj_resetData zeroes it (Warp's reset_data does not); forward leaves it
                self._fields["cfrc_ext"].masked_fill_(mask[:, None, None], 0.0)
            # Forward recomputes every world's derived fields from its state; a world that
            # did not reset keeps its state, so its next step is unchanged.
            mjw.forward(self._model, self._data)
        self._elapsed[mask] = 0

    # --------------------------------------------------------------- the API
    def reset(self, seed: int | None = None) -> torch.Tensor:
        self._rng.manual_seed(self._seed if seed is None else seed)
        self._reset_worlds(torch.ones(self.num_envs, dtype=torch.bool, device=self.device))
        self._current = self._snapshot()
        self._obs = self.port.obs(self._current)
        return self._obs.clone()

    def physics(self) -> dict[str, torch.Tensor]:
        """Snapshot of the current state (after any resets)."""
        if self._obs is None:
            raise RuntimeError("reset() the simulator first")
        return {"obs": self._obs.clone(), **{k: self._current[k].clone() for k in self._snapshot_keys}}

    def send(self, actions) -> None:
        if self._obs is None:
            raise RuntimeError("reset() the simulator first")
        if self._actions is not None:
            raise RuntimeError("a step is in flight: recv() it first")
        a = torch.as_tensor(actions, dtype=torch.float32, device=self.device).reshape(self._ctrl.shape)
        self._actions = a
        self._ctrl.copy_(a)
        # Asynchronous on a GPU: the step runs while the caller goes on. No explicit sync is
        # needed between torch and Warp: torch works on CUDA's legacy default stream and Warp
        # on its own blocking stream, and CUDA orders blocking streams with the legacy one.
        self._physics_steps()

    def recv(self) -> StepOut:
        if self._actions is None:
            raise RuntimeError("no step in flight: send() actions first")
        actions, self._actions = self._actions, None
        after = self._snapshot()
        final_obs = self.port.obs(after)
        reward, terminated = self.port.reward(self._current, after, actions)
        self._elapsed += 1
        truncated = (self._elapsed >= self.max_episode_steps) if self.max_episode_steps \
            else torch.zeros_like(terminated)
        done = terminated | truncated
        current = after
        if bool(done.any()):  # the step's one wait for the device: resets cost a forward of every world
            self._reset_worlds(done)
            # torch.where makes the new tensors: the batch's memory needs no snapshot first.
            current = {k: torch.where(done.reshape((-1,) + (1,) * (v.dim() - 1)), self._fields[k], v)
                       for k, v in after.items()}
        self._current = current
        self._obs = self.port.obs(current)
        return StepOut(self._obs.clone(), reward.double(), terminated, truncated,
                       {"obs": final_obs, **{k: after[k] for k in self._snapshot_keys}})

    def warm_up(self) -> None:
        """Launch every kernel a training launches (reset, a step, a reset of one world, the contact
        forces) once.

        Warp compiles a module on its first launch (tens of seconds for MuJoCo
        Warp, into its kernel cache) and a GPU step is captured as a graph on
        the first step: after this, neither happens again. Leaves the batch
        mid-episode: ``reset`` it before use.
        """
        self.reset()
        self.step(torch.zeros((self.num_envs,) + self.action_space.shape, device=self.device))
        one = torch.zeros(self.num_envs, dtype=torch.bool, device=self.device)
        one[0] = True
        self._reset_worlds(one)
        with self._wp.ScopedDevice(self._wp_device):  # contact forces' kernels, for a training that reads them
            self._mjw.rne_postconstraint(self._model, self._data)

    def close(self) -> None:
        self._env.close()

