"""The shipped task cards: each loads, builds its env, and passes its fitness and its expert reward through
the critic's probe on real states; no prompt the loop renders holds a card's fitness or expert code; the
suites; and the exploits a novel card's fitness is written to refuse."""

from __future__ import annotations

import json
import math
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

from reward_designer.tasks import (EXPERT_ENV, SMOKE_SUITE, TaskError, card_file, expert_code, list_suites,
                                   list_tasks, resolve_cards, suite_cards)

CARDS = {t.name: t for t in list_tasks()}
NAMES = sorted(CARDS)
PROGRAM_EXPERTS = sorted(n for n, t in CARDS.items() if t.expert not in (None, EXPERT_ENV))
ENVS_DIR = Path(str(resources.files("reward_designer.envs")))


def _probe_all(workdir: Path) -> dict[tuple[str, str], object]:
    """Every card's fitness and expert program through the critic's probe, two sandboxed workers at a time;
    a program two cards share on the same env is probed once."""
    from reward_designer.critic import Critic
    from reward_designer.program import ENTRY, FITNESS_ENTRY

    jobs: dict[tuple[str, str], tuple] = {}
    for name in NAMES:
        card = CARDS[name]
        jobs[(name, "fitness")] = (card.env_id, json.dumps(card.env_kwargs), card.fitness.code, FITNESS_ENTRY)
        if name in PROGRAM_EXPERTS:
            jobs[(name, "expert")] = (card.env_id, json.dumps(card.env_kwargs), expert_code(name), ENTRY)
    unique = sorted(set(jobs.values()))

    def probe(i_job):
        i, (env_id, kwargs, code, entry) = i_job
        return Critic(env_id, json.loads(kwargs)).check(code, workdir / f"probe_{i:02d}", entry=entry)

    with ThreadPoolExecutor(2) as pool:
        reports = dict(zip(unique, pool.map(probe, enumerate(unique))))
    return {key: reports[job] for key, job in jobs.items()}


@pytest.fixture(scope="module")
def probes():
    with tempfile.TemporaryDirectory() as d:
        yield _probe_all(Path(d))


# ---------------------------------------------------------------------------------------------- the cards
def test_there_are_the_cards_the_benchmark_needs():
    suites = list_suites()
    assert len(suites["standard"]) >= 20
    assert len(suites["novel"]) >= 9
    native_envs = {CARDS[n].env_id for n in suites["native"]}
    for body in ("HalfCheetah", "Hopper", "Walker2d", "Ant", "Swimmer", "InvertedPendulum",
                 "InvertedDoublePendulum", "Reacher", "Pusher", "Humanoid"):
        assert f"{body}-v5" in native_envs
    assert all(CARDS[n].expert == EXPERT_ENV for n in suites["native"])
    assert all(CARDS[n].expert.endswith(".expert.py") for n in suites["novel"])  # a program, not the env's


@pytest.mark.parametrize("name", NAMES)
def test_a_card_is_complete(name):
    card = CARDS[name]
    assert card_file(name).name == f"{name}.yaml"  # the name a user types is the file's
    assert card.fitness is not None and card.fitness.description
    assert card.suites and card.expert is not None
    assert not card.anchors or all(a.train_steps in (None, card.train_steps) for a in card.anchors.values())
    if SMOKE_SUITE in card.suites:
        assert card.train_steps <= 10_000  # CI runs it
    else:
        assert card.train_steps > 10_000


def test_every_expert_program_belongs_to_a_card():
    shipped = {p.name for p in ENVS_DIR.glob("*.py") if p.name != "__init__.py"}
    named = {CARDS[n].expert for n in PROGRAM_EXPERTS}
    assert shipped == named
    # The sandbox hides files by pattern: the expert programs are hidden as *.expert.py.
    assert all(f.endswith(".expert.py") for f in shipped)


def test_workers_cannot_read_the_expert_programs():
    """An expert reward read by a designed program would be a copied answer (a human's reward)."""
    from reward_designer.sandbox import namespaces

    namespaces.hidden_files.cache_clear()
    try:
        hidden = {os.path.realpath(f) for f in namespaces.hidden_files()}
    finally:
        namespaces.hidden_files.cache_clear()
    experts = [os.path.realpath(ENVS_DIR / CARDS[n].expert) for n in PROGRAM_EXPERTS]
    assert [f for f in experts if f not in hidden] == []
    assert os.path.realpath(ENVS_DIR / "__init__.py") not in hidden  # the package still imports


@pytest.mark.parametrize("name", NAMES)
def test_the_fitness_runs_on_real_states(name, probes):
    report = probes[(name, "fitness")]
    assert report.ok, f"{name}: {report.findings}"
    assert report.probe.reward_shape == [8] and report.probe.finite


