"""The "gym" backend: gymnasium's own vector env, for any registered env.

The fallback for envs that are not gymnasium MuJoCo envs, and for a MuJoCo env
whose entry point wraps it (the MuJoCo backends step the env under its
wrappers and would drop them): ``SyncVectorEnv`` with same-step autoreset. Its
snapshot holds only ``obs``.
"""

from __future__ import annotations

from typing import Callable

import gymnasium as gym
import mujoco
import numpy as np

from reward_designer import state as st
from reward_designer.sim import SimBase, StepOut, host_only
from reward_designer.sim.gym_envs import make_env


class GymVecSim(SimBase):
    """Fallback for any registered env: gymnasium's SyncVectorEnv, same-step autoreset."""

    def __init__(self, env_id: str, num_envs: int, seed: int = 0, env_kwargs: dict | None = None, *,
                 slabs: int | None = None, on_fork: Callable[[], None] | None = None, device: str | None = None,
                 contacts: bool = False):
        # One process: ``slabs`` and ``on_fork`` (for forked twins) have nothing to apply to.
        self.device = host_only("gym", device)
        self._env = gym.vector.SyncVectorEnv(
            [lambda: make_env(env_id, env_kwargs) for _ in range(num_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.num_envs = num_envs
        self.observation_space = self._env.single_observation_space
        self.action_space = self._env.single_action_space
        unwrapped = self._env.envs[0].unwrapped
        model = getattr(unwrapped, "model", None)
        self.layout = st.layout_from_model(model) if isinstance(model, mujoco.MjModel) else None
        if contacts:
            self._env.close()
            why = ("it is not a MuJoCo env" if self.layout is None else "its entry point wraps it, so it is "
                   "stepped through gymnasium's vector env, which hands over observations only")
            raise ValueError(f"{env_id} has no contact forces to read (.contact_force, .in_contact): {why}")
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
