"""Meta-World v3 manipulation tasks (the MT10 set) on our MuJoCo, without the ``metaworld`` package.

``metaworld`` 3.1.1, the newest published, pins ``mujoco==3.3.0`` and fails under
MuJoCo 4 (its ``reset_mocap_welds`` writes 11 numbers into a weld's 12), so pip
cannot install it beside ours. What a task needs from it is its MJCF scene (the
Sawyer arm, the table, the object), which ships here under ``metaworld_assets/``
(MIT, the package's LICENSE beside it; textures downsampled to 256 px, the only
change), and the env's Python, which this module re-implements: the mocap
control, the 39-number observation, the reset distribution, the dense reward and
the success check of each task, written after metaworld 3.1.1's code (the
reward functions keep its quirks, named where they occur). tests/test_metaworld.py
holds them to trajectories recorded from the original env under MuJoCo 3.3.0
(benchmarks/metaworld_record.py).

Each task is registered with gymnasium as ``MetaWorld/<task>`` (``reach-v3``,
...) when this module is imported, so ``gym.make(MODULE + ":MetaWorld/reach-v3")``
makes one from anywhere (task cards use that id). The env is a gymnasium
``MujocoEnv``: the "mujoco" simulator backend steps it in slabs like any other.

Differences from the published env, on purpose: the goal is always observable
(obs[36:39], as in Meta-World's MT benchmarks); every reset draws a fresh object
and goal position from the task's reset space with the env's seeded RNG (the MT
benchmarks cycle 50 fixed draws); ``reset(options={"rand_vec": v})`` starts from
a given draw. The reward is metaworld's "v2" reward, the one its benchmarks use.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium.envs.mujoco import MujocoEnv
from gymnasium.spaces import Box

MODULE = __name__
ASSETS = Path(__file__).with_name("metaworld_assets")
ENV_NAMESPACE = "MetaWorld"
MAX_PATH_LENGTH = 500  # Meta-World's episode: 500 env steps
FRAME_SKIP = 5
ACTION_SCALE = 1.0 / 100  # metres the mocap moves per unit of action, per step
MOCAP_QUAT = np.array([1.0, 0.0, 1.0, 0.0])  # the hand points down
# The observation: hand position (3), gripper opening (1), objects padded to 14 (pos 3 + quat 4 each),
# the same 18 one step earlier, then the goal (3).
OBS_OBJ_LEN = 14
HAND_SPACE = Box(np.array([-0.525, 0.348, -0.0525]), np.array([0.525, 1.025, 0.7]), dtype=np.float64)
# metaworld's weld of the hand to the mocap: anchor (3), relative pose (pos 3, quat 4), torque scale; then
# MuJoCo 4's twelfth number, which its compiler writes as 0 for a weld whose relative pose is given (as here).
WELD_DATA = np.array([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 5.0, 0.0])


# ------------------------------------------------------------------ dm_control's reward shaping, as metaworld has it
def tolerance(x: float, bounds: tuple[float, float], margin: float, sigmoid: str = "long_tail",
              value_at_margin: float = 0.1) -> float:
    """``reward_utils.tolerance``: 1 inside ``bounds``, falling off outside to ``value_at_margin`` at
    ``margin`` past a bound (sigmoid "long_tail" or "gaussian"); with a margin of 0, 0 outside.
    Plain floats: one env's step calls this a dozen times, where numpy's per-call cost would dominate."""
    lower, upper = bounds
    x, margin = float(x), float(margin)
    if margin < 0:
        raise ValueError(f"margin must be non-negative, got {margin}")
    if lower <= x <= upper:
        return 1.0
    if margin == 0:
        return 0.0
    d = (lower - x if x < lower else x - upper) / margin
    if sigmoid == "long_tail":
        return 1 / ((d * math.sqrt(1 / value_at_margin - 1)) ** 2 + 1)
    if sigmoid == "gaussian":
        return math.exp(-0.5 * (d * math.sqrt(-2 * math.log(value_at_margin))) ** 2)
    raise ValueError(f"unknown sigmoid {sigmoid!r}")


def hamacher(a: float, b: float) -> float:
    """The Hamacher product of two values in [0, 1]: a fuzzy 'and', 0 where either is 0."""
    a, b = float(a), float(b)
    den = a + b - a * b
    return a * b / den if den > 0 else 0.0


def rect_prism_tolerance(curr, zero, one) -> float:
    """``reward_utils.rect_prism_tolerance``: inside the box from corner ``zero`` to corner ``one``, the
    product of the point's fractions of the way along each axis; 1.0 outside it (as metaworld has it)."""
    lo, hi = np.minimum(zero, one), np.maximum(zero, one)
    if np.all((lo <= curr) & (curr <= hi)):
        return float(np.prod((curr - zero) / (one - zero)))
    return 1.0


def quat_xyzw(xmat) -> np.ndarray:
    """A rotation matrix (9 numbers, row-major) as a quaternion (x, y, z, w), by scipy's
    ``Rotation.from_matrix(m).as_quat()`` algorithm, whose sign convention metaworld's observation has."""
    r00, r01, r02, r10, r11, r12, r20, r21, r22 = np.asarray(xmat, dtype=np.float64).ravel().tolist()
    trace = r00 + r11 + r22
    decision = (r00, r11, r22, trace)
    c = max(range(4), key=decision.__getitem__)  # the first of equal maxima, as argmax
    if c == 0:
        q = (1 - trace + 2 * r00, r10 + r01, r20 + r02, r21 - r12)
    elif c == 1:
        q = (r01 + r10, 1 - trace + 2 * r11, r21 + r12, r02 - r20)
    elif c == 2:
        q = (r02 + r20, r12 + r21, 1 - trace + 2 * r22, r10 - r01)
    else:
        q = (r21 - r12, r02 - r20, r10 - r01, 1 + trace)
    return np.array(q) / math.sqrt(q[0] * q[0] + q[1] * q[1] + q[2] * q[2] + q[3] * q[3])


