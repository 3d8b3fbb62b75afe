"""EnvCard: what the designer LLM may read about an environment.

Built by introspecting a gymnasium env (the MuJoCo model's names and index
ranges, joint axes, actuator gears, the reset pose, the fluid it moves in, the
observation layout, spaces, timing, episode length, the termination checks of
the gymnasium envs it knows, in qpos terms, and the parts of the env's
docstring that carry physics) and
rendered as a compact Python class stub, the way Text2Reward presents an
environment. The env's own reward is deliberately left out: the designer is
asked to write one, and the env reward is the baseline it is measured against.
"""

from __future__ import annotations

import inspect
import numbers
import re
from importlib.resources import files
from typing import Literal

import gymnasium as gym
import jinja2
import mujoco
import numpy as np
from pydantic import BaseModel

from reward_designer.errors import UserError
from reward_designer.mjlog import route_mujoco_warnings
from reward_designer.state import ModelLayout, layout_from_model

route_mujoco_warnings()  # before any env is made here

SUMMARY_CHARS = 450  # the task description, cut at a sentence end
SECTION_CHARS = 1000  # termination / observation / action notes from a docstring

# MjData fields that gymnasium's MuJoCo envs put into observations (named in
# their `observation_structure`) that are not qpos/qvel: what a block holds.
_MJDATA_FIELDS = {
    "cinert": "body inertias, 10 per body",
    "cvel": "body velocities (angular, linear), 6 per body",
    "qfrc_actuator": "actuator forces per dof",
    "cfrc_ext": "external (contact) forces (torque, force), 6 per body",
    "ten_length": "tendon lengths",
    "ten_velocity": "tendon velocities",
}


class EnvCardError(UserError, ValueError):
    """An env the card cannot be built for (an unregistered id): a user-facing, one-line error."""


class ObsField(BaseModel):
    """One contiguous block of the observation: obs[start:end] = fn(source[index])."""

    start: int
    end: int  # [start, end) into obs
    # A State expression ("qpos", "qvel", 'body("torso").pos', 'site("tip").pos',
    # 'sensor("touch")'), or "other" for what is not a plain copy of one.
    source: str = "other"
    fn: Literal["", "cos", "sin"] = ""
    index: tuple[int, int] | None = None  # [start, end) into source
    note: str = ""  # joints covered, or what an "other" block holds
    clip: float | None = None  # the env clips the copy to [-clip, clip]

    def expr(self) -> str:
        """Right-hand side as text, e.g. ``qpos[1:9]``, ``cos(qpos[0:2])``, ``body("tip").pos``."""
        if self.index is None:
            return self.note or "other"
        a, b = self.index
        if self.source.endswith(".pos") and (a, b) == (0, 3):
            text = self.source
        else:
            src = f"({self.source})" if " - " in self.source else self.source
            text = f"{src}[{a}]" if b - a == 1 else f"{src}[{a}:{b}]"
        text = f"{self.fn}({text})" if self.fn else text
        return f"clip({text}, -{_num(self.clip)}, {_num(self.clip)})" if self.clip is not None else text


class Bound(BaseModel):
    """One of an env's termination checks: the episode ends when an entry of ``source[index]``
    leaves (low, high) ([low, high] when ``closed``); a None bound is not checked."""

    source: str  # as in ObsField: "qpos", "qvel", 'site("tip").pos'
    index: tuple[int, int]  # [start, end) into source
    low: float | None = None
    high: float | None = None
    closed: bool = False

    def expr(self) -> str:
        return _span(self.source, self.index)

    def causes(self) -> list[str]:
        """One text per side: what the analyzer counts episodes by (``min(qvel[0:6]) <= -100``)."""
        many = self.index[1] - self.index[0] > 1
        le, ge = ("<", ">") if self.closed else ("<=", ">=")
        out = []
        if self.low is not None:
            out.append(f"{'min(' + self.expr() + ')' if many else self.expr()} {le} {_num(self.low)}")
        if self.high is not None:
            out.append(f"{'max(' + self.expr() + ')' if many else self.expr()} {ge} {_num(self.high)}")
        return out

    def text(self) -> str:
        """The check as a reward writer needs it: ``qpos[1] <= 0.7``, ``|qpos[2]| >= 0.2``."""
        if self.low is not None and self.high is not None:
            if self.index[1] - self.index[0] == 1 and self.low == -self.high:
                return f"|{self.expr()}| {'>' if self.closed else '>='} {_num(self.high)}"
            a, b = ("[", "]") if self.closed else ("(", ")")
            many = "an entry of " if self.index[1] - self.index[0] > 1 else ""
            return f"{many}{self.expr()} outside {a}{_num(self.low)}, {_num(self.high)}{b}"
        return self.causes()[0]

    def ended(self, values: np.ndarray) -> list[bool]:
        """Whether each side's check fires on ``values`` (source[index] at an episode's last step)."""
        v = np.asarray(values, dtype=np.float64).ravel()
        out = []
        if self.low is not None:
            out.append(bool((v < self.low).any() if self.closed else (v <= self.low).any()))
        if self.high is not None:
            out.append(bool((v > self.high).any() if self.closed else (v >= self.high).any()))
        return out


