"""Contact forces for reward programs: State's views, computed only when a program reads them,
in the slab stepper, the critic's probe, a training and the analyzer's reward evaluation."""

import json

import gymnasium as gym
import mujoco
import numpy as np
import pytest
import torch

from reward_designer import load_task, templates
from reward_designer.analyzer import Analyzer
from reward_designer.critic import Critic
from reward_designer.envcard import EnvCard
from reward_designer.lint import reads_contacts
from reward_designer.sim import make_vecsim
from reward_designer.state import IN_CONTACT_N, State, layout_from_model, snapshot
from reward_designer.trainer import Trainer

ENV = "Hopper-v5"
# Stand on the foot, never on the torso, and go forward.
CONTACT_PROGRAM = """
import torch
def compute_reward(state, action):
    forward = state.body("torso").linvel[:, 0]
    foot = 0.5 * state.body("foot").in_contact.float()
    torso = -1.0 * state.body("torso").in_contact.float()
    push = 1e-3 * state.body("foot").contact_force[:, 2]
    return forward + foot + torso + push, {"forward": forward, "foot_contact": foot, "torso_contact": torso,
                                           "foot_push": push}
"""
PLAIN_PROGRAM = """
def compute_reward(state, action):
    forward = state.body("torso").linvel[:, 0]
    return forward, {"forward": forward, "contact": 0.0 * forward}
"""


def landed_hopper(steps: int = 30):
    """A Hopper after ``steps`` zero-action steps from reset: the foot on the ground, the torso above it.
    gymnasium's step runs mj_rnePostConstraint, so its MjData holds the contact forces."""
    env = gym.make(ENV).unwrapped
    env.reset(seed=0)
    for _ in range(steps):
        env.step(np.zeros(3))
    return env


def test_state_reads_per_body_contact_from_a_mujoco_snapshot():
    env = landed_hopper()
    layout = layout_from_model(env.model)
    state = State(snapshot([env.data], env._get_obs()[None], contacts=True), layout, env.dt)
    foot, torso = env.model.body("foot").id, env.model.body("torso").id
    force = state.body("foot").contact_force
    assert force.shape == (1, 3) and state.body("foot").in_contact.dtype == torch.bool
    np.testing.assert_allclose(force[0].numpy(), env.data.cfrc_ext[foot, 3:], rtol=1e-5)
    assert force[0, 2] > 50.0  # the ground carries most of its weight (~150 N) through the foot
    assert state.body("foot").in_contact.tolist() == [True]
    assert not env.data.cfrc_ext[torso].any() and state.body("torso").in_contact.tolist() == [False]
    assert IN_CONTACT_N < 1.0

    # A snapshot taken without contact forces says why, not a wrong zero.
    bare = State(snapshot([env.data], env._get_obs()[None]), layout, env.dt)
    with pytest.raises(AttributeError, match="no contact forces.*reads .contact_force or .in_contact"):
        bare.body("foot").in_contact


def test_lint_flags_only_programs_that_read_contacts():
    assert reads_contacts(CONTACT_PROGRAM)
    assert reads_contacts("def compute_reward(state, action):\n    f = state.body('foot').contact_force\n"
                          "    return f[:, 2], {'f': f[:, 2]}\n")
    assert not reads_contacts(PLAIN_PROGRAM)
    assert not reads_contacts("contact_force = 1\n# .in_contact\nx = 'state.body(\"a\").in_contact'\n")
    assert not reads_contacts(None, "def compute_reward(state, action):\n    return (\n")  # broken: lint's finding
    assert reads_contacts(PLAIN_PROGRAM, "def compute_fitness(state, action):\n"
                                         "    return state.body('torso').in_contact.float()\n")  # the fitness reads them


def test_the_contract_and_the_env_card_name_the_contact_views():
    # One short line each: every character is in every design request.
    assert "`.contact_force` [n,3] (net contact force, N, world), `.in_contact` [n] bool" in templates.render("system.j2")
    assert '.contact_force [n,3], .in_contact [n] bool."""' in EnvCard.from_env(ENV).render()