def _norm(v) -> float:
    return math.hypot(*v.tolist())


# ------------------------------------------------------------------ tasks
@dataclass(frozen=True)
class Task:
    """One Meta-World task: its scene, hand range, reset space, and (in the methods) reset, objects, reward.

    ``reset_low``/``reset_high`` bound the random vector drawn each reset (object then goal
    position for most tasks); ``goal_low``/``goal_high`` the goal's range (its observation bounds)."""

    name: str
    xml: str
    hand_init_pos: tuple[float, float, float]
    reset_low: tuple[float, ...]
    reset_high: tuple[float, ...]
    goal_low: tuple[float, float, float]
    goal_high: tuple[float, float, float]
    hand_low: tuple[float, float, float] = (-0.5, 0.40, 0.05)
    hand_high: tuple[float, float, float] = (0.5, 1.0, 0.5)
    success_radius: float = 0.05
    # How far apart in the plane the rand vector's object (0:2) and goal (3:5) must be (redrawn until so).
    apart: float = 0.0
    # metaworld gives some tasks' hand start as float32 (0.6 is 0.6000000238): kept, for the same reset.
    hand_init_f32: bool = False
    description: str = ""
    # For the env card, in the names ``state`` takes: what obs[4:11] shows, where the goal is, the success check.
    objects_note: str = ""
    goal_note: str = "site(\"goal\").pos is placed there too"
    success_note: str = ""

    # -- what subclasses say
    def place(self, env: "SawyerEnv", rand_vec: np.ndarray) -> None:
        """Move fixed bodies (a drawer's case, a door's frame) before the hand's reset moves the arm:
        metaworld's reset runs its placement twice, so its arm always settles beside the placed scene."""

    def reset(self, env: "SawyerEnv", rand_vec: np.ndarray) -> None:
        """Place the objects and the goal for a new episode (the hand is already at its start)."""
        raise NotImplementedError

    def objects(self, env: "SawyerEnv") -> tuple[np.ndarray, np.ndarray]:
        """The objects' positions (3 each) and orientations (x, y, z, w each) the observation shows."""
        return env.data.body("obj").xpos.copy(), quat_xyzw(env.data.geom("objGeom").xmat)

    def evaluate(self, env: "SawyerEnv", obs: np.ndarray, action: np.ndarray) -> tuple[float, dict[str, float]]:
        """(reward, info with at least ``success`` and ``obj_to_target``) after a step."""
        raise NotImplementedError


class _ObjectGoalTask(Task):
    """A block on the table and a goal point: reach, push, pick-place."""

    flat_goal = False  # push: the goal and the block's start keep the block's height

    def reset(self, env, rand_vec):
        obj_z = env.data.body("obj").xpos[2]  # the block's resting height
        env.obj_init_pos = np.array([rand_vec[0], rand_vec[1], obj_z if self.flat_goal else rand_vec[2]])
        env.target_pos = np.array([rand_vec[3], rand_vec[4], obj_z]) if self.flat_goal else rand_vec[3:6].copy()
        env.set_object_xyz(env.obj_init_pos)
        env.model.site("goal").pos = env.target_pos


class _Reach(_ObjectGoalTask):
    def evaluate(self, env, obs, action):
        tcp_to_target = _norm(env.tcp_center() - env.target_pos)
        margin = _norm(np.asarray(self.hand_init_pos) - env.target_pos)
        in_place = tolerance(tcp_to_target, (0, self.success_radius), margin)
        return 10 * in_place, {"success": float(tcp_to_target <= self.success_radius),
                               "obj_to_target": tcp_to_target, "near_object": tcp_to_target,
                               "in_place_reward": in_place}


class _Push(_ObjectGoalTask):
    flat_goal = True

    def evaluate(self, env, obs, action):
        obj, tcp_opened = obs[4:7], obs[3]
        tcp_to_obj = _norm(obj - env.tcp_center())
        target_to_obj = _norm(obj - env.target_pos)
        in_place = tolerance(target_to_obj, (0, self.success_radius), _norm(env.obj_init_pos - env.target_pos))
        grasped = env.gripper_caging_reward(action, obj, object_reach_radius=0.01, obj_radius=0.015,
                                            pad_success_thresh=0.05, xz_thresh=0.005, high_density=True)
        reward = 2 * grasped
        if tcp_to_obj < 0.02 and tcp_opened > 0:
            reward += 1.0 + reward + 5.0 * in_place  # metaworld adds the reward to itself here
        if target_to_obj < self.success_radius:
            reward = 10.0
        return reward, {"success": float(target_to_obj <= self.success_radius), "obj_to_target": target_to_obj,
                        "near_object": float(tcp_to_obj <= 0.03), "grasp_reward": grasped, "in_place_reward": in_place}


