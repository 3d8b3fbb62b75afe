"""The worker: its per-step reward (StepReward), which every candidate's training calls on the whole
batch; the training log as the parent reads it; and its jobs' edge cases."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from reward_designer.analyzer import Analyzer
from reward_designer.jobs import run_job
from reward_designer.policy import Policy
from reward_designer.program import load_function
from reward_designer.sandbox import Limits
from reward_designer.schemas import FitnessSpec, TrainJob
from reward_designer.trainer import read_progress
from reward_designer.sim import make_vecsim
from reward_designer.worker import (
    MAX_COMPONENTS,
    MAX_EPISODE_STEPS,
    ProgramError,
    StepReward,
    _error_text,
    check_output,
)

N = 4


@pytest.fixture(scope="module")
def pair():
    sim = make_vecsim("InvertedPendulum-v5", N, seed=0)
    sim.reset(0)
    prev = sim.physics()
    sim.step(np.zeros((N, 1)))
    yield sim, prev, sim.physics()
    sim.close()


def step_reward(sim, program, fitness=None, aggregate="sum") -> StepReward:
    return StepReward(program, fitness, aggregate, sim.layout, sim.dt, N, "cpu")


def test_components_and_fitness_are_metered_per_episode(pair):
    sim, prev, now = pair
    ones = torch.ones(N)

    def program(state, action):
        return 3 * ones, {"a": ones, "b": 2 * ones}

    reward = step_reward(sim, program, fitness=lambda state, action: ones)
    actions = torch.zeros(N, 1)
    running = np.zeros(N, bool)
    for _ in range(3):
        assert torch.equal(reward(prev, now, actions, running), 3 * ones)
    assert reward.episode_means() == {}  # no episode has ended
    reward(prev, now, actions, np.array([True, False, False, False]))
    assert reward.episode_means() == {"fitness": 4.0, "component/a": 1.0, "component/b": 2.0}
    assert reward.episode_means() == {}  # each ended episode is reported once
    reward(prev, now, actions, torch.tensor([False, True, False, False]))  # a done mask from a device batch
    assert reward.episode_means()["fitness"] == 5.0


def test_a_rare_nonfinite_reward_is_zeroed_and_a_habit_fails(pair):
    sim, prev, now = pair

    def program(state, action):
        r = torch.tensor([1.0, float("nan"), float("inf"), 1.0])
        return r, {"r": r}

    reward = step_reward(sim, program)
    actions, running = torch.zeros(N, 1), np.zeros(N, bool)
    assert torch.equal(reward(prev, now, actions, running), torch.tensor([1.0, 0.0, 0.0, 1.0]))
    with pytest.raises(ProgramError, match="NaN or infinite on more than 1%"):
        for _ in range(100):
            reward(prev, now, actions, running)


def test_huge_finite_rewards_are_kept(pair):
    sim, prev, now = pair
    huge = torch.full((N,), 3e38)  # their float32 sum overflows; no value is non-finite

    reward = step_reward(sim, lambda state, action: (huge, {"h": huge}))
    assert torch.equal(reward(prev, now, torch.zeros(N, 1), np.zeros(N, bool)), huge)
    assert reward.nonfinite == 0


def test_the_env_reward_leaves_the_fitness_metered(pair):
    sim, prev, now = pair
    reward = step_reward(sim, None, fitness=lambda state, action: torch.arange(N).float(), aggregate="max")
    assert reward(prev, now, torch.zeros(N, 1), np.ones(N, bool)) is None
    assert reward.episode_means() == {"fitness": 1.5}


def test_a_component_left_out_on_some_steps_is_metered_per_episode(pair):
    sim, prev, now = pair
    ones, calls = torch.ones(N), [0]

    def program(state, action):  # "bonus" on every other step only
        calls[0] += 1
        return ones, {"alive": ones, **({"bonus": 10 * ones} if calls[0] % 2 else {})}

    reward = step_reward(sim, program)
    actions, running, ends = torch.zeros(N, 1), np.zeros(N, bool), np.array([True, False, False, False])
    for _ in range(3):
        reward(prev, now, actions, running)
    reward(prev, now, actions, ends)  # a 4-step episode: bonus on 2 of its steps
    assert reward.episode_means() == {"component/alive": 1.0, "component/bonus": 5.0}
    reward(prev, now, actions, running)
    reward(prev, now, actions, ends)  # the next one, 2 steps: bonus on 1, none carried over
    assert reward.episode_means() == {"component/alive": 1.0, "component/bonus": 5.0}


def test_component_names_are_capped_over_a_training(pair):
    sim, prev, now = pair
    ones, calls = torch.ones(N), [0]

    def program(state, action):  # a new name every step: the log would grow without bound
        calls[0] += 1
        return ones, {f"c{calls[0]}": ones}

    reward = step_reward(sim, program)
    with pytest.raises(ProgramError, match=f"at most {MAX_COMPONENTS} component names"):
        for _ in range(MAX_COMPONENTS + 1):
            reward(prev, now, torch.zeros(N, 1), np.zeros(N, bool))


def test_the_error_text_for_the_designer_shows_the_failing_line():
    fn = load_function("def compute_reward(state, action):\n    return state['torso'] * 2\n", "compute_reward")
    with pytest.raises(TypeError) as info:
        fn(None, None)
    assert _error_text(info.value).startswith("  line 2, in compute_reward: return state['torso'] * 2\nTypeError")


# --------------------------------------------------------------- the training log, read by the parent
def test_the_training_log_keeps_finite_numbers_only(tmp_path):
    log = tmp_path / "progress.jsonl"
    log.write_text('{"global_step": NaN, "loss": 1.5}\n{"global_step": Infinity}\nnot json\n'
                   '{"global_step": 64, "fitness": -Infinity, "name": "x"}\n')
    assert read_progress(log) == [{"loss": 1.5}, {}, {"global_step": 64}]


def test_planted_training_log_lines_that_break_the_json_parser_are_skipped(tmp_path):
    """Deep nesting (RecursionError) and a 5000-digit int (ValueError) raised out of the parent's poll;
    a line longer than any the worker writes is skipped unparsed."""
    log = tmp_path / "progress.jsonl"
    log.write_text('{"global_step": 1}\n' + "[" * 5000 + "\n" + '{"x": ' + "9" * 5000 + "}\n"
                   + json.dumps({"global_step": 3, "pad": "x" * 20000}) + '\n{"global_step": 2}\n')
    assert read_progress(log) == [{"global_step": 1}, {"global_step": 2}]


def test_the_training_log_is_read_from_its_end(tmp_path):
    log = tmp_path / "progress.jsonl"
    log.write_text("".join(json.dumps({"global_step": 64 * i, "pad": "x" * 50}) + "\n" for i in range(1000)))
    rows = read_progress(log, max_bytes=1000)  # cuts a line: it is skipped
    assert rows and rows[-1]["global_step"] == 64 * 999
    assert [r["global_step"] for r in rows] == list(range(64 * (1000 - len(rows)), 64 * 1000, 64))


# --------------------------------------------------------------- results, as the parent reads them back
def test_a_result_the_program_wrote_is_bounded_before_it_reaches_records_and_prompts(tmp_path):
    from reward_designer.jobs import read_result
    from reward_designer.schemas import MAX_ERROR_CHARS

    def forged(**result):
        (tmp_path / "result.json").write_text(json.dumps({"result": result}))
        return read_result(tmp_path)

    long = forged(kind="probe", ok=False, error="x" * 10**6 + "the end")
    assert len(long.error) == MAX_ERROR_CHARS and long.error.endswith("the end")
    for bad in ({"kind": "probe", "ok": True, "ms_per_call": float("nan")},
                {"kind": "probe", "ok": True, "components": {f"c{i}": 0.0 for i in range(MAX_COMPONENTS + 1)}},
                {"kind": "reward_eval", "ok": True, "components": {"x" * 65: [0.0]}}):
        with pytest.raises(ValueError):
            forged(**bad)
    big_type = type("A" * 10**5, (), {})()  # a program cannot build one (no classes, no type()); still capped
    with pytest.raises(ProgramError) as info:
        check_output(big_type, 4)
    assert len(_error_text(info.value)) <= MAX_ERROR_CHARS


# --------------------------------------------------------------- jobs, in the sandbox
def test_a_job_file_link_left_by_a_killed_run_is_not_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    work = tmp_path / "train"
    work.mkdir()
    (work / "job.json").symlink_to(victim)  # what a program can leave when its parent dies with it
    outcome = run_job(TrainJob(env_id="InvertedPendulum-v5", code=None, total_steps=256), work, Limits(wall_s=120))
    assert outcome.ok, outcome.problem
    assert victim.read_text() == "precious"


ONES = FitnessSpec(code="import torch\ndef compute_fitness(state, action):\n    return torch.ones(state.n)\n")


def test_the_training_worker_keeps_the_hidden_fitness_out_of_the_job_file_its_program_can_read(tmp_path):
    """The program trains in the process that measures fitness; its folder held the fitness code."""
    fitness = FitnessSpec(code="# secret-measure\n" + ONES.code)
    peek = ("def compute_reward(state, action):\n"  # the marker built at run time: not in its own code
            "    raise ValueError(str('secret' + '-measure' in open('job.json').read()))\n")
    job = TrainJob(env_id="InvertedPendulum-v5", code=peek, fitness=fitness, total_steps=256)
    outcome = run_job(job, tmp_path / "train", Limits(wall_s=120))
    assert outcome.result is not None and outcome.result.error.endswith("ValueError: False"), outcome.problem


def test_an_episode_longer_than_the_analysis_limit_keeps_its_fitness(tmp_path):
    Policy(8, 2, [-1, -1], [1, 1]).save(tmp_path / "policy.npz")  # Swimmer never terminates
    analysis = Analyzer("Swimmer-v5", ONES, {"max_episode_steps": MAX_EPISODE_STEPS + 10}, episodes=2).analyze(
        None, tmp_path / "policy.npz", tmp_path / "cand")
    assert analysis.ok, analysis.error
    assert analysis.fitness == [float(MAX_EPISODE_STEPS)] * 2


def test_a_nan_fitness_is_an_error_not_a_malformed_result(tmp_path):
    Policy(4, 1, [-3], [3]).save(tmp_path / "policy.npz")
    nan = FitnessSpec(code="import torch\ndef compute_fitness(state, action):\n    return torch.full((state.n,), float('nan'))\n")
    analysis = Analyzer("InvertedPendulum-v5", nan, episodes=2).analyze(None, tmp_path / "policy.npz", tmp_path / "c")
    assert not analysis.ok and analysis.error == "fitness: the success check returned NaN or infinite values"


def test_a_rare_nan_reward_in_the_evaluation_is_zeroed_and_reported(tmp_path):
    Policy(4, 1, [-3], [3]).save(tmp_path / "policy.npz")
    code = (
        "import torch\ncalls = [0]\n"
        "def compute_reward(state, action):\n"
        "    calls[0] += 1\n"
        "    r = torch.ones(state.n)\n"
        "    if calls[0] == 3:\n"
        "        r[0] = float('nan')\n"
        "    return r, {'alive': r}\n"
    )
    analysis = Analyzer("InvertedPendulum-v5", ONES, episodes=2).analyze(code, tmp_path / "policy.npz", tmp_path / "c")
    assert analysis.ok and analysis.error == "", analysis.error
    assert analysis.reward_nonfinite == 1
    assert math.isfinite(analysis.reward_mean) and [c.name for c in analysis.components] == ["alive"]
    assert "NaN or infinite on 1 steps" in analysis.reflection


def test_a_reward_that_fails_on_the_evaluation_is_reported_as_such_to_the_designer(tmp_path):
    Policy(4, 1, [-3], [3]).save(tmp_path / "policy.npz")
    code = "def compute_reward(state, action):\n    raise RuntimeError('boom')\n"
    analysis = Analyzer("InvertedPendulum-v5", ONES, episodes=2).analyze(code, tmp_path / "policy.npz", tmp_path / "c")
    assert analysis.ok and analysis.error.startswith("the reward program failed on the evaluation rollouts")
    assert "RuntimeError: boom" in analysis.reflection
    assert "reward per episode" not in analysis.reflection  # no made-up zeros