def test_slab_snapshots_hold_contact_forces_only_when_asked_and_as_mujoco_computes_them():
    n, seed, steps = 4, 7, 40
    plain = make_vecsim(ENV, n, seed=seed, slabs=2)
    plain.reset()
    assert "cfrc_ext" not in plain.physics() and "cfrc_ext" not in plain.step(np.zeros((n, 3))).physics
    plain.close()

    sim = make_vecsim(ENV, n, seed=seed, slabs=2, contacts=True)  # the second slab in a forked twin
    sim.reset()
    assert not sim.physics()["cfrc_ext"].any()  # as a reset leaves MjData: none computed yet
    refs = [gym.make(ENV).unwrapped for _ in range(n)]
    for i, ref in enumerate(refs):
        ref.reset(seed=seed + i)  # env i of the sim is seeded seed + i
    rng = np.random.default_rng(0)
    touched = 0
    for _ in range(steps):
        actions = rng.uniform(-0.3, 0.3, (n, 3))
        out = sim.step(actions)
        for i, ref in enumerate(refs):  # a plain MjData, stepped and asked for its contact forces
            ref.data.ctrl[:] = actions[i]
            mujoco.mj_step(ref.model, ref.data, ref.frame_skip)
            mujoco.mj_rnePostConstraint(ref.model, ref.data)
            np.testing.assert_allclose(out.physics["cfrc_ext"][i], ref.data.cfrc_ext, rtol=1e-9, atol=1e-9)
        touched += int(np.abs(out.physics["cfrc_ext"]).sum(axis=(1, 2)).astype(bool).sum())
        if (out.terminated | out.truncated).any():  # an autoreset: the references would need one too
            break
    sim.close()
    assert touched > n  # the comparison covered steps with the foot on the ground


def test_the_gym_backend_refuses_contacts_saying_why():
    with pytest.raises(ValueError, match="Pendulum-v1 has no contact forces.*not a MuJoCo env"):
        make_vecsim("Pendulum-v1", 2, contacts=True)


def test_a_contact_program_on_an_env_without_contacts_is_rejected_by_the_critic_with_the_reason(tmp_path):
    report = Critic("Pendulum-v1").check(CONTACT_PROGRAM, tmp_path)
    assert not report.ok and report.stage == "probe"
    assert "no contact forces" in report.findings[0] and "not a MuJoCo env" in report.findings[0]


def test_the_warp_backend_computes_contact_forces_when_asked():
    pytest.importorskip("mujoco_warp")
    sim = make_vecsim(ENV, 2, seed=0, backend="warp", device="cpu", contacts=True)
    sim.reset()
    assert not sim.physics()["cfrc_ext"].any()  # as gymnasium's reset leaves them
    for _ in range(30):
        out = sim.step(torch.zeros(2, 3))
    sim.close()
    state = State(out.physics, sim.layout, sim.dt)
    assert state.body("foot").in_contact.tolist() == [True, True]
    assert state.body("torso").in_contact.tolist() == [False, False]
    # Warp's own solver in float32: near MuJoCo C's force on the landed foot, not equal to it.
    expected = landed_hopper().data.cfrc_ext[sim.layout.bodies["foot"], 5]
    np.testing.assert_allclose(state.body("foot").contact_force[:, 2].numpy(), expected, rtol=0.1)


@pytest.fixture(scope="module")
def checked(tmp_path_factory):
    """A contact program through the real sandboxed critic, once."""
    work = tmp_path_factory.mktemp("probe")
    return work, Critic(ENV).check(CONTACT_PROGRAM, work)


@pytest.fixture(scope="module")
def trained(checked, tmp_path_factory):
    """The checked program through a short real training and the analysis, once."""
    work = tmp_path_factory.mktemp("contacts")
    fitness = load_task("hopper-hop").fitness
    assert checked[1].ok, checked[1].findings
    outcome = Trainer(ENV, steps=1024, ppo={"num_envs": 4, "num_steps": 64}).train(CONTACT_PROGRAM, work / "train",
                                                                                    fitness)
    analysis = None
    if outcome.ok:
        analysis = Analyzer(ENV, fitness, episodes=2).analyze(CONTACT_PROGRAM, work / "train" / "policy.npz",
                                                               work / "analysis", work / "train" / "progress.jsonl")
    return work, outcome, analysis


def test_a_contact_program_passes_the_critic_on_contacts_it_saw(checked):
    work, report = checked
    assert report.ok, report.findings
    assert json.loads((work / "job.json").read_text())["job"]["contacts"] is True
    assert report.probe.components["foot_contact"] > 0  # random actions land the foot within the probe
    assert report.probe.components["foot_push"] > 0


@pytest.mark.slow
def test_a_contact_program_trains_and_its_contact_terms_are_analyzed(trained):
    work, outcome, analysis = trained
    assert outcome.ok, outcome.problem or outcome.result.error
    assert json.loads((work / "train" / "job.json").read_text())["job"]["contacts"] is True
    rows = [json.loads(line) for line in (work / "train" / "progress.jsonl").read_text().splitlines()]
    assert any(r.get("component/foot_contact", 0) > 0 for r in rows)  # the training's reward saw contacts
    assert analysis is not None and analysis.ok and not analysis.error, analysis and analysis.error
    # The rollouts were recorded with their contact forces, and the reward evaluation read them.
    with np.load(work / "analysis" / "rollout" / "trajectories.npz") as record:
        assert {"now_cfrc_ext", "prev_cfrc_ext"} <= set(record.files)
    comps = {c.name: c for c in analysis.components}
    assert {"forward", "foot_contact", "torso_contact", "foot_push"} <= set(comps)
    assert comps["foot_contact"].mean > 0 and comps["foot_push"].mean > 0