class _PickPlace(_ObjectGoalTask):
    def evaluate(self, env, obs, action):
        tcp, obj, tcp_opened, target = env.tcp_center(), obs[4:7], obs[3], env.target_pos
        obj_to_target, tcp_to_obj = _norm(obj - target), _norm(obj - tcp)
        in_place = tolerance(obj_to_target, (0, 0.05), _norm(env.obj_init_pos - target))
        grasped = self._caging(env, action, obj, tcp)
        reward = hamacher(grasped, in_place)
        if tcp_to_obj < 0.02 and tcp_opened > 0 and obj[2] - 0.01 > env.obj_init_pos[2]:
            reward += 1.0 + 5.0 * in_place
        if obj_to_target < 0.05:
            reward = 10.0
        return reward, {"success": float(obj_to_target <= 0.07), "obj_to_target": obj_to_target,
                        "near_object": float(tcp_to_obj <= 0.03), "grasp_reward": grasped, "in_place_reward": in_place}

    @staticmethod
    def _caging(env, action, obj, tcp) -> float:
        # pick-place's own caging reward. Its "initial" pad positions are views of MjData in metaworld,
        # so they are the pads' current positions: kept so, to give the same reward.
        pad_margin, xz_margin, obj_radius = 0.05, 0.005, 0.015
        left, right = env.leftpad, env.rightpad
        right_margin = abs(abs(obj[1] - right[1]) - pad_margin)
        left_margin = abs(abs(obj[1] - left[1]) - pad_margin)
        right_caging = tolerance(obj[1] - right[1], (obj_radius, pad_margin), right_margin)
        left_caging = tolerance(left[1] - obj[1], (obj_radius, pad_margin), left_margin)
        y_caging = hamacher(left_caging, right_caging)
        xz = [0, 2]
        tcp_obj_xz = _norm(tcp[xz] - obj[xz])
        xz_caging_margin = _norm(env.obj_init_pos[xz] - env.init_tcp[xz]) - xz_margin
        xz_caging = tolerance(tcp_obj_xz, (0, xz_margin), xz_caging_margin)
        gripper_closed = min(max(0, action[-1]), 1)
        caging = hamacher(y_caging, xz_caging)
        gripping = gripper_closed if caging > 0.97 else 0.0
        return float((hamacher(caging, gripping) + caging) / 2)


class _DrawerOpen(Task):
    max_dist = 0.2  # how far the drawer opens

    def place(self, env, rand_vec):
        env.model.body("drawer").pos = rand_vec

    def reset(self, env, rand_vec):
        env.obj_init_pos = rand_vec.copy()
        env.target_pos = rand_vec + np.array([0.0, -0.16 - self.max_dist, 0.09])
        env.model.site("goal").pos = env.target_pos

    def objects(self, env):  # the handle, and the drawer's orientation (w, x, y, z: metaworld reads xquat here)
        return env.data.body("drawer_link").xpos + np.array([0.0, -0.16, 0.0]), env.data.body("drawer_link").xquat.copy()

    def evaluate(self, env, obs, action):
        gripper, handle = obs[:3], obs[4:7]
        handle_error = _norm(handle - env.target_pos)
        opening = tolerance(handle_error, (0, 0.02), self.max_dist)
        handle_init = env.target_pos + np.array([0.0, self.max_dist, 0.0])
        scale = np.array([3.0, 3.0, 1.0])
        caging = tolerance(_norm((handle - gripper) * scale), (0, 0.01), _norm((handle_init - env.init_tcp) * scale))
        return 5.0 * (caging + opening), {"success": float(handle_error <= 0.03), "obj_to_target": handle_error,
                                          "near_object": float(_norm(handle - gripper) <= 0.03),
                                          "grasp_reward": caging, "in_place_reward": opening}


class _DrawerClose(_DrawerOpen):
    max_dist = 0.15  # how far open the drawer starts
    radius = 0.05  # metaworld's class declares 0.04 as _TARGET_RADIUS but reads the base's TARGET_RADIUS

    def reset(self, env, rand_vec):
        env.target_pos = rand_vec + np.array([0.0, -0.16, 0.09])
        qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
        qpos[9] = -self.max_dist
        env.set_state(qpos, qvel)
        env.obj_init_pos = self.objects(env)[0]
        env.model.site("goal").pos = env.target_pos

    def objects(self, env):
        return env.data.body("drawer_link").xpos + np.array([0.0, -0.16, 0.05]), np.zeros(4)

    def evaluate(self, env, obs, action):
        obj, tcp, target = obs[4:7], env.tcp_center(), env.target_pos
        target_to_obj = _norm(obj - target)
        in_place = tolerance(target_to_obj, (0, self.radius),
                                   abs(_norm(env.obj_init_pos - target) - self.radius))
        tcp_to_obj = _norm(obj - tcp)
        reach = tolerance(tcp_to_obj, (0, 0.005), abs(_norm(env.obj_init_pos - env.init_tcp) - 0.005),
                                sigmoid="gaussian")
        reach = hamacher(reach, min(max(0, action[-1]), 1))
        reward = hamacher(reach, in_place)
        if target_to_obj <= self.radius + 0.015:
            reward = 1.0
        return 10 * reward, {"success": float(target_to_obj <= self.radius + 0.015), "obj_to_target": target_to_obj,
                             "near_object": float(tcp_to_obj <= 0.01), "grasp_reward": reach, "in_place_reward": in_place}


