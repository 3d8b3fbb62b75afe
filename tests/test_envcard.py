"""EnvCard: introspection of MuJoCo and classic envs, observation layout, rendering."""

import ast
from importlib.resources import files

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from gymnasium.envs.mujoco import MujocoEnv

from reward_designer.envcard import EnvCard, ObsField


@pytest.fixture(scope="module")
def cheetah() -> EnvCard:
    return EnvCard.from_env("HalfCheetah-v5")


@pytest.fixture(scope="module")
def ant() -> EnvCard:
    return EnvCard.from_env("Ant-v5")


def _rebuild_obs(fields: list[ObsField], model, data) -> np.ndarray:
    """The observation as the layout says it is made; "other" entries as NaN."""
    out = []
    for f in fields:
        if f.index is None:
            out.append(np.full(f.end - f.start, np.nan))
            continue
        terms = [t.strip() for t in f.source.split(" - ")]
        vals = []
        for t in terms:
            if t in ("qpos", "qvel"):
                vals.append(getattr(data, t))
            else:  # body("name").pos
                assert t.startswith('body("') and t.endswith('").pos'), t
                vals.append(data.body(t[len('body("') : -len('").pos')]).xpos)
        v = vals[0] - vals[1] if len(vals) == 2 else vals[0]
        v = {"": v, "cos": np.cos(v), "sin": np.sin(v)}[f.fn]
        out.append(np.asarray(v)[f.index[0] : f.index[1]])
    return np.concatenate(out)


def _check_layout_against_env(card: EnvCard, env_id: str, env_kwargs: dict | None = None, seed: int = 7):
    """On a random state unrelated to the card's, the layout rebuilds what the env observes."""
    env = gym.make(env_id, **(env_kwargs or {}))
    u = env.unwrapped
    rng = np.random.default_rng(seed)
    qpos = u.init_qpos + rng.uniform(-0.3, 0.3, u.model.nq)
    u.set_state(qpos, u.init_qvel + rng.uniform(-0.3, 0.3, u.model.nv))
    obs = u._get_obs()
    rebuilt = _rebuild_obs(card.obs_layout, u.model, u.data)
    env.close()
    assert rebuilt.shape == obs.shape
    known = ~np.isnan(rebuilt)
    np.testing.assert_allclose(rebuilt[known], obs[known], rtol=1e-6, atol=1e-9)
    return known


def test_halfcheetah_names_and_slices_match_the_model(cheetah):
    env = gym.make("HalfCheetah-v5")
    m = env.unwrapped.model
    lay = cheetah.layout
    assert cheetah.is_mujoco and "torso" in lay.bodies
    j = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, "bthigh")
    bthigh = lay.joints["bthigh"]
    assert bthigh.type == "hinge"
    assert bthigh.qpos == (int(m.jnt_qposadr[j]), int(m.jnt_qposadr[j]) + 1)
    assert bthigh.qvel == (int(m.jnt_dofadr[j]), int(m.jnt_dofadr[j]) + 1)
    assert bthigh.range == pytest.approx(tuple(m.jnt_range[j]))
    assert len(lay.actuators) == m.nu == 6
    for a, (name, act) in enumerate(lay.actuators.items()):
        assert act.ctrl_range == pytest.approx(tuple(m.actuator_ctrlrange[a]))
        assert act.target == name  # HalfCheetah's motors are named after their joints
    env.close()


def test_halfcheetah_timing_and_spaces(cheetah):
    assert cheetah.timestep == pytest.approx(0.01)
    assert cheetah.frame_skip == 5
    assert cheetah.dt == pytest.approx(cheetah.timestep * cheetah.frame_skip)
    assert cheetah.max_episode_steps == 1000
    assert cheetah.observation_shape == [17] and cheetah.action_shape == [6]
    assert cheetah.action_low == [-1.0] * 6 and cheetah.action_high == [1.0] * 6
    assert "never terminates" in cheetah.termination
    assert "cheetah" in cheetah.summary.lower()


def test_halfcheetah_obs_layout_is_qpos_without_x_then_qvel(cheetah):
    got = [(f.start, f.end, f.source, f.fn, f.index) for f in cheetah.obs_layout]
    assert got == [(0, 8, "qpos", "", (1, 9)), (8, 17, "qvel", "", (0, 9))]
    known = _check_layout_against_env(cheetah, "HalfCheetah-v5")
    assert known.all()