class EnvCard(BaseModel):
    env_id: str
    summary: str  # the docstring's description, trimmed
    is_mujoco: bool
    observation_space: str
    action_space: str
    observation_shape: list[int]
    action_shape: list[int]
    action_low: list[float]
    action_high: list[float]
    dt: float | None  # seconds per env step
    timestep: float | None  # seconds per physics step
    frame_skip: int | None
    max_episode_steps: int | None
    gravity: list[float] | None = None
    layout: ModelLayout | None = None
    obs_layout: list[ObsField] = []
    termination: str = ""  # termination conditions, if the docstring states them
    # The env's own checks, read off its parameters (healthy_z_range, ...); None: not an env whose
    # checks we know (the docstring's text stands); []: it never terminates.
    terminations: list[Bound] | None = None
    joint_axes: dict[str, list[float]] = {}  # hinge/slide joints: the world axis at the reset pose
    gears: list[float] = []  # per actuator: force (or torque) = gear x control
    motors: bool = False  # every actuator is a plain motor (gain 1, no bias), so the above holds
    reset_qpos: list[float] = []  # the reset pose before noise
    reset_noise: float | None = None  # the env's reset_noise_scale
    root: str = ""  # the body the first joint moves, and its world height at the reset pose
    root_z: float | None = None
    viscosity: float = 0.0  # the medium (Swimmer's viscous fluid)
    density: float = 0.0
    # Docstring sections for envs without a model to name things by (non-MuJoCo).
    observation_notes: str = ""
    action_notes: str = ""
    # A manipulation env's own account (Meta-World's card_section()): the hand, gripper, objects, the
    # per-episode goal and the success check, in the names State takes; "" for other envs.
    manipulation: str = ""

    @classmethod
    def from_env(cls, env_id: str, env_kwargs: dict | None = None) -> "EnvCard":
        """Introspect ``gym.make(env_id, **env_kwargs)``; EnvCardError (a ValueError) for an unregistered id."""
        try:
            env = gym.make(env_id, **{"disable_env_checker": True, **(env_kwargs or {})})
        except gym.error.UnregisteredEnv as e:
            raise EnvCardError(f"unknown env id {env_id!r}: {' '.join(str(e).split())}") from None
        try:
            return _card(env_id, env)
        finally:
            env.close()

    def render(self) -> str:
        """The card as a compact Python class stub (prompts/envcard.py.j2)."""
        return _template().render(card=self, **_view(self)).strip() + "\n"


# --------------------------------------------------------------------------- building