class _ButtonPressTopdown(Task):
    def place(self, env, rand_vec):
        env.model.body("box").pos = rand_vec

    def reset(self, env, rand_vec):
        env.obj_init_pos = rand_vec.copy()
        mujoco.mj_forward(env.model, env.data)
        env.target_pos = env.data.site("hole").xpos.copy()
        env.obj_to_target_init = abs(env.target_pos[2] - env.data.site("buttonStart").xpos[2])

    def objects(self, env):
        return env.data.body("button").xpos + np.array([0.0, 0.0, 0.193]), env.data.body("button").xquat.copy()

    def evaluate(self, env, obs, action):
        obj, tcp = obs[4:7], env.tcp_center()
        tcp_to_obj = _norm(obj - tcp)
        obj_to_target = abs(env.target_pos[2] - obj[2])
        near_button = tolerance(tcp_to_obj, (0, 0.01), _norm(obj - env.init_tcp))
        pressed = tolerance(obj_to_target, (0, 0.005), env.obj_to_target_init)
        reward = 5 * hamacher(1 - obs[3], near_button)
        if tcp_to_obj <= 0.03:
            reward += 5 * pressed
        return reward, {"success": float(obj_to_target <= 0.024), "obj_to_target": obj_to_target,
                        "near_object": float(tcp_to_obj <= 0.05), "grasp_reward": near_button, "in_place_reward": pressed}


class _DoorOpen(Task):
    def place(self, env, rand_vec):
        env.model.body("door").pos = rand_vec

    def reset(self, env, rand_vec):
        env.obj_init_pos = rand_vec.copy()
        env.target_pos = rand_vec + np.array([-0.3, -0.45, 0.0])
        env.model.site("goal").pos = env.target_pos
        qpos, qvel = env.data.qpos.copy(), env.data.qvel.copy()
        joint = env.model.joint("doorjoint")
        qpos[joint.qposadr.item()], qvel[joint.dofadr.item()] = 0, 0
        env.set_state(qpos, qvel)

    def objects(self, env):
        return env.data.geom("handle").xpos.copy(), quat_xyzw(env.data.geom("handle").xmat)

    def evaluate(self, env, obs, action):
        theta = float(env.data.joint("doorjoint").qpos.item())
        grab = float((np.clip(action[3], -1, 1) + 1.0) / 2.0)
        hand, door = obs[:3], obs[4:7] + np.array([-0.05, 0, 0])
        threshold = 0.12
        radius = _norm(hand[:2] - door[:2])
        floor = 0.0 if radius <= threshold else 0.04 * np.log(radius - threshold) + 0.4
        above_floor = 1.0 if hand[2] >= floor else tolerance(floor - hand[2], (0.0, 0.01), floor / 2.0)
        in_place = tolerance(_norm(hand - door - np.array([0.05, 0.03, -0.01])), (0, threshold / 2.0), 0.5)
        ready = hamacher(above_floor, in_place)
        opened = 0.2 * float(theta < -np.pi / 90.0) + 0.8 * float(
            tolerance(np.pi / 2.0 + np.pi / 6 - (-theta), (0, 0.5), np.pi / 3.0))
        reward = 2.0 * hamacher(ready, grab) + 8.0 * opened
        handle_to_goal_x = abs(obs[4] - env.target_pos[0])
        if handle_to_goal_x <= 0.08:
            reward = 10.0
        return reward, {"success": float(handle_to_goal_x <= 0.08), "obj_to_target": handle_to_goal_x,
                        "near_object": ready, "grasp_reward": grab, "in_place_reward": opened}


class _WindowOpen(Task):
    handle_site, slide_start, target_shift, handle_shift, reach_sigmoid = (
        "handleOpenStart", 0.0, (0.2, 0.0, 0.0), (0.0, 0.0, 0.0), "long_tail")

    def place(self, env, rand_vec):
        env.model.body("window").pos = rand_vec

    def reset(self, env, rand_vec):
        env.obj_init_pos = rand_vec.copy()
        env.target_pos = rand_vec + np.array(self.target_shift)
        env.handle_init = env.data.site(self.handle_site).xpos + np.array(self.handle_shift)
        # metaworld sets the slide without a forward pass: the first observation shows the window as it was.
        env.data.joint("window_slide").qpos = self.slide_start
        env.model.site("goal").pos = env.target_pos

    def objects(self, env):
        return env.data.site(self.handle_site).xpos.copy(), np.zeros(4)

    def evaluate(self, env, obs, action):
        obj, tcp, target = env.data.site(self.handle_site).xpos, env.tcp_center(), env.target_pos
        target_to_obj = abs(obj[0] - target[0])
        in_place = tolerance(target_to_obj, (0, 0.05), abs(abs(self._start_x(env) - target[0]) - 0.05))
        tcp_to_obj = _norm(obj - tcp)
        reach = tolerance(tcp_to_obj, (0, 0.02), abs(_norm(env.handle_init - env.init_tcp) - 0.02),
                                sigmoid=self.reach_sigmoid)
        return 10 * hamacher(reach, in_place), {
            "success": float(target_to_obj <= 0.05), "obj_to_target": target_to_obj,
            "near_object": float(tcp_to_obj <= 0.05), "grasp_reward": reach, "in_place_reward": in_place}

    @staticmethod
    def _start_x(env) -> float:
        return env.obj_init_pos[0]  # window-open measures from the window's placement


class _WindowClose(_WindowOpen):
    handle_site, slide_start, target_shift, handle_shift, reach_sigmoid = (
        "handleCloseStart", 0.2, (0.0, 0.0, 0.0), (0.2, 0.0, 0.0), "gaussian")

    @staticmethod
    def _start_x(env) -> float:
        return env.handle_init[0]  # window-close from the handle's opened position