def test_ant_obs_layout_names_the_contact_forces(ant):
    got = [(f.start, f.end, f.source, f.index) for f in ant.obs_layout]
    assert got == [
        (0, 13, "qpos", (2, 15)),
        (13, 27, "qvel", (0, 14)),
        (27, 105, "other", None),
    ]
    assert ant.obs_layout[2].note.startswith("cfrc_ext")
    assert ant.layout.joints["root"].type == "free"
    _check_layout_against_env(ant, "Ant-v5")


def test_ant_obs_layout_follows_env_kwargs():
    kwargs = {"include_cfrc_ext_in_observation": False, "exclude_current_positions_from_observation": False}
    card = EnvCard.from_env("Ant-v5", kwargs)
    got = [(f.start, f.end, f.source, f.index) for f in card.obs_layout]
    assert got == [(0, 15, "qpos", (0, 15)), (15, 29, "qvel", (0, 14))]
    assert card.observation_shape == [29]


def test_derived_observations_cos_sin_and_body_differences():
    card = EnvCard.from_env("Reacher-v5")
    exprs = [f.expr() for f in card.obs_layout]
    assert exprs == [
        "cos(qpos[0:2])",
        "sin(qpos[0:2])",
        "qpos[2:4]",
        "qvel[0:2]",
        '(body("fingertip").pos - body("target").pos)[0:2]',
    ]
    assert _check_layout_against_env(card, "Reacher-v5").all()
    assert card.max_episode_steps == 50


def test_constant_entries_continue_a_run():
    # Pusher observes the object's and goal's full xyz; their z never changes.
    card = EnvCard.from_env("Pusher-v5")
    exprs = [f.expr() for f in card.obs_layout]
    assert exprs[2:] == ['body("tips_arm").pos', 'body("object").pos', 'body("goal").pos']
    assert _check_layout_against_env(card, "Pusher-v5").all()


def test_env_kwargs_reach_the_time_limit():
    assert EnvCard.from_env("Reacher-v5", {"max_episode_steps": 17}).max_episode_steps == 17


def test_non_mujoco_env_falls_back_to_spaces_and_docstring():
    card = EnvCard.from_env("Pendulum-v1")
    assert not card.is_mujoco and card.layout is None and card.obs_layout == []
    assert card.observation_shape == [3] and card.action_shape == [1]
    assert card.action_low == [-2.0] and card.action_high == [2.0]
    assert card.dt == pytest.approx(0.05) and card.frame_skip is None
    assert card.max_episode_steps == 200
    assert "pendulum" in card.summary.lower()
    assert "cos(theta)" in card.observation_notes
    text = card.render()
    ast.parse(text)
    assert "cos(theta)" in text and "def body" not in text and "qpos" not in text


def test_discrete_action_space():
    card = EnvCard.from_env("CartPole-v1")
    assert card.action_space == "Discrete(2)" and card.action_low == [0.0] and card.action_high == [1.0]
    assert "Pole Angle" in card.termination
    ast.parse(card.render())


def test_unknown_env_id_raises_value_error():
    with pytest.raises(ValueError, match="unknown env id") as e:
        EnvCard.from_env("NoSuchEnv-v0")
    assert "\n" not in str(e.value)
    with pytest.raises(ValueError, match="unknown env id"):
        EnvCard.from_env("HalfCheetah-v99")


def test_rendered_stub_is_python_and_names_the_state(cheetah):
    text = cheetah.render()
    ast.parse(text)
    for needle in (
        'state.body("torso")',
        'state.joint("bthigh")',
        "bthigh hinge qpos[3] qvel[3] about +y range [-0.52, 1.05] <- action[:, 0] gear 120",
        "obs[0:8] = qpos[1:9]",
        "obs[8:17] = qvel[0:9]",
        "qpos: Tensor  # [n, 9]",
        "dt: float = 0.05",
        "state.prev",
        "at most 1000 steps",
        "frame_skip 5",
        "def compute_reward(state: State, action: Tensor)",
        "[n, 6] Box(-1, 1, (6,))",
    ):
        assert needle in text, needle
    # The env's own reward is what the designer is compared against: not shown.
    assert "ctrl_cost" not in text and "forward_reward" not in text