@pytest.mark.parametrize("name", PROGRAM_EXPERTS)
def test_the_expert_program_passes_the_critic(name, probes):
    report = probes[(name, "expert")]
    assert report.ok, f"{name}: {report.findings}"
    assert len(report.probe.components) >= 2 and not report.probe.constant


# ------------------------------------------------------------------------------------------- the prompts
def _secret_lines(code: str) -> list[str]:
    """The lines of a program that would give it away: not blank, comments, imports or the contract's def."""
    lines = []
    for line in (s.strip() for s in code.splitlines()):
        if len(line) < 12 or line.startswith(("#", "import ", "from ", '"""')):
            continue
        if line.startswith(("def compute_fitness(state, action)", "def compute_reward(state, action)")):
            continue
        lines.append(line)
    return lines


@pytest.mark.parametrize("name", NAMES)
def test_no_prompt_holds_the_fitness_or_the_expert(name):
    from reward_designer import templates
    from reward_designer.designer import Designer
    from reward_designer.envcard import EnvCard
    from reward_designer.program import ENTRY

    card = CARDS[name]
    envcard = EnvCard.from_env(card.env_id, card.env_kwargs)  # builds the env in this process
    stub = envcard.render()
    designer = Designer(None, card, stub)
    expert = expert_code(name)
    someone_elses = "def compute_reward(state, action):\n    r = state.obs[:, 0]\n    return r, {'r': r}\n"
    best = {"trained_steps": 1000, "code": someone_elses, "episodes": 2, "reflection": "- task score: mean 1"}
    chats = [designer.first_round_messages(),
             designer.refine_messages(best, "fall less", [{"index": 1, "summary": "task score 0.5"}]),
             templates.messages("fixer.j2", system=True, code=someone_elses, findings=["it failed"], entry=ENTRY,
                                task=card, envcard=stub)]
    texts = [m["content"] for chat in chats for m in chat]
    texts.append(templates.render("analyzer.j2", task=card, code=someone_elses, episodes=2, reflection="- x",
                                  envcard=stub, card=envcard, fitness=card.fitness, trained_steps=1000))
    secrets = _secret_lines(card.fitness.code) + (_secret_lines(expert) if expert else [])
    assert secrets  # else the check below checks nothing
    assert card.description in texts[1]
    leaks = [s for s in secrets for t in texts if s in t]
    assert leaks == []
    # The check finds a fitness that does get into a prompt.
    leaky = templates.render("designer.j2", task=card.model_copy(update={"description": card.fitness.code}),
                             envcard=stub)
    assert [s for s in secrets if s in leaky]


# -------------------------------------------------------------------------------------------- the suites
def test_the_suites():
    suites = list_suites()
    assert {"smoke", "native", "novel", "locomotion", "standard"} <= set(suites)
    assert set(suites["standard"]) == {n for n in NAMES if SMOKE_SUITE not in CARDS[n].suites}
    assert 2 <= len(suites["smoke"]) <= 3 and not set(suites["smoke"]) & set(suites["standard"])
    assert suite_cards("novel") == suites["novel"] and "hopper-hop-in-place" in suites["novel"]
    with pytest.raises(TaskError, match="did you mean novel"):
        suite_cards("novle")


def test_a_users_own_list_resolves(tmp_path):
    mine = tmp_path / "mine.yaml"
    mine.write_text((ENVS_DIR / "hopper-hop.yaml").read_text().replace("name: hopper-hop", "name: my-hop"))
    assert resolve_cards(f"ant-spin, {mine}") == ["ant-spin", str(mine)]
    assert resolve_cards(["ant-spin"]) == ["ant-spin"]
    with pytest.raises(TaskError, match="no task card named 'hoper-hop'"):
        resolve_cards("hoper-hop")
    with pytest.raises(TaskError, match="both cards named 'hopper-hop'"):
        resolve_cards(["hopper-hop", str(ENVS_DIR / "hopper-hop.yaml")])
    with pytest.raises(TaskError, match="no task cards"):
        resolve_cards(" , ")


def test_the_expert_of_a_card_is_read_beside_it(tmp_path):
    assert expert_code("hopper-hop") is None  # the env's own reward
    assert "def compute_reward" in expert_code("ant-spin")
    card = (ENVS_DIR / "ant-spin.yaml").read_text()
    (tmp_path / "spin.yaml").write_text(card.replace("ant-spin.expert.py", "mine.py"))
    with pytest.raises(TaskError, match="mine.py is not beside the card"):
        expert_code(str(tmp_path / "spin.yaml"))
    (tmp_path / "mine.py").write_text("def compute_reward(state, action): ...\n")
    assert expert_code(str(tmp_path / "spin.yaml")).startswith("def compute_reward")
    (tmp_path / "none.yaml").write_text("name: x\nenv_id: Hopper-v5\ndescription: hop\n")
    with pytest.raises(TaskError, match="names no expert"):
        expert_code(str(tmp_path / "none.yaml"))