class _PegInsertSide(Task):
    def place(self, env, rand_vec):
        env.model.body("box").pos = rand_vec[3:6]

    def reset(self, env, rand_vec):
        env.obj_init_pos = rand_vec[:3].copy()
        # Read before the peg moves, as metaworld does: the head where the peg lay at the hand's reset.
        env.peg_head_init = env.data.site("pegHead").xpos.copy()
        env.set_object_xyz(env.obj_init_pos)
        env.target_pos = rand_vec[3:6] + np.array([0.03, 0.0, 0.13])
        env.model.site("goal").pos = env.target_pos

    def objects(self, env):
        return env.data.site("pegGrasp").xpos.copy(), quat_xyzw(env.data.site("pegGrasp").xmat)

    def evaluate(self, env, obs, action):
        site = lambda name: env.data.site(name).xpos  # noqa: E731
        tcp, obj, head, tcp_opened, target = env.tcp_center(), obs[4:7], site("pegHead"), obs[3], env.target_pos
        tcp_to_obj = _norm(obj - tcp)
        scale = np.array([1.0, 2.0, 2.0])
        obj_to_target = _norm((head - target) * scale)
        in_place = tolerance(obj_to_target, (0, 0.07), _norm((env.peg_head_init - target) * scale))
        boxes = hamacher(
            rect_prism_tolerance(head, site("bottom_right_corner_collision_box_2"), site("top_left_corner_collision_box_2")),
            rect_prism_tolerance(head, site("bottom_right_corner_collision_box_1"), site("top_left_corner_collision_box_1")))
        in_place = hamacher(in_place, boxes)
        grasped = env.gripper_caging_reward(action, obj, object_reach_radius=0.01, obj_radius=0.0075,
                                            pad_success_thresh=0.03, xz_thresh=0.005, high_density=True)
        lifted = tcp_to_obj < 0.08 and tcp_opened > 0 and obj[2] - 0.01 > env.obj_init_pos[2]
        if lifted:
            grasped = 1.0
        reward = hamacher(grasped, in_place)
        if lifted:
            reward += 1.0 + 5 * in_place
        if obj_to_target <= 0.07:
            reward = 10.0
        return reward, {"success": float(obj_to_target <= 0.07), "obj_to_target": obj_to_target,
                        "near_object": float(tcp_to_obj <= 0.03), "grasp_reward": grasped, "in_place_reward": in_place}


