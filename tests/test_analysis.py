"""Analyzer: component means and thirds, reward hacking, termination causes, the analyzer's prompt.

The rollout worker is replaced by a fake executor that returns chosen episodes and writes chosen
trajectories; the reward evaluation runs in the real worker where the weighting is under test.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from reward_designer.analyzer import Analyzer, rose_alone, termination_causes
from reward_designer.records import Analysis
from reward_designer.envcard import EnvCard
from reward_designer.jobs import JobOutcome, run_job
from reward_designer.sandbox import Outcome
from reward_designer.schemas import AnalyzeResult, EpisodeStats, FitnessSpec, RewardEvalResult, TaskSpec

FITNESS = FitnessSpec(code="def compute_fitness(state, action):\n    return state.obs[:, 0] * 0 + 7331  # SECRET_MEASURE\n",
                      aggregate="sum", description="metres run backwards")
COMPONENT = """
import torch

def compute_reward(state, action):
    x = state.obs[:, 0]
    return x, {"x": x}
"""


class FakeExecutor:
    """Runs the analyze job as told (episodes, a trajectories file); the reward evaluation as told,
    or in the real worker."""

    def __init__(self, episodes: list[EpisodeStats], record: dict, reward_eval: RewardEvalResult | None = None):
        self.episodes, self.record, self.reward_eval = episodes, record, reward_eval

    def run(self, job, workdir, limits, *, poll=None, read_only=()) -> JobOutcome:
        if job.kind == "analyze":
            np.savez(job.record, **self.record)
            return JobOutcome(result=AnalyzeResult(ok=True, episodes=self.episodes), sandbox=Outcome(returncode=0))
        if self.reward_eval is None:
            return run_job(job, Path(workdir), limits)
        return JobOutcome(result=self.reward_eval, sandbox=Outcome(returncode=0))


class FakeLLM:
    def __init__(self):
        self.chats = []

    def complete(self, chat, n=1, purpose="", temperature=0.0, tag=""):
        self.chats.append(chat)
        return [SimpleNamespace(text="- it wobbles")]


def episode(length: int, fitness: float = 0.0, terminated: bool = False) -> EpisodeStats:
    return EpisodeStats(fitness=fitness, length=length, terminated=terminated, env_return=0.0,
                        step_fitness=[fitness / length] * length)


def pendulum_record(values: list[list[float]]) -> dict:
    """A Pendulum rollout whose obs[:, 0] is ``values[i]`` in episode i (episodes of unequal length)."""
    steps, n = max(map(len, values)), len(values)
    obs = np.zeros((steps, n, 3))
    active = np.zeros((steps, n), bool)
    for i, v in enumerate(values):
        obs[: len(v), i, 0], active[: len(v), i] = v, True
    return {"prev_obs": obs, "now_obs": obs, "actions": np.zeros((steps, n, 1)), "active": active,
            "dt": np.float64(0.05)}


def write_log(path: Path, reward: list[float], fitness: list[float]) -> Path:
    path.write_text("".join(json.dumps({"global_step": 2048 * (i + 1), "train_reward_mean": r, "fitness": f}) + "\n"
                            for i, (r, f) in enumerate(zip(reward, fitness))))
    return path


def analyze(tmp_path, executor, code=COMPONENT, env_id="Pendulum-v1", train_log=None, llm=None, **kwargs) -> Analysis:
    policy = tmp_path / "policy.npz"
    np.savez(policy, w=np.zeros(1))
    task = TaskSpec(name="t", env_id=env_id, description="run backwards")
    analyzer = Analyzer(env_id, FITNESS, episodes=len(executor.episodes), executor=executor, llm=llm, task=task,
                        **kwargs)
    return analyzer.analyze(code, policy, tmp_path / "cand", train_log=train_log)


# ------------------------------------------------------------------- one weighting (4c)


def test_component_mean_and_thirds_pool_the_same_steps(tmp_path):
    # A long episode at 0, a short one at 10: averaging per-episode means gives 5, outside every third.
    values = [[0.0] * 9, [10.0] * 3]
    a = analyze(tmp_path, FakeExecutor([episode(9), episode(3)], pendulum_record(values)))
    assert a.ok and not a.error, a.error
    (x,) = a.components
    pooled = np.concatenate(values)
    assert x.thirds == pytest.approx([2.5, 2.5, 2.5])  # thirds of 9 and of 3 steps, pooled: (0+0+0+10)/4
    assert x.mean == pytest.approx(pooled.mean())  # 30 / 12, not (0 + 10) / 2
    assert min(x.thirds) - 1e-9 <= x.mean <= max(x.thirds) + 1e-9
    assert "- x: 2.5 (2.5 -> 2.5 -> 2.5)" in a.reflection


def test_thirds_follow_a_term_through_its_episodes(tmp_path):
    values = [list(np.arange(9.0)), [0.0, 30.0, 60.0]]
    a = analyze(tmp_path, FakeExecutor([episode(9), episode(3)], pendulum_record(values)))
    (x,) = a.components
    assert x.thirds == pytest.approx([(0 + 1 + 2 + 0) / 4, (3 + 4 + 5 + 30) / 4, (6 + 7 + 8 + 60) / 4])
    sizes = [4, 4, 4]
    assert x.mean == pytest.approx(np.average(x.thirds, weights=sizes))


# ------------------------------------------------------------------- reward hacking (4b)


def gamed(tmp_path, reward: list[float], fitness: list[float], correlation_sign: float = 1.0) -> Analysis:
    steps = 6
    ev = RewardEvalResult(ok=True, episode_reward=[60.0, 60.0], step_reward=[[10.0] * steps] * 2,
                          components={"spin_bonus": [10.0, 10.0]}, component_thirds={"spin_bonus": [10.0] * 3})
    if correlation_sign < 0:
        ev.step_reward = [list(np.linspace(10, 0, steps))] * 2
    eps = [EpisodeStats(fitness=0.0, length=steps, terminated=False, env_return=0.0,
                        step_fitness=list(np.linspace(0, 1, steps)) if correlation_sign < 0 else [0.0] * steps)] * 2
    log = write_log(tmp_path / "progress.jsonl", reward, fitness)
    return analyze(tmp_path, FakeExecutor(eps, pendulum_record([[0.0] * steps] * 2), ev), train_log=log)


def test_a_program_that_games_its_reward_is_flagged_in_the_reflection(tmp_path):
    rng = np.random.default_rng(0)
    reward = list(np.linspace(0.1, 5.0, 30) + rng.normal(0, 0.1, 30))  # the reward climbs over training
    fitness = list(np.abs(rng.normal(0, 0.01, 30)))  # the task score stays at ~0
    a = gamed(tmp_path, reward, fitness)
    assert a.hacking == ["rose_alone"] and a.hacking_suspect
    assert "reward hacking suspected" in a.reflection
    assert "reward per step rose from" in a.reflection and "without doing the task" in a.reflection
    assert a.train_reward[1] > 4 and a.train_fitness[1] < 0.05


def test_a_reward_that_rises_with_the_score_is_not_flagged(tmp_path):
    rng = np.random.default_rng(1)
    reward = list(np.linspace(0.1, 5.0, 30) + rng.normal(0, 0.1, 30))
    fitness = list(np.linspace(0, 40, 30) + rng.normal(0, 2, 30))
    a = gamed(tmp_path, reward, fitness)
    assert a.hacking == [] and "hacking" not in a.reflection


def test_a_reward_against_the_score_over_steps_is_flagged(tmp_path):
    flat = [1.0] * 10
    a = gamed(tmp_path, flat, flat, correlation_sign=-1.0)
    assert a.step_correlation == pytest.approx(-1.0)
    assert a.hacking == ["against"] and "reward is high where the task score is low" in a.reflection


@pytest.mark.parametrize("reward, fitness, flagged", [
    ([0.0] * 10, [0.0] * 10, False),  # nothing moved
    (list(range(10)), [0.0] * 10, True),  # the score is constant: no trend
    (list(range(10)), list(range(10)), False),
    (list(range(10, 0, -1)), [0.0] * 10, False),  # the reward fell
    (list(range(5)), [0.0] * 5, False),  # too short a log to judge
])
def test_rose_alone(reward, fitness, flagged):
    assert rose_alone(reward, fitness) is flagged


# ------------------------------------------------------------------- termination causes (4)


def test_termination_causes_are_counted_per_check_from_the_last_state(tmp_path):
    steps, n = 5, 3
    qpos, qvel = np.zeros((steps, n, 6)), np.zeros((steps, n, 6))
    qpos[:, :, 1] = 1.25
    active = np.zeros((steps, n), bool)
    active[:3, 0], active[:4, 1], active[:, 2] = True, True, True
    qpos[2, 0, 1] = 0.5  # episode 0 ends too low
    qpos[3, 1, 2] = 0.3  # episode 1 ends pitched
    record = {"prev_qpos": qpos, "now_qpos": qpos, "prev_qvel": qvel, "now_qvel": qvel, "active": active,
              "actions": np.zeros((steps, n, 3)), "dt": np.float64(0.008)}
    eps = [episode(3, terminated=True), episode(4, terminated=True), episode(5)]
    ev = RewardEvalResult(ok=True, episode_reward=[0.0] * 3, step_reward=[[0.0] * 3, [0.0] * 4, [0.0] * 5])
    a = analyze(tmp_path, FakeExecutor(eps, record, ev), env_id="Hopper-v5")
    assert a.termination_causes == {"qpos[1] <= 0.7": 1, "qpos[2] >= 0.2": 1}
    assert ("the environment's termination ended 2 of 3, the other 1 ran to the time limit "
            "(by check: qpos[1] <= 0.7 ended 1, qpos[2] >= 0.2 ended 1)") in a.reflection


def test_a_forged_record_gives_no_causes_and_no_error(tmp_path):
    card = EnvCard.from_env("Hopper-v5")
    eps = [episode(3, terminated=True)]
    qpos = np.zeros((3, 1, 6))
    qpos[:, :, 1] = 0.5  # too low
    good = {"active": np.ones((3, 1), bool), "now_qpos": qpos, "now_qvel": np.zeros((3, 1, 6))}
    np.savez(tmp_path / "real.npz", **good)
    assert termination_causes(tmp_path / "real.npz", card, eps) == {"qpos[1] <= 0.7": 1}
    (tmp_path / "link.npz").symlink_to(tmp_path / "real.npz")  # a worker may plant a link to a secret
    assert termination_causes(tmp_path / "link.npz", card, eps) == {}
    (tmp_path / "junk.npz").write_bytes(b"PK\x03\x04 not a zip")
    assert termination_causes(tmp_path / "junk.npz", card, eps) == {}
    np.savez(tmp_path / "shape.npz", **{**good, "active": np.ones((3, 4), bool)})  # not these episodes
    assert termination_causes(tmp_path / "shape.npz", card, eps) == {}


# ------------------------------------------------------------------- what the analyzer reads (4, 7)


def test_analyzer_prompt_carries_the_card_and_the_fitness_description_never_its_code(tmp_path):
    llm = FakeLLM()
    log = write_log(tmp_path / "progress.jsonl", [1.0] * 8, [1.0] * 8)
    card = EnvCard.from_env("Pendulum-v1")
    a = analyze(tmp_path, FakeExecutor([episode(9), episode(3)], pendulum_record([[0.0] * 9, [1.0] * 3])),
                train_log=log, llm=llm, card=card)
    assert a.feedback == "- it wobbles"
    (chat,) = llm.chats
    prompt = chat[0]["content"]
    assert card.render().strip() in prompt  # the env card the designer read
    assert "metres run backwards" in prompt and "the sum of its steps' values" in prompt
    assert "SECRET_MEASURE" not in prompt and "7331" not in prompt and "compute_fitness" not in prompt
    assert "for 16,384 env steps" in prompt  # the training budget, from the log
    assert "at most 200 steps of 0.05 s (10 s)" in prompt
    assert "see the environment" not in prompt


def test_reflection_wording_when_every_episode_terminated(tmp_path):
    ev = RewardEvalResult(ok=True, episode_reward=[0.0] * 2, step_reward=[[0.0] * 3] * 2)
    a = analyze(tmp_path, FakeExecutor([episode(3, terminated=True)] * 2, pendulum_record([[0.0] * 3] * 2), ev))
    assert "the environment's termination ended all 2" in a.reflection
    assert "the rest" not in a.reflection and "the other" not in a.reflection
    a = analyze(tmp_path, FakeExecutor([episode(3)] * 2, pendulum_record([[0.0] * 3] * 2), ev))
    assert "every episode ran to the time limit" in a.reflection