def _card(env_id: str, env: gym.Env) -> EnvCard:
    u = env.unwrapped
    model, data = _mujoco_model(u)
    sections = _doc_sections(type(u).__doc__ or "")
    is_mujoco = model is not None
    low, high = _action_bounds(env.action_space)
    frame_skip = getattr(u, "frame_skip", None) if is_mujoco else None
    dt = getattr(u, "dt", None)
    card = EnvCard(
        env_id=env_id,
        summary=_summary(sections),
        is_mujoco=is_mujoco,
        observation_space=_space_text(env.observation_space),
        action_space=_space_text(env.action_space),
        observation_shape=list(env.observation_space.shape or ()),
        action_shape=list(env.action_space.shape or ()),
        action_low=low,
        action_high=high,
        dt=float(dt) if isinstance(dt, numbers.Real) else None,
        timestep=float(model.opt.timestep) if is_mujoco else None,
        frame_skip=int(frame_skip) if isinstance(frame_skip, numbers.Integral) else None,
        # gym.make folds a max_episode_steps kwarg into the spec it sets.
        max_episode_steps=env.spec.max_episode_steps if env.spec else None,
        termination=_termination(sections),
    )
    if is_mujoco:
        card.gravity = [float(g) for g in model.opt.gravity]
        card.layout = layout_from_model(model)
        _physics(card, u, model, data)
        card.terminations = _terminations(u, card.layout)
        # An env may set what its observation reads (a goal, say) only on reset.
        env.reset(seed=0)
        card.obs_layout = _obs_layout(u, model, data, card.layout)
    if not card.obs_layout:
        # Nothing to name the observation by: the docstring is all there is.
        card.observation_notes = _clip(_clean(sections.get("observation space", "")), SECTION_CHARS)
        card.action_notes = _clip(_clean(sections.get("action space", "")), SECTION_CHARS)
        # Conventions a reward needs are often only in the reward section ("where theta is the
        # angle ... (with 0 being in the upright position)"): its definitions, not its formula.
        if defs := _definitions(sections.get("rewards", "")):
            card.summary += " " + _clip(" ".join(defs), SUMMARY_CHARS // 2)
    if callable(getattr(u, "card_section", None)):  # sim/metaworld.py's envs
        card.manipulation = u.card_section()
    return card


def _physics(card: EnvCard, u, model, data) -> None:
    """What the model says that names cannot: axes, gears, the reset pose, the medium."""
    qpos0 = np.asarray(getattr(u, "init_qpos", model.qpos0), dtype=np.float64)
    data.qpos[:], data.qvel[:] = qpos0, 0.0
    mujoco.mj_forward(model, data)
    for j in range(model.njnt):
        if int(model.jnt_type[j]) in (int(mujoco.mjtJoint.mjJNT_HINGE), int(mujoco.mjtJoint.mjJNT_SLIDE)):
            name = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_JOINT, j)
            if name in card.layout.joints:
                card.joint_axes[name] = [round(float(a), 3) + 0.0 for a in data.xaxis[j]]
    card.gears = [float(g) for g in model.actuator_gear[:, 0]]
    card.motors = model.nu > 0 and bool(
        (model.actuator_gaintype == mujoco.mjtGain.mjGAIN_FIXED).all()
        and (model.actuator_gainprm[:, 0] == 1).all()
        and (model.actuator_biastype == mujoco.mjtBias.mjBIAS_NONE).all()
        and (model.actuator_dyntype == mujoco.mjtDyn.mjDYN_NONE).all())
    card.reset_qpos = [float(x) for x in qpos0]
    noise = getattr(u, "_reset_noise_scale", None)
    card.reset_noise = float(noise) if isinstance(noise, numbers.Real) else None
    if model.njnt:
        body = int(model.jnt_bodyid[0])
        card.root = mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_BODY, body) or ""
        card.root_z = float(data.xpos[body][2]) if card.root else None
    card.viscosity, card.density = float(model.opt.viscosity), float(model.opt.density)


def _terminations(u, layout: ModelLayout) -> list[Bound] | None:
    """The termination checks of the gymnasium MuJoCo envs, with the values this env was made with.

    Which qpos entries each class checks is read from its ``is_healthy`` / ``step`` (gymnasium 1.x,
    v5); tests/test_envcard.py holds each against the env's own ``terminated``.
    """
    from gymnasium.envs.mujoco.ant_v5 import AntEnv
    from gymnasium.envs.mujoco.half_cheetah_v5 import HalfCheetahEnv
    from gymnasium.envs.mujoco.hopper_v5 import HopperEnv
    from gymnasium.envs.mujoco.humanoid_v5 import HumanoidEnv
    from gymnasium.envs.mujoco.inverted_double_pendulum_v5 import InvertedDoublePendulumEnv
    from gymnasium.envs.mujoco.inverted_pendulum_v5 import InvertedPendulumEnv
    from gymnasium.envs.mujoco.pusher_v5 import PusherEnv
    from gymnasium.envs.mujoco.reacher_v5 import ReacherEnv
    from gymnasium.envs.mujoco.swimmer_v5 import SwimmerEnv
    from gymnasium.envs.mujoco.walker2d_v5 import Walker2dEnv

    if isinstance(u, (HalfCheetahEnv, SwimmerEnv, ReacherEnv, PusherEnv)):
        return []
    if isinstance(u, InvertedPendulumEnv):  # |qpos[1]| > 0.2, a constant in its step()
        return [Bound(source="qpos", index=(1, 2), low=-0.2, high=0.2, closed=True)]
    if isinstance(u, InvertedDoublePendulumEnv):  # the tip's height y <= 1
        site = next(iter(layout.sites), None)
        return [Bound(source=f'site("{site}").pos', index=(2, 3), low=1.0)] if site else None
    if not isinstance(u, (HopperEnv, Walker2dEnv, AntEnv, HumanoidEnv)):
        return None
    if not getattr(u, "_terminate_when_unhealthy", True):
        return []

    def side(x):
        return float(x) if x is not None and np.isfinite(x) else None

    def bound(index, rng, closed=False) -> Bound:
        return Bound(source="qpos", index=index, low=side(rng[0]), high=side(rng[1]), closed=closed)

    z, angle = u._healthy_z_range, getattr(u, "_healthy_angle_range", None)
    if isinstance(u, (HopperEnv, Walker2dEnv)):  # planar: qpos[1] is the height, qpos[2] the pitch
        out = [bound((1, 2), z), bound((2, 3), angle)]
        if isinstance(u, HopperEnv):  # state_vector()[2:]: qpos[2:] and every qvel
            rng = u._healthy_state_range
            out += [bound((2, layout.nq), rng), Bound(source="qvel", index=(0, layout.nv), low=side(rng[0]),
                                                       high=side(rng[1]))]
        return [b for b in out if b.low is not None or b.high is not None]
    return [bound((2, 3), z, closed=isinstance(u, AntEnv))]  # the free joint's z