_BLOCK = dict(hand_init_pos=(0.0, 0.6, 0.2), apart=0.15)
TASKS: dict[str, Task] = {t.name: t for t in [
    _Reach(
        "reach-v3", "sawyer_xyz/sawyer_reach_v3.xml", **_BLOCK,
        reset_low=(-0.1, 0.6, 0.02, -0.1, 0.8, 0.05), reset_high=(0.1, 0.7, 0.02, 0.1, 0.9, 0.3),
        goal_low=(-0.1, 0.8, 0.05), goal_high=(0.1, 0.9, 0.3),
        description="Move the gripper's fingertips to the goal point (within 5 cm).",
        objects_note='obs[4:7] = body("obj").pos, a puck (not part of this task); obs[7:11] its orientation',
        success_note="|tcp - goal| <= 0.05"),
    _Push(
        "push-v3", "sawyer_xyz/sawyer_push_v3.xml", **_BLOCK,
        reset_low=(-0.1, 0.6, 0.02, -0.1, 0.8, 0.01), reset_high=(0.1, 0.7, 0.02, 0.1, 0.9, 0.02),
        goal_low=(-0.1, 0.8, 0.01), goal_high=(0.1, 0.9, 0.02),
        description="Push the puck across the table to the goal (within 5 cm).",
        objects_note='obs[4:7] = body("obj").pos, the puck (free joint objjoint); obs[7:11] its orientation',
        success_note="|obs[4:7] - goal| <= 0.05"),
    _PickPlace(
        "pick-place-v3", "sawyer_xyz/sawyer_pick_place_v3.xml", **_BLOCK,
        reset_low=(-0.1, 0.6, 0.02, -0.1, 0.8, 0.05), reset_high=(0.1, 0.7, 0.02, 0.1, 0.9, 0.3),
        goal_low=(-0.1, 0.8, 0.05), goal_high=(0.1, 0.9, 0.3),
        description="Pick the puck up and place it at the goal point in the air (within 7 cm).",
        objects_note='obs[4:7] = body("obj").pos, the puck (free joint objjoint); obs[7:11] its orientation',
        success_note="|obs[4:7] - goal| <= 0.07"),
    _DoorOpen(
        "door-open-v3", "sawyer_xyz/sawyer_door_pull.xml", hand_init_pos=(0.0, 0.6, 0.2),
        reset_low=(0.0, 0.85, 0.15), reset_high=(0.1, 0.95, 0.15),
        goal_low=(-0.3, 0.4, 0.1499), goal_high=(-0.2, 0.5, 0.1501),
        description="Pull the door open by its handle: the handle within 8 cm (in x) of the goal.",
        objects_note='obs[4:7] = the door handle\'s position (a geom of body("door_link")); obs[7:11] its '
                     'orientation; joint("doorjoint").qpos is the door angle (0 closed, opening is negative)',
        success_note="|obs[4] - goal[0]| <= 0.08 (the handle swung round to the goal in x)"),
    _DrawerOpen(
        "drawer-open-v3", "sawyer_xyz/sawyer_drawer.xml", hand_init_pos=(0.0, 0.6, 0.2), hand_init_f32=True,
        reset_low=(-0.1, 0.9, 0.0), reset_high=(0.1, 0.9, 0.0), goal_low=(-0.5, 0.40, 0.05), goal_high=(0.5, 1.0, 0.5),
        description="Pull the drawer open by its handle (the handle within 3 cm of the open position).",
        objects_note='obs[4:7] = the handle, body("drawer_link").pos + (0, -0.16, 0); obs[7:11] the drawer\'s '
                     'quaternion (w, x, y, z here); joint("goal_slidey").qpos is the slide (0 shut, -0.2 fully open)',
        success_note="|obs[4:7] - goal| <= 0.03"),
    _DrawerClose(
        "drawer-close-v3", "sawyer_xyz/sawyer_drawer.xml", hand_init_pos=(0.0, 0.6, 0.2), hand_init_f32=True,
        reset_low=(-0.1, 0.9, 0.0), reset_high=(0.1, 0.9, 0.0), goal_low=(-0.5, 0.40, 0.05), goal_high=(0.5, 1.0, 0.5),
        description="Push the open drawer shut (the handle within 6.5 cm of the closed position).",
        objects_note='obs[4:7] = body("drawer_link").pos + (0, -0.16, 0.05), by the handle; obs[7:11] zero; '
                     'joint("goal_slidey").qpos is the slide (starts at -0.15 open, 0 shut)',
        success_note="|obs[4:7] - goal| <= 0.065"),
    _ButtonPressTopdown(
        "button-press-topdown-v3", "sawyer_xyz/sawyer_button_press_topdown.xml", hand_init_pos=(0.0, 0.4, 0.2),
        hand_init_f32=True, reset_low=(-0.1, 0.8, 0.115), reset_high=(0.1, 0.9, 0.115),
        goal_low=(-0.5, 0.40, 0.05), goal_high=(0.5, 1.0, 0.5),
        description="Press the button down from above (its top within 2.4 cm of the pressed depth).",
        objects_note='obs[4:7] = the button\'s top, body("button").pos + (0, 0, 0.193); obs[7:11] its quaternion '
                     '(w, x, y, z here); joint("btnbox_joint").qpos its travel',
        goal_note='it is site("hole").pos, the pressed depth; there is no goal site',
        success_note="|obs[6] - goal[2]| <= 0.024"),
    _PegInsertSide(
        "peg-insert-side-v3", "sawyer_xyz/sawyer_peg_insertion_side.xml", hand_init_pos=(0.0, 0.6, 0.2), apart=0.1,
        reset_low=(0.0, 0.5, 0.02, -0.35, 0.4, -0.001), reset_high=(0.2, 0.7, 0.02, -0.25, 0.7, 0.001),
        goal_low=(-0.32, 0.4, 0.129), goal_high=(-0.22, 0.7, 0.131),
        description="Pick the peg up and insert it sideways into the hole in the box (its head within 7 cm of "
                    "the hole, y and z counted double).",
        objects_note='obs[4:7] = site("pegGrasp").pos, where to hold the peg; obs[7:11] its orientation; '
                     'site("pegHead").pos is the end that goes in',
        goal_note='site("goal").pos is placed there; site("hole").pos is the hole\'s mouth',
        success_note="|(site(\"pegHead\").pos - goal) * (1, 2, 2)| <= 0.07"),
    _WindowOpen(
        "window-open-v3", "sawyer_xyz/sawyer_window_horizontal.xml", hand_init_pos=(0.0, 0.4, 0.2),
        hand_init_f32=True, reset_low=(-0.1, 0.7, 0.16), reset_high=(0.1, 0.9, 0.16),
        goal_low=(-0.5, 0.40, 0.05), goal_high=(0.5, 1.0, 0.5),
        description="Slide the window open by its handle (the handle within 5 cm, in x, of open).",
        objects_note='obs[4:7] = site("handleOpenStart").pos, the window\'s handle; obs[7:11] zero; '
                     'joint("window_slide").qpos is the slide (0 shut, 0.2 open)',
        success_note="|obs[4] - goal[0]| <= 0.05"),
    _WindowClose(
        "window-close-v3", "sawyer_xyz/sawyer_window_horizontal.xml", hand_init_pos=(0.0, 0.4, 0.2),
        hand_init_f32=True, reset_low=(0.0, 0.75, 0.2), reset_high=(0.0, 0.9, 0.2),
        goal_low=(-0.5, 0.40, 0.05), goal_high=(0.5, 1.0, 0.5),
        description="Slide the open window shut by its handle (the handle within 5 cm, in x, of closed).",
        objects_note='obs[4:7] = site("handleCloseStart").pos, the window\'s handle; obs[7:11] zero; '
                     'joint("window_slide").qpos is the slide (starts at 0.2 open, 0 shut)',
        success_note="|obs[4] - goal[0]| <= 0.05"),
]}