def test_card_size_limits(cheetah):
    # Every character is in every designer request: 2300 before joint axes, gears and the reset pose.
    assert len(cheetah.render()) < 2650
    humanoid = EnvCard.from_env("Humanoid-v5")
    text = humanoid.render()
    ast.parse(text)
    # 348 observation entries, grouped into a handful of lines.
    assert len(humanoid.obs_layout) <= 8
    assert len(text) < 4900
    assert 'state.body("torso")' in text and "left_elbow" in text and "cfrc_ext" in text


@pytest.mark.parametrize(
    "env_id", ["Hopper-v5", "Walker2d-v5", "Swimmer-v5", "InvertedPendulum-v5", "InvertedDoublePendulum-v5"]
)
def test_every_mujoco_card_renders_and_its_layout_holds(env_id):
    card = EnvCard.from_env(env_id)
    text = card.render()
    ast.parse(text)
    assert "$" not in text and "\\" not in text  # docstring LaTeX is made plain
    assert _check_layout_against_env(card, env_id).any()


def test_card_crosses_process_boundaries_as_json(cheetah):
    assert EnvCard.model_validate_json(cheetah.model_dump_json()) == cheetah


def test_template_ships_with_the_package():
    assert files("reward_designer.prompts").joinpath("envcard.py.j2").is_file()


ARM_XML = """
<mujoco>
  <compiler angle="radian"/>
  <option timestep="0.005"/>
  <worldbody>
    <body name="arm" pos="0 0 0.1">
      <joint name="shoulder" type="hinge" axis="0 0 1" range="-2 2" limited="true"/>
      <geom type="capsule" fromto="0 0 0 0.3 0 0" size="0.02"/>
      <body name="hand" pos="0.3 0 0">
        <joint name="elbow" type="hinge" axis="0 0 1"/>
        <geom type="capsule" fromto="0 0 0 0.2 0 0" size="0.02"/>
        <site name="tip" pos="0.2 0 0"/>
      </body>
    </body>
  </worldbody>
  <tendon>
    <fixed name="couple"><joint joint="shoulder" coef="1"/><joint joint="elbow" coef="1"/></fixed>
  </tendon>
  <actuator>
    <motor name="m_shoulder" joint="shoulder" ctrlrange="-1 1" ctrllimited="true"/>
    <motor name="m_couple" tendon="couple" ctrlrange="-0.5 0.5" ctrllimited="true"/>
  </actuator>
  <sensor>
    <framequat name="tip_quat" objtype="site" objname="tip"/>
  </sensor>
</mujoco>
"""


class _ArmEnv(MujocoEnv):
    """A two-link arm made up for the EnvCard tests.

    Reach with the tip.
    """

    metadata = {"render_modes": ["human", "rgb_array", "depth_array", "rgbd_tuple"], "render_fps": 50}

    def __init__(self, xml_file: str, **kwargs):
        space = gym.spaces.Box(-np.inf, np.inf, (10,), np.float64)
        super().__init__(xml_file, frame_skip=4, observation_space=space, **kwargs)

    def _get_obs(self):
        d = self.data
        return np.concatenate([d.site_xpos[0], d.sensordata[:4], d.qpos[::-1], [d.qvel.sum()]])

    def step(self, action):
        self.do_simulation(action, self.frame_skip)
        return self._get_obs(), 0.0, False, False, {}

    def reset_model(self):
        return self._get_obs()


@pytest.fixture(scope="module")
def arm_id(tmp_path_factory) -> str:
    xml = tmp_path_factory.mktemp("arm") / "arm.xml"
    xml.write_text(ARM_XML)
    env_id = "EnvCardTestArm-v0"
    gym.register(env_id, entry_point=_ArmEnv, kwargs={"xml_file": str(xml)}, max_episode_steps=123)
    yield env_id
    gym.registry.pop(env_id)


def test_users_own_mujoco_env_with_sites_sensors_and_a_tendon_actuator(arm_id):
    card = EnvCard.from_env(arm_id)
    assert card.summary == "A two-link arm made up for the EnvCard tests. Reach with the tip."
    assert card.dt == pytest.approx(0.02) and card.max_episode_steps == 123
    assert [f.expr() for f in card.obs_layout] == [
        'site("tip").pos',
        'sensor("tip_quat")[0:4]',
        "qpos[1]",
        "qpos[0]",
        "other",
    ]
    text = card.render()
    ast.parse(text)
    assert 'def site(self, name: Literal["tip"])' in text
    assert "tip_quat [4]" in text
    assert "shoulder hinge qpos[0] qvel[0] about +z range [-2, 2] <- action[:, 0] gear 1 ctrl [-1, 1]" in text
    assert "m_couple <- action[:, 1] gear 1 ctrl [-0.5, 0.5]" in text
    assert card.terminations is None  # not an env whose checks are known: nothing is claimed


