"""The state a reward program reads: named, batched access to the physics.

A simulator hands over a *physics snapshot* each vector step: a dict of numpy
arrays (torch tensors from a simulator on a device) batched over environments
(see ``PHYSICS_KEYS``). ``State`` wraps one
snapshot (and the one before it) as torch tensors with names from the MuJoCo
model, so a program can say ``state.body("torso").pos`` instead of indexing
``xpos[:, 1]``. Non-MuJoCo envs carry only ``obs``.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel

# What a physics snapshot may hold, batched over n environments.
PHYSICS_KEYS = {
    "obs": "[n, obs_dim] the observation the policy sees",
    "qpos": "[n, nq] generalized positions",
    "qvel": "[n, nv] generalized velocities",
    "xpos": "[n, nbody, 3] body frame positions (world)",
    "xquat": "[n, nbody, 4] body orientations (w, x, y, z)",
    "cvel": "[n, nbody, 6] body velocities, angular then linear (world)",
    "site_xpos": "[n, nsite, 3] site positions (world)",
    "sensordata": "[n, nsensordata] sensor readings",
    # Only for a program that reads contacts (lint.reads_contacts): mj_rnePostConstraint costs a step.
    "cfrc_ext": "[n, nbody, 6] external (contact) force on each body, torque then force (world)",
}
# A body is in contact when the net contact force on it is above this many newtons.
IN_CONTACT_N = 1e-3


class JointInfo(BaseModel):
    type: Literal["free", "ball", "slide", "hinge"]
    qpos: tuple[int, int]  # [start, end) into qpos
    qvel: tuple[int, int]  # [start, end) into qvel
    range: tuple[float, float] | None = None


class ActuatorInfo(BaseModel):
    ctrl_range: tuple[float, float] | None = None
    target: str = ""  # joint/tendon/site it drives


class ModelLayout(BaseModel):
    """Names to indices for one MuJoCo model; crosses into sandboxed workers."""

    bodies: dict[str, int] = {}
    joints: dict[str, JointInfo] = {}
    sites: dict[str, int] = {}
    sensors: dict[str, tuple[int, int]] = {}  # [start, end) into sensordata
    actuators: dict[str, ActuatorInfo] = {}
    nq: int = 0
    nv: int = 0
    timestep: float = 0.0


def _name(model, objtype, i: int, prefix: str) -> str:
    import mujoco

    return mujoco.mj_id2name(model, objtype, i) or f"{prefix}{i}"


def layout_from_model(model) -> ModelLayout:
    """Read the names and index ranges a reward program may use from an MjModel."""
    import mujoco

    obj = mujoco.mjtObj
    types = {0: "free", 1: "ball", 2: "slide", 3: "hinge"}
    qpos_width = {"free": 7, "ball": 4, "slide": 1, "hinge": 1}
    qvel_width = {"free": 6, "ball": 3, "slide": 1, "hinge": 1}
    joints = {}
    for j in range(model.njnt):
        jtype = types[int(model.jnt_type[j])]
        qa, da = int(model.jnt_qposadr[j]), int(model.jnt_dofadr[j])
        limited = bool(model.jnt_limited[j]) if hasattr(model, "jnt_limited") else False
        joints[_name(model, obj.mjOBJ_JOINT, j, "joint")] = JointInfo(
            type=jtype,
            qpos=(qa, qa + qpos_width[jtype]),
            qvel=(da, da + qvel_width[jtype]),
            range=tuple(float(x) for x in model.jnt_range[j]) if limited else None,
        )
    sensors = {}
    for s in range(model.nsensor):
        adr, dim = int(model.sensor_adr[s]), int(model.sensor_dim[s])
        sensors[_name(model, obj.mjOBJ_SENSOR, s, "sensor")] = (adr, adr + dim)
    actuators = {}
    for a in range(model.nu):
        limited = bool(model.actuator_ctrllimited[a])
        trn = int(model.actuator_trnid[a, 0])
        target = ""
        if trn >= 0 and int(model.actuator_trntype[a]) == int(mujoco.mjtTrn.mjTRN_JOINT):
            target = _name(model, obj.mjOBJ_JOINT, trn, "joint")
        actuators[_name(model, obj.mjOBJ_ACTUATOR, a, "actuator")] = ActuatorInfo(
            ctrl_range=tuple(float(x) for x in model.actuator_ctrlrange[a]) if limited else None,
            target=target,
        )
    return ModelLayout(
        bodies={_name(model, obj.mjOBJ_BODY, b, "body"): b for b in range(model.nbody)},
        joints=joints,
        sites={_name(model, obj.mjOBJ_SITE, s, "site"): s for s in range(model.nsite)},
        sensors=sensors,
        actuators=actuators,
        nq=int(model.nq),
        nv=int(model.nv),
        timestep=float(model.opt.timestep),
    )


def snapshot(datas, obs: np.ndarray, contacts: bool = False) -> dict[str, np.ndarray]:
    """Physics snapshot of a list of MjData (one per env), batched, copied; ``contacts``: with
    ``cfrc_ext``, which holds contact forces only after ``mujoco.mj_rnePostConstraint``."""
    snap = {
        "obs": np.asarray(obs, dtype=np.float64).copy(),
        "qpos": np.stack([d.qpos for d in datas]),
        "qvel": np.stack([d.qvel for d in datas]),
        "xpos": np.stack([d.xpos for d in datas]),
        "xquat": np.stack([d.xquat for d in datas]),
        "cvel": np.stack([d.cvel for d in datas]),
        "site_xpos": np.stack([d.site_xpos for d in datas]),
        "sensordata": np.stack([d.sensordata for d in datas]),
    }
    if contacts:
        snap["cfrc_ext"] = np.stack([d.cfrc_ext for d in datas])
    return snap


def _lookup(table: dict, kind: str, name: str):
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table)) or "none"
        raise KeyError(f"no {kind} named {name!r}; this model has: {known}") from None


class Body:
    """One body across the batch: ``pos`` [n,3], ``quat`` [n,4], ``linvel``/``angvel`` [n,3];
    ``contact_force`` [n,3] and ``in_contact`` [n] bool (in a reset state, what the reset left:
    zeros for gymnasium's envs, which compute contact forces only as they step)."""

    def __init__(self, state: "State", index: int):
        self._s, self._i = state, index

    @property
    def pos(self) -> torch.Tensor:
        return self._s._get("xpos")[:, self._i]

    @property
    def quat(self) -> torch.Tensor:
        return self._s._get("xquat")[:, self._i]

    @property
    def angvel(self) -> torch.Tensor:
        return self._s._get("cvel")[:, self._i, :3]

    @property
    def linvel(self) -> torch.Tensor:
        # Finite difference over one env step: exact for the frame origin, which
        # is what ``pos`` reports (cvel's linear part is taken at the subtree COM).
        prev = self._s.prev
        if prev is None:  # state.prev's bodies: zeros would pass for a standstill
            raise ValueError("linvel needs the step before: state.prev has no prev, so no .linvel")
        return (self.pos - prev._get("xpos")[:, self._i]) / self._s.dt

    @property
    def contact_force(self) -> torch.Tensor:
        # The net force of its contacts (world, N): forces from two sides can cancel.
        return self._s._get("cfrc_ext")[:, self._i, 3:]

    @property
    def in_contact(self) -> torch.Tensor:
        return self.contact_force.norm(dim=-1) > IN_CONTACT_N


class Joint:
    """One joint across the batch: ``qpos`` and ``qvel`` ([n] for hinge/slide, [n,k] otherwise)."""

    def __init__(self, state: "State", info: JointInfo):
        self._s, self._info = state, info

    def _slice(self, key: str, span: tuple[int, int]) -> torch.Tensor:
        x = self._s._get(key)[:, span[0] : span[1]]
        return x[:, 0] if span[1] - span[0] == 1 else x

    @property
    def qpos(self) -> torch.Tensor:
        return self._slice("qpos", self._info.qpos)

    @property
    def qvel(self) -> torch.Tensor:
        return self._slice("qvel", self._info.qvel)


class Site:
    def __init__(self, state: "State", index: int):
        self._s, self._i = state, index

    @property
    def pos(self) -> torch.Tensor:
        return self._s._get("site_xpos")[:, self._i]


class State:
    """Batched, named physics for n environments, as torch tensors.

    ``obs``, ``qpos``, ``qvel``: tensors; ``body(name)``, ``joint(name)``,
    ``site(name)``, ``sensor(name)``: named views; ``prev``: the state one env
    step earlier (on an episode's first step, the state it was reset to); ``dt``: seconds per env step.
    Tensors are fresh copies: writing into them changes nothing outside.
    """

    def __init__(
        self,
        physics: dict[str, np.ndarray],
        layout: ModelLayout | None,
        dt: float,
        prev: "State | None" = None,
        device: str | torch.device = "cpu",
    ):
        self._physics = physics
        self._layout = layout or ModelLayout()
        self._tensors: dict[str, torch.Tensor] = {}
        self.dt = float(dt)
        self.prev = prev
        self.device = torch.device(device)

    def _get(self, key: str) -> torch.Tensor:
        t = self._tensors.get(key)
        if t is None:
            if key == "cfrc_ext" and key not in self._physics:
                raise AttributeError("this state holds no contact forces: they are computed for a MuJoCo env's "
                                     "simulator when the program reads .contact_force or .in_contact")
            if key not in self._physics:
                raise AttributeError(f"this environment exposes no {key!r} (not a MuJoCo env?)")
            t = torch.as_tensor(self._physics[key]).to(self.device, torch.float32, copy=True)
            self._tensors[key] = t
        return t

    @property
    def n(self) -> int:
        return int(self._physics["obs"].shape[0])

    @property
    def obs(self) -> torch.Tensor:
        return self._get("obs")

    @property
    def qpos(self) -> torch.Tensor:
        return self._get("qpos")

    @property
    def qvel(self) -> torch.Tensor:
        return self._get("qvel")

    def body(self, name: str) -> Body:
        return Body(self, _lookup(self._layout.bodies, "body", name))

    def joint(self, name: str) -> Joint:
        return Joint(self, _lookup(self._layout.joints, "joint", name))

    def site(self, name: str) -> Site:
        return Site(self, _lookup(self._layout.sites, "site", name))

    def sensor(self, name: str) -> torch.Tensor:
        a, b = _lookup(self._layout.sensors, "sensor", name)
        x = self._get("sensordata")[:, a:b]
        return x[:, 0] if b - a == 1 else x


def state_pair(
    prev: dict[str, np.ndarray] | None,
    now: dict[str, np.ndarray],
    layout: ModelLayout | None,
    dt: float,
    device: str | torch.device = "cpu",
) -> State:
    """The ``State`` for one transition: ``now`` with ``prev`` one step before."""
    before = State(prev, layout, dt, None, device) if prev is not None else None
    return State(now, layout, dt, before, device)