# ------------------------------------------------------------------ the env
class SawyerEnv(MujocoEnv):
    """A Meta-World v3 task: a Sawyer arm over a table, its hand following a mocap target that the
    action moves (x, y, z: 1 cm per unit a step); the action's fourth number closes (+1) or opens (-1)
    the gripper. The observation: the hand, the gripper's opening, the objects (position and x, y, z,
    w quaternion, zero-padded to 14), the same 18 numbers one step earlier, the goal. 500-step
    episodes; success never ends one.

    ## Attributes
    ``target_pos``: the episode's goal; ``obj_init_pos``: where the object started; ``init_tcp``:
    where the fingertips' midpoint started; ``rand_vec``: the reset's draw.
    """

    metadata = {"render_modes": ["human", "rgb_array", "depth_array"], "render_fps": 80}

    def __init__(self, task: str, render_mode: str | None = None, width: int = 480, height: int = 480,
                 camera_name: str | None = None, camera_id: int | None = None):
        if task not in TASKS:
            raise ValueError(f"unknown Meta-World task {task!r}: one of {', '.join(TASKS)}")
        self.task = TASKS[task]
        t = self.task
        self.hand_low, self.hand_high = np.array(t.hand_low), np.array(t.hand_high)
        self.hand_init_pos = np.array(t.hand_init_pos, dtype=np.float32 if t.hand_init_f32 else np.float64)
        self.reset_space = Box(np.array(t.reset_low), np.array(t.reset_high), dtype=np.float64)
        self.goal_space = Box(np.array(t.goal_low), np.array(t.goal_high), dtype=np.float64)
        unbounded = np.full(OBS_OBJ_LEN, np.inf)
        frame_low = np.hstack([HAND_SPACE.low, -1.0, -unbounded])
        frame_high = np.hstack([HAND_SPACE.high, 1.0, unbounded])
        observation_space = Box(np.hstack([frame_low, frame_low, self.goal_space.low]),
                                np.hstack([frame_high, frame_high, self.goal_space.high]), dtype=np.float64)
        super().__init__(str(ASSETS / t.xml), FRAME_SKIP, observation_space=observation_space,
                         render_mode=render_mode, width=width, height=height,
                         camera_name=camera_name, camera_id=camera_id)
        self.action_space = Box(-1.0, 1.0, (4,), dtype=np.float32)
        for i in range(self.model.neq):
            if self.model.eq_type[i] == mujoco.mjtEq.mjEQ_WELD:
                self.model.eq_data[i] = WELD_DATA[: self.model.eq_data.shape[1]]
        mujoco.mj_forward(self.model, self.data)
        # Views into MjData (valid for its lifetime): named lookups cost microseconds each, every step.
        body, site = self.data.body, self.data.site
        self.hand, self.rightclaw, self.leftclaw = body("hand").xpos, body("rightclaw").xpos, body("leftclaw").xpos
        self.leftpad, self.rightpad = body("leftpad").xpos, body("rightpad").xpos
        self._tips = (site("rightEndEffector").xpos, site("leftEndEffector").xpos)
        self.curr_path_length = 0
        self.target_pos = np.array(t.goal_low, dtype=np.float64)
        self.obj_init_pos = self.data.body("obj").xpos.copy() if self._has_body("obj") else np.zeros(3)
        self.init_tcp = self.tcp_center()
        self.prev_frame = self._frame()

    def card_section(self) -> str:
        """What the env card says about manipulation here: the hand, the gripper, the objects, the goal
        and the success check, in the names ``state`` takes (tcp: the fingertips' midpoint)."""
        t = self.task
        low, high = (", ".join(f"{v:g}" for v in b) for b in (t.hand_low, t.hand_high))
        return "\n".join([
            f"Meta-World {t.name}: {t.description}",
            "Hand: obs[0:3] = body(\"hand\").pos. tcp = (site(\"rightEndEffector\").pos + "
            "site(\"leftEndEffector\").pos) / 2, the fingertips' midpoint, is what the success check measures. "
            f"action[0:3] moves the hand's target by 1 cm per unit per step, kept in ({low}) .. ({high}).",
            "Gripper: obs[3] = its opening, |body(\"rightclaw\").pos - body(\"leftclaw\").pos| / 0.1 clipped "
            "to [0, 1] (1 open); action[3] > 0 closes it, < 0 opens it; pads body(\"leftpad\"), body(\"rightpad\").",
            f"Objects: {t.objects_note}; obs[11:18] zero.",
            f"Goal: obs[36:39], drawn anew each episode: read it from obs, never a constant ({t.goal_note}).",
            "obs[18:36] is obs[0:18] one step earlier. An episode starts with the hand settled at "
            f"({', '.join(f'{v:g}' for v in t.hand_init_pos)}), gripper open, and the scene placed by a random draw "
            "(the Reset line above is the model's pose before that).",
            f"Success (the env's check, any step): {t.success_note}.",
        ])

    def _has_body(self, name: str) -> bool:
        return mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, name) >= 0

    # -- reading the scene
    def tcp_center(self) -> np.ndarray:
        """Midpoint of the two fingertips (the 'tool centre point')."""
        return (self._tips[0] + self._tips[1]) / 2.0

    def _frame(self) -> np.ndarray:
        hand = self.hand
        gap = np.linalg.norm(self.rightclaw - self.leftclaw)
        pos, quat = self.task.objects(self)  # one object in every MT10 task: position then quaternion
        frame = np.zeros(4 + OBS_OBJ_LEN)
        frame[:3], frame[3], frame[4:7], frame[7:11] = hand, min(max(gap / 0.1, 0.0), 1.0), pos, quat
        return frame

    def _get_obs(self) -> np.ndarray:
        frame = self._frame()
        obs = np.hstack([frame, self.prev_frame, self.target_pos])
        self.prev_frame = frame
        return obs

    def gripper_caging_reward(self, action, obj_pos, obj_radius: float, pad_success_thresh: float,
                              object_reach_radius: float, xz_thresh: float, desired_gripper_effort: float = 1.0,
                              high_density: bool = False, medium_density: bool = False) -> float:
        """Meta-World's shared grasp shaping: the pads either side of the object in y, the fingertips
        over it in x-z, the gripper closing once both hold; ``high_density`` averages in the caging
        alone, ``medium_density`` a reach term."""
        pad_y = np.array([self.leftpad[1], self.rightpad[1]])
        pad_to_obj = np.abs(pad_y - obj_pos[1])
        margin = np.abs(np.abs(pad_y - self.obj_init_pos[1]) - pad_success_thresh)
        caging_y = hamacher(*(tolerance(pad_to_obj[i], (obj_radius, pad_success_thresh), margin[i]) for i in range(2)))
        tcp, xz = self.tcp_center(), [0, 2]
        xz_margin = _norm(self.obj_init_pos[xz] - self.init_tcp[xz]) - xz_thresh
        caging_xz = tolerance(_norm(tcp[xz] - obj_pos[xz]), (0, xz_thresh), xz_margin)
        gripper_closed = min(max(0, action[-1]), desired_gripper_effort) / desired_gripper_effort
        caging = hamacher(caging_y, caging_xz)
        gripping = gripper_closed if caging > 0.97 else 0.0
        result = hamacher(caging, gripping)
        if high_density:
            result = (result + caging) / 2
        if medium_density:
            reach_margin = abs(_norm(self.obj_init_pos - self.init_tcp) - object_reach_radius)
            reach = tolerance(_norm(obj_pos - tcp), (0, object_reach_radius), reach_margin)
            result = (result + reach) / 2
        return result

    # -- acting
    def set_object_xyz(self, pos: np.ndarray) -> None:
        """Put the free object at ``pos`` (qpos 9:12), at rest."""
        qpos, qvel = self.data.qpos.copy(), self.data.qvel.copy()
        qpos[9:12] = pos
        qvel[9:15] = 0
        self.set_state(qpos, qvel)

    def _move_mocap(self, action: np.ndarray) -> None:
        delta = np.clip(action, -1, 1) * ACTION_SCALE
        self.data.mocap_pos[0] = np.clip(self.data.mocap_pos[0] + delta, self.hand_low, self.hand_high)
        self.data.mocap_quat[0] = MOCAP_QUAT

    def step(self, action):
        action = np.asarray(action)
        if action.shape != (4,):
            raise ValueError(f"a Meta-World action has 4 numbers, got shape {action.shape}")
        if self.curr_path_length >= MAX_PATH_LENGTH:
            raise ValueError("the episode is over (500 steps): reset the env")
        self._move_mocap(action[:3])
        self.do_simulation(np.array([action[-1], -action[-1]], dtype=np.float64), self.frame_skip)
        self.curr_path_length += 1
        obs, reward, info = self.outcome(action)
        truncated = self.curr_path_length == MAX_PATH_LENGTH
        if self.render_mode == "human":
            self.render()
        return obs, reward, False, truncated, info

    def outcome(self, action: np.ndarray) -> tuple[np.ndarray, float, dict[str, float]]:
        """The observation, reward and info of the state the simulation is in, reached by ``action``
        (the second half of a step; ``prev_frame`` holds the observation's previous frame)."""
        # A full forward pass, as metaworld's: kinematics alone would do for what is read here, but the
        # pass's constraint solve warm-starts the next step, whose motion then differs (by ~1e-3 m within 150 steps).
        mujoco.mj_forward(self.model, self.data)
        obs = np.clip(self._get_obs(), self.observation_space.low, self.observation_space.high)
        reward, info = self.task.evaluate(self, obs, action)
        return obs, float(reward), info

    # -- resetting
    def draw_rand_vec(self) -> np.ndarray:
        """The random vector a reset places the scene by (object, then goal), from the env's RNG."""
        while True:
            v = self.np_random.uniform(self.reset_space.low, self.reset_space.high, size=self.reset_space.shape)
            if not self.task.apart or np.linalg.norm(v[:2] - v[3:5]) >= self.task.apart:
                return v

    def _reset_hand(self, steps: int = 50) -> None:
        for _ in range(steps):
            self.data.mocap_pos[0] = self.hand_init_pos
            self.data.mocap_quat[0] = MOCAP_QUAT
            self.do_simulation(np.array([-1.0, 1.0]), self.frame_skip)
        self.init_tcp = self.tcp_center()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        gym.Env.reset(self, seed=seed)
        rand_vec = (options or {}).get("rand_vec")
        self.rand_vec = self.draw_rand_vec() if rand_vec is None else np.asarray(rand_vec, dtype=np.float64)
        mujoco.mj_resetData(self.model, self.data)
        self.curr_path_length = 0
        self.task.place(self, self.rand_vec)
        self._reset_hand()
        self.task.reset(self, self.rand_vec)
        frame = self._frame()
        self.prev_frame = frame
        obs = np.hstack([frame, frame, self.target_pos])
        if self.render_mode == "human":
            self.render()
        return obs, {}


def env_id(task: str) -> str:
    """The gymnasium id of a task, importable from anywhere (``module:Namespace/task``)."""
    return f"{MODULE}:{ENV_NAMESPACE}/{task}"


def _register() -> None:
    for name in TASKS:
        gid = f"{ENV_NAMESPACE}/{name}"
        if gid not in gym.registry:
            gym.register(gid, entry_point=f"{MODULE}:SawyerEnv", kwargs={"task": name},
                         max_episode_steps=MAX_PATH_LENGTH)


_register()
