"""The design loop's failure paths, driven through the Python API with replayed replies (Pendulum: fast)."""

from __future__ import annotations

import json

import pytest
import yaml

from reward_designer import design, load_task
from reward_designer.run import Run, RunError

GOOD = """```python
import torch

def compute_reward(state, action):
    upright = state.obs[:, 0]
    effort = -0.001 * (action ** 2).sum(dim=-1)
    return upright + effort, {"upright": upright, "effort": effort}
```"""

# Passes the 48-step probe, then raises a few hundred calls into training.
CRASHES_LATER = """```python
import torch

calls = [0]

def compute_reward(state, action):
    calls[0] += 1
    if calls[0] > 300:
        raise RuntimeError("boom")
    r = state.obs[:, 0]
    return r, {"upright": r}
```"""

# Passes the probe, then tries to eat all memory during training: the sandbox's limits end it.
MEMORY_BOMB_LATER = """```python
import torch

calls = [0]
hoard = []

def compute_reward(state, action):
    calls[0] += 1
    if calls[0] > 300:
        while True:
            hoard.append(torch.ones(64, 1024, 1024))
    r = state.obs[:, 0]
    return r, {"upright": r}
```"""


# Passes the lint (an alias) and the probe, then forks during training: seccomp kills the worker.
FORKS_LATER = """```python
import torch

t = torch
calls = [0]

def compute_reward(state, action):
    calls[0] += 1
    if calls[0] > 300:
        child = t.multiprocessing.get_context("fork").Process(target=print)
        child.start()
    r = state.obs[:, 0]
    return r, {"upright": r}
```"""


def seccomp_active() -> bool:
    from reward_designer.sandbox import doctor

    return any(s.name == "seccomp" and s.active for s in doctor())


def replies(tmp_path, design_replies, analyze=("- keep going",) * 8):
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": list(design_replies), "analyze": list(analyze)}))
    return str(path)


CONFIG = dict(iterations=1, train_steps=2048, episodes=2, device="cpu", ppo={"num_envs": 4, "num_steps": 64})


def test_a_crashing_or_hostile_candidate_fails_alone(tmp_path):
    task = load_task("pendulum-upright")
    replayed = replies(tmp_path, [CRASHES_LATER, MEMORY_BOMB_LATER, FORKS_LATER, GOOD])
    record = design(task, tmp_path / "run", replay=replayed, samples=4, **CONFIG)
    by_index = {c.index: c for c in record.candidates}
    assert by_index[0].status == "failed" and "boom" in by_index[0].error
    # The address-space limit turns the bomb into an allocation error inside the worker.
    assert by_index[1].status == "failed" and "allocate" in by_index[1].error
    if seccomp_active():
        assert by_index[2].status == "contained" and "seccomp" in by_index[2].error
    else:
        assert by_index[2].status in ("failed", "contained")
    assert by_index[3].status == "trained" and by_index[3].fitness is not None
    assert record.status == "done" and record.best.index == 3
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert sorted(saved["candidates"], key=lambda c: c["index"])[3]["status"] == "trained"


def test_no_survivor_fails_the_run(tmp_path):
    nan = "```python\nimport torch\ndef compute_reward(state, action):\n    r = state.obs[:, 0] / 0.0 * 0.0\n    return r, {'r': r}\n```"
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": [nan], "fix": [nan, nan]}))
    record = design(load_task("pendulum-upright"), tmp_path / "run", replay=str(path), samples=1, **CONFIG)
    assert record.status == "failed" and record.best is None
    assert record.candidates[0].status == "rejected" and record.candidates[0].fixes == 2


def test_finished_run_resumes_to_the_same_result_without_training(tmp_path):
    task = load_task("pendulum-upright")
    first = design(task, tmp_path / "run", replay=replies(tmp_path, [GOOD]), samples=1, **CONFIG)
    policy = tmp_path / "run" / "iter_01" / "cand_00" / "train" / "policy.npz"
    stamp = policy.stat().st_mtime_ns
    again = Run.open(tmp_path / "run").execute(quiet=True)
    assert again.best == first.best and again.status == "done"
    assert policy.stat().st_mtime_ns == stamp  # not retrained


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    from reward_designer.run import RunConfig

    task = load_task("pendulum-upright")
    Run.create(tmp_path / "run", RunConfig(task=task, replay="x"))
    with pytest.raises(RunError, match="resume"):
        Run.create(tmp_path / "run", RunConfig(task=task, replay="x"))


def test_an_env_ppo_cannot_train_fails_before_any_llm_call(tmp_path):
    from reward_designer.schemas import TaskSpec

    task = TaskSpec(name="cartpole", env_id="CartPole-v1", description="balance the pole")
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": [GOOD]}))
    with pytest.raises(RunError, match=r"continuous \(Box\) actions.*Discrete\(2\)"):
        design(task, tmp_path / "run", replay=str(path), samples=1, **CONFIG)
    calls = tmp_path / "run" / "llm" / "calls.jsonl"
    assert not calls.exists() or calls.read_text().strip() == ""


def test_a_mistyped_ppo_override_fails_before_any_llm_call(tmp_path):
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": [GOOD]}))
    config = {**CONFIG, "ppo": {"nmu_envs": 4}}
    with pytest.raises(RunError, match=r"ppo overrides: unknown PPOConfig fields: \['nmu_envs'\]"):
        design(load_task("pendulum-upright"), tmp_path / "run", replay=str(path), samples=1, **config)
    calls = tmp_path / "run" / "llm" / "calls.jsonl"
    assert not calls.exists() or calls.read_text().strip() == ""


def test_a_job_with_a_mistyped_ppo_override_says_so(tmp_path):
    """A TrainJob that bypasses the Trainer's check: the worker names the field, not a traceback."""
    from reward_designer.jobs import run_job
    from reward_designer.sandbox import Limits
    from reward_designer.schemas import TrainJob

    job = TrainJob(env_id="InvertedPendulum-v5", code=None, total_steps=256, ppo={"nmu_envs": 4})
    outcome = run_job(job, tmp_path / "w", Limits(wall_s=60))
    assert not outcome.ok and outcome.result is not None
    assert outcome.result.error == "ppo overrides: unknown PPOConfig fields: ['nmu_envs']"


def test_training_takes_whole_batches_and_the_llm_is_told_how_many_steps(tmp_path):
    # 100 steps is under one batch (4 envs x 64 steps): a candidate trains one batch, and the
    # refine prompt says 256, the steps the policy it describes had.
    config = {**CONFIG, "iterations": 2, "train_steps": 100}
    record = design(load_task("pendulum-upright"), tmp_path / "run",
                    replay=replies(tmp_path, [GOOD, GOOD]), samples=1, **config)
    assert record.status == "done"
    result = json.loads((tmp_path / "run" / "iter_01" / "cand_00" / "train" / "result.json").read_text())
    assert result["result"]["steps"] == 256
    assert "(256 env steps of PPO)" in (tmp_path / "run" / "iter_02" / "prompt.md").read_text()