def _mujoco_model(u):
    from gymnasium.envs.mujoco.mujoco_env import MujocoEnv

    if not isinstance(u, MujocoEnv):  # sim's test too (gym_envs.is_mujoco): only these get states beyond obs
        return None, None
    model, data = getattr(u, "model", None), getattr(u, "data", None)
    if isinstance(model, mujoco.MjModel) and isinstance(data, mujoco.MjData):
        return model, data
    return None, None


def _action_bounds(space) -> tuple[list[float], list[float]]:
    if isinstance(space, gym.spaces.Box):
        return [float(x) for x in space.low.ravel()], [float(x) for x in space.high.ravel()]
    if isinstance(space, gym.spaces.Discrete):
        return [float(space.start)], [float(space.start + space.n - 1)]
    return [], []


def _space_text(space) -> str:
    if isinstance(space, gym.spaces.Box):
        lo, hi = np.unique(space.low), np.unique(space.high)
        if lo.size == 1 and hi.size == 1:  # uniform bounds: say them once
            return f"Box({_num(lo[0])}, {_num(hi[0])}, {space.shape})"
    return " ".join(str(space).split())


# --------------------------------------------------------------------------- observation layout


def _obs_layout(u, model, data, layout: ModelLayout) -> list[ObsField]:
    """Match each observation entry to the state entry it copies, numerically.

    The env's own observation function is called on two random physics states;
    an entry is attributed to a candidate (qpos, qvel, cos/sin of a hinge angle,
    a body/site position, a sensor reading, a difference of body positions) if
    it equals it on both and the candidate differs between them: a constant
    (a planar model's y) would match any constant entry. A constant entry is
    attributed only as the continuation of the run before it (a planar
    object's z after its x, y). Anything else is "other".
    """
    get_obs = getattr(u, "_get_obs", None)
    if not callable(get_obs):
        return []
    rng = np.random.default_rng(0)
    obs, cand = [], []
    for _ in range(2):
        _randomize(model, data, layout, rng)
        mujoco.mj_forward(model, data)
        obs.append(np.asarray(get_obs(), dtype=np.float64).ravel())
        labels, values = _candidates(model, data, layout)
        cand.append(values)
    equal = np.ones((obs[0].size, cand[0].size), dtype=bool)
    for o, c in zip(obs, cand):
        equal &= np.abs(o[:, None] - c[None]) <= 1e-5 * (1 + np.abs(o))[:, None]
    informative = equal & (cand[0] != cand[1])[None] & (obs[0] != obs[1])[:, None]
    column = {lab: j for j, lab in enumerate(labels)}
    chosen: list[tuple | None] = []
    for i in range(obs[0].size):
        hits = np.flatnonzero(informative[i])
        lab = labels[hits[0]] if hits.size else None
        if lab is None and chosen and chosen[-1] is not None:
            src, fn, k = chosen[-1]
            j = column.get((src, fn, k + 1))
            lab = labels[j] if j is not None and equal[i, j] else None
        chosen.append(lab)
    fields = _group(chosen)
    # Random states in [-1, 1] cannot show a clip (Hopper's clip(qvel, -10, 10)): one with fast
    # velocities can.
    _randomize(model, data, layout, rng, qvel_scale=100.0)
    mujoco.mj_forward(model, data)
    _find_clips(fields, np.asarray(get_obs(), dtype=np.float64).ravel(), _candidates(model, data, layout)[1], column)
    _name_fields(fields, layout)
    _label_other(fields, getattr(u, "observation_structure", None), obs[0].size)
    low, high = (getattr(u, "_contact_force_range", None) or (None, None))[:2]
    for f in fields:  # Ant's contact forces: clipped to a range its constructor takes
        if f.note.startswith("cfrc_ext") and low is not None:
            f.note += f", each clipped to [{_num(low)}, {_num(high)}]"
    return fields