@pytest.mark.parametrize("env_id, field, bound", [("Hopper-v5", 1, 10.0), ("Walker2d-v5", 1, 10.0)])
def test_a_clipped_copy_is_labelled_with_its_bounds(env_id, field, bound):
    card = EnvCard.from_env(env_id)
    qvel = card.obs_layout[field]
    assert qvel.source == "qvel" and qvel.clip == bound
    assert f"clip(qvel[0:{qvel.index[1]}], -10, 10)" in card.render()
    assert all(f.clip is None for f in card.obs_layout if f.source == "qpos")  # positions are not clipped
    assert EnvCard.from_env("HalfCheetah-v5").obs_layout[1].clip is None


def test_ant_contact_forces_say_their_clip(ant):
    assert ant.obs_layout[2].note.endswith("each clipped to [-1, 1]")


def test_an_env_with_a_mujoco_model_that_is_no_mujoco_env_gets_an_obs_only_card():
    """make_vecsim steps only MujocoEnv subclasses as MuJoCo: a card must not promise bodies to others."""
    from reward_designer.sim import make_vecsim

    class Ball(gym.Env):
        def __init__(self):
            self.model = mujoco.MjModel.from_xml_string(
                "<mujoco><worldbody><body name='ball'><freejoint/><geom size='.1'/></body></worldbody></mujoco>")
            self.data = mujoco.MjData(self.model)
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (3,))
            self.action_space = gym.spaces.Box(-1, 1, (1,))

        def reset(self, seed=None, options=None):
            super().reset(seed=seed)
            return np.zeros(3, dtype=np.float32), {}

        def step(self, action):
            return np.zeros(3, dtype=np.float32), 0.0, False, False, {}

    gym.register("TestBallNoMujocoEnv-v0", entry_point=Ball, max_episode_steps=10)
    try:
        card = EnvCard.from_env("TestBallNoMujocoEnv-v0")
        assert not card.is_mujoco and "def body(" not in card.render()
        sim = make_vecsim("TestBallNoMujocoEnv-v0", 2, seed=0)
        sim.reset(0)
        assert set(sim.physics()) == {"obs"}
        sim.close()
    finally:
        gym.registry.pop("TestBallNoMujocoEnv-v0")


# ----------------------------------------------------------------- axes, gears, reset, terminations


def test_halfcheetah_gears_rooty_sign_and_reset_pose(cheetah):
    text = cheetah.render()
    env = gym.make("HalfCheetah-v5")
    m = env.unwrapped.model
    for a, name in enumerate(cheetah.layout.actuators):
        assert f"<- action[:, {a}] gear {m.actuator_gear[a, 0]:.4g}" in text, name
    assert "gear 120" in text and "gear 30" in text  # bthigh's and ffoot's differ: read, not assumed
    assert "rooty  hinge qpos[2] qvel[2] about +y" in text
    assert "about +y, positive tips +x down" in text  # the right-hand rule: nose down
    # The sign said is the simulator's: a positive rooty lowers the front (+x) of the torso.
    d = env.unwrapped.data
    d.qpos[:] = 0
    d.qpos[2] = 0.3
    mujoco.mj_forward(m, d)
    front = d.xmat[m.body("torso").id].reshape(3, 3) @ np.array([1.0, 0, 0])
    assert front[2] < 0
    env.close()
    # Reset: rootz is 0 at reset while the torso stands at 0.7 m.
    assert "Reset: qpos all 0 (+ noise, scale 0.1); torso at z = 0.7 m." in text
    assert "rootz  slide qpos[1] qvel[1] along +z" in text
    assert "Never terminated" in text and cheetah.terminations == []


def test_swimmer_slider_axis_and_its_fluid():
    card = EnvCard.from_env("Swimmer-v5")
    text = card.render()
    assert "slider1       slide qpos[0] qvel[0] along +x" in text
    assert "slider2       slide qpos[1] qvel[1] along +y" in text
    assert "about +z, positive turns +x toward +y" in text
    assert "Medium: a fluid of density 4000 and viscosity 0.1" in text
    # The filler sentence is gone, the physics stays.
    assert "independent state and control variables" not in text and "fluid friction" in text