@pytest.mark.parametrize("fields, error", [
    ({"suites": ["standard"]}, "is implied"),
    ({"suites": ["Novel"]}, "lowercase"),
    ({"expert": "../other.py"}, "beside the card"),
    ({"expert": "reward.txt"}, "beside the card"),
    ({"anchors": {"expert": {"mean": 1.0, "std": 0.1, "seeds": [0, 1, 2], "train_steps": 5000,
                             "command": "reward-designer bench", "date": "2026-12-07"}}}, "measure it again"),
    ({"anchors": {"designed": {"mean": 1.0, "std": 0.1, "seeds": [0], "command": "c", "date": "2026-12-07"}}},
     "anchors"),
])
def test_a_card_with_bad_new_fields_is_refused(fields, error):
    from reward_designer.tasks import parse_card
    import yaml

    data = {"name": "x", "env_id": "Hopper-v5", "description": "hop", "train_steps": 1000, **fields}
    with pytest.raises(TaskError, match=error):
        parse_card(yaml.safe_dump(data), "x.yaml")


def test_an_anchor_at_the_cards_budget_is_kept():
    from reward_designer.tasks import parse_card

    text = (ENVS_DIR / "hopper-hop.yaml").read_text().replace(
        "anchors: {}", "anchors:\n  random: {mean: -0.03, std: 0.04, seeds: [0, 1, 2], command: bench, date: 2026-12-07}\n"
        "  expert: {mean: 3.1, std: 0.2, seeds: [0, 1, 2], train_steps: 1000000, command: bench, date: 2026-12-07}")
    card = parse_card(text, "hopper-hop.yaml")
    assert card.anchors["expert"].mean == 3.1 and card.anchors["random"].train_steps is None
    assert str(card.anchors["random"].date) == "2026-12-07"


# ------------------------------------------------------------------------------------------- the exploits
def _fitness(name: str):
    from reward_designer.program import FITNESS_ENTRY, load_function

    return load_function(CARDS[name].fitness.code, FITNESS_ENTRY, "fitness")  # card code: trusted


def _episodes(name: str, frames: list[dict], layout, dt: float) -> np.ndarray:
    """Each env's episode value for a hand-made sequence of physics snapshots, folded as training folds it."""
    import torch

    from reward_designer.state import state_pair
    from reward_designer.worker import EpisodeMeter, fitness_values

    fn, n = _fitness(name), frames[0]["obs"].shape[0]
    meter = EpisodeMeter(n, CARDS[name].fitness.aggregate)
    for prev, now in zip(frames, frames[1:]):
        meter.step(fitness_values(fn, state_pair(prev, now, layout, dt), torch.zeros(n, 1), n), np.zeros(n, bool))
    return meter.current()


def _template(env_id: str, n: int):
    """A real physics snapshot of ``env_id`` at reset, repeated over n envs, its layout and dt."""
    import gymnasium as gym

    from reward_designer.state import layout_from_model, snapshot

    env = gym.make(env_id)
    obs, _ = env.reset(seed=0)
    u = env.unwrapped
    snap = snapshot([u.data] * n, np.repeat(obs[None], n, axis=0))
    env.close()
    return snap, layout_from_model(u.model), u.dt


def _frames(template: dict, steps: int, write) -> list[dict]:
    frames = []
    for t in range(steps + 1):
        frame = {k: v.copy() for k, v in template.items()}
        write(frame, t)
        frames.append(frame)
    return frames