def _find_clips(fields: list[ObsField], obs: np.ndarray, values: np.ndarray, column: dict) -> None:
    """Mark the copies that ``obs`` (from a state with large values) shows clipped to a symmetric bound."""
    for f in fields:
        if f.index is None:
            continue
        part = obs[f.start:f.end]
        want = values[[column[(f.source, f.fn, k)] for k in range(*f.index)]]
        bound = float(np.abs(part).max())
        if (not np.allclose(part, want, rtol=1e-5, atol=1e-8) and bound > 0
                and np.allclose(part, np.clip(want, -bound, bound), rtol=1e-5, atol=1e-8)):
            f.clip = bound


def _randomize(model, data, layout: ModelLayout, rng, qvel_scale: float = 1.0) -> None:
    """A random state with distinct values everywhere (quaternions kept unit)."""
    data.qpos[:] = rng.uniform(-1, 1, model.nq)
    data.qvel[:] = rng.uniform(-1, 1, model.nv) * qvel_scale
    for j in layout.joints.values():
        if j.type in ("free", "ball"):
            q = rng.normal(size=4)
            data.qpos[j.qpos[1] - 4 : j.qpos[1]] = q / np.linalg.norm(q)


MAX_PAIR_BODIES = 64  # body-position differences are O(nbody^2) candidates


def _candidates(model, data, layout: ModelLayout):
    """Flat arrays of what an observation entry could copy, in order of preference."""
    hinge = np.zeros(model.nq, dtype=bool)
    for j in layout.joints.values():
        hinge[j.qpos[0]] |= j.type == "hinge"
    qpos = np.asarray(data.qpos, dtype=np.float64)
    groups = [
        ("qpos", "", qpos),
        ("qvel", "", np.asarray(data.qvel, dtype=np.float64)),
        # cos/sin only mean something for angles; NaN never matches.
        ("qpos", "cos", np.where(hinge, np.cos(qpos), np.nan)),
        ("qpos", "sin", np.where(hinge, np.sin(qpos), np.nan)),
    ]
    # Children first: a marker body placed at its parent's origin (Pusher's
    # "tips_arm") is the name the env author meant.
    bodies = [(n, b) for n, b in reversed(layout.bodies.items()) if b > 0]
    groups += [(f'body("{n}").pos', "", data.xpos[b]) for n, b in bodies]
    groups += [(f'site("{n}").pos', "", data.site_xpos[s]) for n, s in layout.sites.items()]
    groups += [(f'sensor("{n}")', "", data.sensordata[a:b]) for n, (a, b) in layout.sensors.items()]
    if len(bodies) <= MAX_PAIR_BODIES:  # e.g. Reacher's fingertip - target
        groups += [
            (f'body("{n}").pos - body("{m}").pos', "", data.xpos[b] - data.xpos[c])
            for n, b in bodies
            for m, c in bodies
            if b != c
        ]
    labels = [(src, fn, i) for src, fn, vals in groups for i in range(len(vals))]
    values = np.concatenate([np.asarray(v, dtype=np.float64).ravel() for _, _, v in groups])
    return labels, values


def _group(labels: list) -> list[ObsField]:
    """Runs of entries that copy consecutive entries of one source become one field."""
    fields: list[ObsField] = []
    for i, lab in enumerate(labels):
        last = fields[-1] if fields else None
        if lab is None:
            if last is not None and last.index is None:
                last.end = i + 1
            else:
                fields.append(ObsField(start=i, end=i + 1))
            continue
        src, fn, k = lab
        if last is not None and last.index is not None and (last.source, last.fn) == (src, fn) and last.index[1] == k:
            last.end, last.index = i + 1, (last.index[0], k + 1)
        else:
            fields.append(ObsField(start=i, end=i + 1, source=src, fn=fn, index=(k, k + 1)))
    return fields


