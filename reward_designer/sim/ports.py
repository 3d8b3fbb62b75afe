"""The standard gymnasium MuJoCo tasks' step and reset, ported to batched arrays.

A port computes one v5 env class's observation, reward, termination and reset
noise over n envs at once, from their MjData fields as [n, ...] arrays, numpy
(the slab stepper) or torch (the Warp batch). It reads its parameters from the
env object, so env kwargs carry over; tests hold both backends to gymnasium
step for step.
"""

from __future__ import annotations

import numpy as np
from gymnasium.envs.mujoco.ant_v5 import AntEnv
from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv


def _ctrl_cost(weight: float, action):
    return weight * (action * action).sum(1)


class Port:
    """Observation, reward, termination and reset noise of one gymnasium env class, batched.

    ``f``/``before``/``after`` map MjData field names to [n, ...] arrays, numpy
    or torch (``xp``: numpy for the slabs, torch for the Warp batch);
    ``extra`` names the fields needed beyond ``gym_envs.MJ_KEYS``; ``rne`` whether they
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


class _HalfCheetah(Port):
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


class _Walker2d(Port):
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


class _Ant(Port):
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


class _Humanoid(Port):
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
        # numpy only: Warp refuses Humanoid's PGS solver, so this port never sees torch tensors.
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
PORTS: dict[type, type[Port]] = {
    HalfCheetahEnv: _HalfCheetah,
    HopperEnv: _Hopper,
    Walker2dEnv: _Walker2d,
    AntEnv: _Ant,
    HumanoidEnv: _Humanoid,
    SwimmerEnv: _Swimmer,
}