def test_sprinting_and_coasting_does_not_hold_a_target_speed():
    """halfcheetah-target-speed: 4 m/s and 0 m/s in turns average 2 m/s, and score as badly as standing."""
    snap, layout, dt = _template("HalfCheetah-v5", 4)
    torso = layout.bodies["torso"]
    # env 0: a steady 2 m/s; 1: sprint 4 m/s and coast 0 m/s every other step; 2: ten steps at each in turn;
    # 3: standing still.
    speeds = [lambda t: 2.0, lambda t: 4.0 * (t % 2), lambda t: 4.0 * ((t // 10) % 2), lambda t: 0.0]
    x = np.array([[sum(s(k) for k in range(t)) * dt for s in speeds] for t in range(201)])

    def write(frame, t):
        frame["xpos"][:, torso, 0] = x[t]

    value = _episodes("halfcheetah-target-speed", _frames(snap, 200, write), layout, dt)
    assert np.mean(np.diff(x[:, 1])) / dt == pytest.approx(2.0, abs=0.05)  # the exploit's mean speed is right
    assert value[0] == pytest.approx(0.0, abs=1e-4)
    assert value[1] == pytest.approx(-2.0, abs=1e-3) and value[2] == pytest.approx(-2.0, abs=1e-3)
    assert value[3] == pytest.approx(-2.0, abs=1e-3)


def test_rocking_is_no_backflip():
    """halfcheetah-backflip: pitching back and forth, however far, sums to no flip; one turn back is one."""
    snap, layout, dt = _template("HalfCheetah-v5", 3)
    rooty = layout.joints["rooty"].qpos[0]
    pitch = [lambda t: 2.5 * math.sin(t / 3), lambda t: -2 * math.pi * t / 100, lambda t: 2 * math.pi * t / 100]

    def write(frame, t):
        frame["qpos"][:, rooty] = [p(t) for p in pitch]

    value = _episodes("halfcheetah-backflip", _frames(snap, 100, write), layout, dt)
    assert abs(value[0]) < 0.5  # what is left is the last swing's angle (2.5 rad at most), under half a turn
    assert value[1] == pytest.approx(1.0, abs=1e-4) and value[2] == pytest.approx(-1.0, abs=1e-4)


def test_wobbling_or_wandering_is_no_spin():
    """ant-spin: turning back and forth sums to nothing, a turn counts across the +-pi seam, and turns made
    away from the start do not count."""
    snap, layout, dt = _template("Ant-v5", 3)
    torso = layout.bodies["torso"]
    yaw = [lambda t: 1.5 * math.sin(t / 2), lambda t: 2 * math.pi * t / 50, lambda t: 2 * math.pi * t / 50]
    away = [0.0, 0.0, 3.0]  # env 2 spins 3 m from where it started

    def write(frame, t):
        for i, f in enumerate(yaw):
            frame["xquat"][i, torso] = [math.cos(f(t) / 2), 0.0, 0.0, math.sin(f(t) / 2)]
            frame["xpos"][i, torso, :2] = [away[i], 0.0]

    value = _episodes("ant-spin", _frames(snap, 100, write), layout, dt)
    assert abs(value[0]) < 0.25 and value[1] == pytest.approx(2.0, abs=1e-3) and value[2] == 0.0


def test_jittering_or_hopping_away_is_no_hop_in_place():
    """hopper-hop-in-place: a foot that never clears 5 cm, or flights far from the start, earn nothing."""
    snap, layout, dt = _template("Hopper-v5", 3)
    foot, torso = layout.bodies["foot"], layout.bodies["torso"]
    ground = -0.04  # the height of the foot's frame, held level, when its capsule rests on the ground
    lift = [lambda t: 0.03 * (t % 2), lambda t: 0.2 * (t % 40 < 20), lambda t: 0.2 * (t % 40 < 20)]
    where = [lambda t: 0.0, lambda t: 0.0, lambda t: 1.0 + 0.01 * t]  # env 2 hops away from 1 m on

    def write(frame, t):
        frame["xquat"][:, foot] = [1.0, 0.0, 0.0, 0.0]
        for i in range(3):
            frame["xpos"][i, foot, 2] = ground + lift[i](t)
            frame["xpos"][i, torso, 0] = where[i](t)

    value = _episodes("hopper-hop-in-place", _frames(snap, 200, write), layout, dt)
    assert value[0] == 0.0 and value[2] == 0.0
    assert value[1] == pytest.approx(100 * dt, rel=0.05)  # half of 200 steps in the air


def test_sweeping_through_the_target_is_no_hold():
    """reacher-hold: a fingertip crossing the target, or parked 3 cm off it, holds nothing."""
    snap, layout, dt = _template("Reacher-v5", 3)
    tip, target = layout.bodies["fingertip"], layout.bodies["target"]
    path = [lambda t: 0.0, lambda t: -0.1 + 0.2 * t / 50, lambda t: 0.03]  # held on, swept across, parked off

    def write(frame, t):
        frame["xpos"][:, target, :2] = [0.1, 0.1]
        for i, p in enumerate(path):
            frame["xpos"][i, tip, :2] = [0.1 + p(t), 0.1]

    value = _episodes("reacher-hold", _frames(snap, 50, write), layout, dt)
    assert value[0] == pytest.approx(1.0) and value[1] == 0.0 and value[2] == 0.0