def _name_fields(fields: list[ObsField], layout: ModelLayout) -> None:
    """Note which joints a qpos/qvel block covers: 'rootz..ffoot'."""
    for f in fields:
        if f.source not in ("qpos", "qvel") or f.index is None:
            continue
        a, b = f.index
        names = [n for n, j in layout.joints.items() if getattr(j, f.source)[0] < b and getattr(j, f.source)[1] > a]
        f.note = names[0] if len(names) == 1 else (f"{names[0]}..{names[-1]}" if names else "")


def _label_other(fields: list[ObsField], structure, obs_dim: int) -> None:
    """Name the "other" blocks from gymnasium's ``observation_structure`` where it agrees.

    That dict lists the observation's parts in order (qpos, qvel, cfrc_ext, ...).
    It is trusted only if its sizes add up to the observation and its qpos/qvel
    parts sit exactly where the numeric match found qpos/qvel.
    """
    if not isinstance(structure, dict):
        return
    parts, at = [], 0
    for key, size in structure.items():
        if key.startswith("skipped") or not isinstance(size, int) or size <= 0:
            continue
        parts.append((key, at, at + size))
        at += size
    if at != obs_dim:
        return
    found = {(f.source, f.start, f.end) for f in fields if f.source in ("qpos", "qvel") and not f.fn}
    if {(k, a, b) for k, a, b in parts if k in ("qpos", "qvel")} != found:
        return
    out = []
    for f in fields:
        if f.index is not None:
            out.append(f)
            continue
        pos = f.start
        for key, a, b in parts:
            lo, hi = max(a, f.start), min(b, f.end)
            if lo >= hi:
                continue
            if lo > pos:  # a stretch the structure does not name
                out.append(ObsField(start=pos, end=lo))
            note = f"{key}: {_MJDATA_FIELDS[key]}" if key in _MJDATA_FIELDS else key
            out.append(ObsField(start=lo, end=hi, note=note))
            pos = hi
        if pos < f.end:
            out.append(ObsField(start=pos, end=f.end))
    fields[:] = out


# --------------------------------------------------------------------------- docstring


def _doc_sections(doc: str) -> dict[str, str]:
    """A gymnasium-style docstring's '## Title' sections, keyed by lower-case title.

    Text before the first heading goes under "description" when there is no
    such section (a plain docstring is all description).
    """
    lines = inspect.cleandoc(doc).splitlines()
    sections: dict[str, list[str]] = {"": []}
    key = ""
    for line in lines:
        m = re.match(r"##\s+(.+?):?\s*$", line)
        if m and not line.startswith("###"):
            key = m.group(1).strip().lower()
            sections[key] = []
        else:
            sections[key].append(line)
    out = {k: "\n".join(v).strip() for k, v in sections.items()}
    if not out.get("description"):
        out["description"] = out.get("", "")
    return out


_LATEX = {r"\infty": "inf", r"\leq": "<=", r"\geq": ">=", r"\times": "x", r"\cdot": "*", r"\pm": "+-"}


def _clean(text: str) -> str:
    """Docstring markdown to plain compact text: no figures, code, links, LaTeX or table rules."""
    out, fenced = [], False
    for line in text.splitlines():
        s = line.strip()
        if s.startswith("```"):
            fenced = not fenced
            continue
        # Figures (images, ":name:" directives) and table rules say nothing in text.
        if fenced or s.startswith("![") or s.startswith(":") or re.fullmatch(r"\|?[\s|:-]+\|?", s or "x"):
            continue
        s = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", s)  # links -> their text
        s = re.sub(r"<sup>(.*?)</sup>", r"^\1", s)
        for k, v in _LATEX.items():
            s = s.replace(k, v)
        s = s.replace("$", "").replace("**", "").replace("\\", "").replace('"""', "'''")
        out.append(" ".join(s.split()))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(out)).strip()