def test_hopper_reset_is_absolute():
    text = EnvCard.from_env("Hopper-v5").render()
    assert "Reset: qpos 0 except rootz = 1.25 (+ noise, scale 0.005); torso at z = 1.25 m." in text
    assert "thigh_joint hinge qpos[3] qvel[3] about -y" in text and "about -y, positive tips +x up" in text


def _fires(card: EnvCard, qpos, qvel) -> bool:
    values = {"qpos": qpos, "qvel": qvel}
    return any(any(b.ended(values[b.source][b.index[0]:b.index[1]])) for b in card.terminations)


@pytest.mark.parametrize("env_id, text", [
    ("Hopper-v5", "Terminated when qpos[1] <= 0.7 or |qpos[2]| >= 0.2 or an entry of qpos[2:6] outside (-100, 100)"
                  " or an entry of qvel[0:6] outside (-100, 100)."),
    ("Walker2d-v5", "Terminated when qpos[1] outside (0.8, 2) or |qpos[2]| >= 1."),
    ("Ant-v5", "Terminated when qpos[2] outside [0.2, 1]."),
])
def test_termination_in_qpos_terms_agrees_with_the_env(env_id, text):
    card = EnvCard.from_env(env_id)
    rendered = card.render()
    assert text in rendered
    assert "observation[" not in rendered  # the docstring's index talk is gone
    env = gym.make(env_id)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    seen = set()
    for _ in range(400):
        qpos = u.init_qpos + rng.normal(0, 0.6, u.model.nq)
        qvel = rng.normal(0, 40, u.model.nv)
        u.set_state(qpos, qvel)
        fires = _fires(card, u.data.qpos, u.data.qvel)
        assert fires == (not u.is_healthy), (qpos, qvel)
        seen.add(fires)
    assert seen == {True, False}  # both sides were tried
    env.close()


def test_termination_follows_the_env_kwargs():
    card = EnvCard.from_env("Hopper-v5", {"healthy_z_range": (0.5, 3.0), "healthy_angle_range": (-0.4, 0.4)})
    assert "qpos[1] outside (0.5, 3) or |qpos[2]| >= 0.4" in card.render()
    assert EnvCard.from_env("Hopper-v5", {"terminate_when_unhealthy": False}).terminations == []


def test_termination_causes_are_one_per_side():
    card = EnvCard.from_env("Walker2d-v5")
    causes = [c for b in card.terminations for c in b.causes()]
    assert causes == ["qpos[1] <= 0.8", "qpos[1] >= 2", "qpos[2] <= -1", "qpos[2] >= 1"]
    assert card.terminations[1].ended([1.2]) == [False, True]


def test_pendulum_card_says_which_angle_is_upright():
    summary = EnvCard.from_env("Pendulum-v1").summary
    assert "0 being in the upright position" in summary
    assert "based on the classic problem" not in summary and "diagram below" not in summary
    assert "r = " not in summary  # the reward formula stays out


@pytest.mark.parametrize("env_id, text", [("InvertedPendulum-v5", "Terminated when |qpos[1]| > 0.2."),
                                          ("InvertedDoublePendulum-v5", 'Terminated when site("tip").pos[2] <= 1.')])
def test_pendulum_terminations_agree_with_the_env_step(env_id, text):
    card = EnvCard.from_env(env_id)
    assert text in card.render()
    env = gym.make(env_id)
    u = env.unwrapped
    rng = np.random.default_rng(0)
    seen = set()
    for k in range(200):
        env.reset(seed=k)
        u.set_state(u.init_qpos + rng.normal(0, 0.5, u.model.nq), rng.normal(0, 1, u.model.nv))
        terminated = env.step(np.zeros(u.action_space.shape))[2]
        values = {"qpos": u.data.qpos, "qvel": u.data.qvel}
        if u.model.nsite:  # InvertedDoublePendulum's one site, the tip
            values['site("tip").pos'] = u.data.site_xpos[0]
        fires = any(any(b.ended(values[b.source][b.index[0]:b.index[1]])) for b in card.terminations)
        assert fires == terminated
        seen.add(fires)
    assert seen == {True, False}
    env.close()