def _clip(text: str, limit: int) -> str:
    """Cut at the last sentence or line end before ``limit``."""
    if len(text) <= limit:
        return text
    head = text[:limit]
    cut = max(head.rfind(". "), head.rfind(".\n"), head.rfind("\n"))
    return (head[: cut + 1] if cut > limit // 3 else head).rstrip() + " ..."


# Sentences of gymnasium's descriptions that carry no physics: citations, lineage, diagrams,
# "aims to increase the number of independent state and control variables".
_FILLER = re.compile(
    r"work of|thesis|introduced by|based on the (?:one|environment|classic)|corresponds to the|builds on the"
    r"|aims to increase|like other mujoco|two versions|this version is|diagram below|first appeared|@\w+\{", re.I)


def _sentences(text: str) -> list[str]:
    # Not after an initial ("P. Wawrzynski").
    return [s for s in re.split(r"(?<=[.!?])(?<!\b[A-Z]\.)\s+(?=[A-Z\"'(`*-])", " ".join(text.split())) if s]


def _summary(sections: dict[str, str]) -> str:
    # One flowing paragraph: line breaks in a description are only source wrapping.
    text = _clean(sections.get("description", ""))
    return _clip(" ".join(s for s in _sentences(text) if not _FILLER.search(s)), SUMMARY_CHARS)


def _definitions(rewards: str) -> list[str]:
    """The sentences of a reward section that define a symbol ("where theta is ..."), not the formula."""
    found = (re.search(r"\bwhere\s+(.*)", s) for s in _sentences(_clean(rewards)))
    return [m.group(1) for m in found if m and "reward" not in m.group(1).lower()]


def _termination(sections: dict[str, str]) -> str:
    text = sections.get("episode end") or sections.get("episode termination") or ""
    # gymnasium's MuJoCo docstrings split "### Termination" / "### Truncation";
    # truncation is max_episode_steps, which the card states from the TimeLimit.
    m = re.search(r"###\s*Termination\s*\n(.*?)(?=\n\s*###|\Z)", text, re.S)
    if m:
        text = m.group(1)
    return _clip(_clean(text), SECTION_CHARS)


# --------------------------------------------------------------------------- rendering


def _num(x: float) -> str:
    return f"{float(x):.4g}"


def _span(name: str, span: tuple[int, int]) -> str:
    a, b = span
    return f"{name}[{a}]" if b - a == 1 else f"{name}[{a}:{b}]"


def _view(card: EnvCard) -> dict:
    """Strings the template lays out; the formatting decisions live here, the layout there."""
    lay = card.layout
    joints, loose_actuators = [], []
    if lay is not None:
        # action[:, i] drives actuator i when the action is the control vector (MujocoEnv).
        direct = card.action_shape == [len(lay.actuators)]
        # Uniform action bounds are stated once with the action; else per actuator.
        uniform = len(set(card.action_low)) == 1 and len(set(card.action_high)) == 1
        driven: dict[str, str] = {}  # joint -> what drives it
        for i, (name, act) in enumerate(lay.actuators.items()):
            ctrl = f" gear {_num(card.gears[i])}" if i < len(card.gears) else ""
            if act.ctrl_range and not (direct and uniform):
                ctrl += f" ctrl [{_num(act.ctrl_range[0])}, {_num(act.ctrl_range[1])}]"
            if act.target in lay.joints and act.target not in driven:
                driven[act.target] = (f"action[:, {i}]" if direct else f"actuator {name}") + ctrl
            else:
                loose_actuators.append(f"{name}" + (f" <- action[:, {i}]" if direct else "") + ctrl)
        width = max((len(n) for n in lay.joints), default=0)
        for name, j in lay.joints.items():
            axis = card.joint_axes.get(name)
            axis = f" {'along' if j.type == 'slide' else 'about'} {_axis(axis)}" if axis else ""
            rng = f" range [{_num(j.range[0])}, {_num(j.range[1])}]" if j.range else ""
            act = f" <- {driven[name]}" if name in driven else ""
            joints.append(f"{name.ljust(width)} {j.type:<5} {_span('qpos', j.qpos)} {_span('qvel', j.qvel)}"
                          f"{axis}{rng}{act}")
    timing = []
    if card.dt is not None:
        timing.append(f"dt = {_num(card.dt)} s per step")
    if card.timestep is not None and card.frame_skip is not None:
        timing.append(f"= timestep {_num(card.timestep)} s x frame_skip {card.frame_skip}")
    episode = (
        f"at most {card.max_episode_steps} steps (then truncated)"
        if card.max_episode_steps
        else "no time limit"
    )
    up = None
    if card.gravity is not None and any(card.gravity):
        axis = int(np.argmax(np.abs(card.gravity)))
        up = ("-" if card.gravity[axis] > 0 else "+") + "xyz"[axis]
    hinges = sorted({_axis(card.joint_axes[n]) for n, j in lay.joints.items()
                     if j.type == "hinge" and n in card.joint_axes} if lay else set())
    signs = [f"about {a}, positive {_turn(a, up)}" for a in hinges if _turn(a, up)]
    if card.terminations is None:
        termination = card.termination
    elif card.terminations:
        termination = "Terminated when " + " or ".join(b.text() for b in card.terminations)
    else:
        termination = "Never terminated: only the time limit ends an episode"
    obs_lines = []
    for f in card.obs_layout:
        joints_note = f"  ({f.note})" if f.note and f.index is not None else ""
        obs_lines.append(f"obs[{f.start}:{f.end}] = {f.expr()}{joints_note}")
    bodies = [n for n, b in lay.bodies.items() if b > 0] if lay else []
    # Accessor examples use real names: the root body, an actuated joint.
    joint_example = ""
    if lay is not None:
        actuated = [a.target for a in lay.actuators.values() if a.target in lay.joints]
        joint_example = (actuated or list(lay.joints) or [""])[0]
    return {
        "title": f"{card.env_id} ({'MuJoCo' if card.is_mujoco else 'not MuJoCo: obs only'})",
        "episode": episode,
        "timing": " ".join(timing),
        "dt": _num(card.dt) if card.dt is not None else None,
        "up": up,
        "obs_lines": obs_lines,
        "bodies": bodies,
        "body_example": bodies[0] if bodies else "",
        "joints": joints,
        "joint_example": joint_example,
        "has_free": lay is not None and any(j.type == "free" for j in lay.joints.values()),
        "loose_actuators": loose_actuators,
        "sites": list(lay.sites) if lay else [],
        "sensors": [f"{n} [{b - a}]" for n, (a, b) in lay.sensors.items()] if lay else [],
        "action_dim": card.action_shape[0] if card.action_shape else None,
        "signs": signs,
        "termination": termination,
        "reset": _reset(card),
        "fluid": (f"a fluid of density {_num(card.density)} and viscosity {_num(card.viscosity)} drags every body"
                  if card.density or card.viscosity else ""),
        "motors": lay is not None and bool(lay.actuators) and card.motors,
    }


def _axis(v: list[float]) -> str:
    """A world axis as text: "+y", "-z", or "(0.707, -0.707, 0)" when it is no coordinate axis."""
    k = int(np.argmax(np.abs(v)))
    if abs(abs(v[k]) - 1) < 1e-3:
        return ("+" if v[k] > 0 else "-") + "xyz"[k]
    return "(" + ", ".join(_num(x) for x in v) + ")"


def _turn(axis: str, up: str | None) -> str:
    """Which way a positive angle about a coordinate axis turns, by the right-hand rule:
    about +e_k, e_(k+1) turns toward +e_(k+2). Said by what goes up or down when +z is up."""
    if len(axis) != 2:
        return ""
    k, s = "xyz".index(axis[1]), 1 if axis[0] == "+" else -1
    if up == "+z" and k == 1:  # about y: +z toward +x, so +x toward -z
        return f"tips +x {'down' if s > 0 else 'up'}"
    if up == "+z" and k == 0:
        return f"tips +y {'up' if s > 0 else 'down'}"
    if up == "+z":
        return f"turns +x toward {'+' if s > 0 else '-'}y ({'counter-' if s > 0 else ''}clockwise seen from above)"
    return f"turns +{'xyz'[(k + 1) % 3]} toward {'+' if s > 0 else '-'}{'xyz'[(k + 2) % 3]}"


def _reset(card: EnvCard) -> str:
    """The reset pose: the joints not at 0, the noise, and where the root body stands."""
    if not card.reset_qpos or card.layout is None:
        return ""
    q = card.reset_qpos
    parts = []
    for name, j in card.layout.joints.items():
        v = q[j.qpos[0]:j.qpos[1]]
        if any(v):
            parts.append(f"{name} = {_num(v[0])}" if len(v) == 1 else f"{name} = [{', '.join(_num(x) for x in v)}]")
    text = "qpos all 0" if not parts else f"qpos 0 except {', '.join(parts)}"
    if card.reset_noise:
        text += f" (+ noise, scale {_num(card.reset_noise)})"
    if card.root and card.root_z is not None:
        text += f"; {card.root} at z = {_num(card.root_z)} m"
    return text


def _template() -> jinja2.Template:
    text = files("reward_designer.prompts").joinpath("envcard.py.j2").read_text(encoding="utf-8")
    env = jinja2.Environment(
        undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True, keep_trailing_newline=True
    )
    return env.from_string(text)
