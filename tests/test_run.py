"""The design loop's failure paths, driven through the Python API with replayed replies (Pendulum: fast).

What a worker does (a crash, a memory bomb, a fork, a training's steps) is tested on real sandboxed workers;
what only the loop decides (resume, the LLM cache, fix counts) on the in-process fake executor
(``fake_jobs``), where a program's ``SCORE`` stands for what it trains to."""

from __future__ import annotations

import json
import time

import pytest
import yaml

from fake_executor import FakeExecutor, program
from fake_openai import FakeOpenAI
from processes import ctrl_c_as_in_a_terminal
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


# Passes the probe, then forks during training: seccomp kills the worker. The lint refuses it; the
# test lets it past (as a program that found a way around the lint), since the sandbox must hold alone.
FORKS_LATER = """```python
import torch

calls = [0]

def compute_reward(state, action):
    calls[0] += 1
    if calls[0] > 300:
        child = torch.multiprocessing.get_context("fork").Process(target=print)
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


@pytest.fixture
def fake_jobs(monkeypatch):
    """The run's jobs go to an in-process fake executor: no worker starts."""
    monkeypatch.setattr("reward_designer.run.LocalExecutor", lambda *args, **kwargs: FakeExecutor())


def test_a_crashing_or_hostile_candidate_fails_alone(tmp_path, monkeypatch):
    import reward_designer.critic

    real_lint = reward_designer.critic.lint
    monkeypatch.setattr(reward_designer.critic, "lint",
                        lambda code, **kw: [] if "multiprocessing" in code else real_lint(code, **kw))
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


def test_finished_run_resumes_to_the_same_result_without_training(tmp_path, fake_jobs):
    task = load_task("pendulum-upright")
    first = design(task, tmp_path / "run", replay=replies(tmp_path, [program(1.0)]), samples=1, **CONFIG)
    policy = tmp_path / "run" / "iter_01" / "cand_00" / "train" / "policy.npz"
    stamp = policy.stat().st_mtime_ns
    again = Run.open(tmp_path / "run").execute(quiet=True)
    assert again.best == first.best and again.status == "done"
    assert policy.stat().st_mtime_ns == stamp  # not retrained


def test_an_existing_run_folder_is_not_overwritten(tmp_path):
    from reward_designer.run import RunConfig

    task, replies = load_task("pendulum-upright"), tmp_path / "replies.yaml"
    replies.write_text("design: []\n")
    Run.create(tmp_path / "run", RunConfig(task=task, replay=str(replies)))
    with pytest.raises(RunError, match="resume"):
        Run.create(tmp_path / "run", RunConfig(task=task, replay=str(replies)))


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
    # 100 steps is under one batch (4 envs, the run's, x 16 steps, the task's): a candidate trains one
    # batch, and the refine prompt says 64, the steps the policy it describes had.
    task = load_task("pendulum-upright").model_copy(update={"ppo": {"num_steps": 16, "num_envs": 32}})
    config = {**CONFIG, "iterations": 2, "train_steps": 100, "ppo": {"num_envs": 4}}
    record = design(task, tmp_path / "run", replay=replies(tmp_path, [GOOD, GOOD]), samples=1, **config)
    assert record.status == "done"
    result = json.loads((tmp_path / "run" / "iter_01" / "cand_00" / "train" / "result.json").read_text())
    assert result["result"]["steps"] == 64
    assert (result["result"]["ppo"]["num_envs"], result["result"]["ppo"]["num_steps"]) == (4, 16)
    assert "(64 env steps of PPO)" in (tmp_path / "run" / "iter_02" / "prompt.md").read_text()


def live(server: FakeOpenAI) -> dict:
    """design() options for a run against the loopback server (its calls are cached, as with any provider)."""
    return dict(model="openai/scripted", api_base=server.base_url, samples=1, **CONFIG)


def answering(design_reply: str):
    def script(request):
        text = request["messages"][-1]["content"]
        return "- keep going" if "A policy was trained with PPO" in text else design_reply
    return script


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def test_resuming_a_finished_run_asks_nothing_and_keeps_every_prompt(tmp_path, fake_jobs):
    with FakeOpenAI(answering(program(1.0))) as server:
        first = design(load_task("pendulum-upright"), tmp_path / "run", **{**live(server), "iterations": 2})
        sent = len(server.chat_requests)
        prompts = {p: p.read_text() for p in (tmp_path / "run").glob("iter_*/prompt.md")}
        again = Run.open(tmp_path / "run").execute(quiet=True)
        assert len(server.chat_requests) == sent  # round 1 is asked its own prompt again: a cache hit
    assert len(prompts) == 2 and all(p.read_text() == text for p, text in prompts.items())
    assert again.best == first.best
    assert again.usage["calls"] == first.usage["calls"] == sent  # the resumed session spent nothing more


def test_a_round_that_sends_the_same_prompt_as_an_earlier_one_gets_new_replies(tmp_path, fake_jobs):
    # Every candidate is rejected, so round 2 sends round 1's prompt: it must reach the LLM, not the cache.
    with FakeOpenAI(answering(program(1.0, broken=True))) as server:
        record = design(load_task("pendulum-upright"), tmp_path / "run",
                        **{**live(server), "iterations": 2, "fix_attempts": 0})
        design_requests = [r for r in server.chat_requests if "compute_reward" in r["messages"][-1]["content"]]
    assert record.status == "failed"
    assert len(design_requests) == 2 and design_requests[0]["messages"] == design_requests[1]["messages"]


def test_a_failed_training_is_not_redone_on_resume(tmp_path):
    with FakeOpenAI(answering(CRASHES_LATER)) as server:
        first = design(load_task("pendulum-upright"), tmp_path / "run", **live(server))
        job = tmp_path / "run" / "iter_01" / "cand_00" / "train" / "job.json"
        stamp = job.stat().st_mtime_ns
        again = Run.open(tmp_path / "run").execute(quiet=True)
    assert first.candidates[0].status == again.candidates[0].status == "failed"
    assert "boom" in again.candidates[0].error
    assert job.stat().st_mtime_ns == stamp  # no second worker was started for it


def test_usage_spent_after_the_last_save_is_counted_on_resume(tmp_path, fake_jobs):
    with FakeOpenAI(answering(program(1.0))) as server:
        first = design(load_task("pendulum-upright"), tmp_path / "run", **live(server))
        # As if the run had been killed before it saved its totals: only the call log knows them.
        saved = json.loads((tmp_path / "run" / "run.json").read_text())
        saved["usage"], saved["status"] = {}, "running"
        (tmp_path / "run" / "run.json").write_text(json.dumps(saved))
        again = Run.open(tmp_path / "run").execute(quiet=True)
    assert first.usage["calls"] == len(server.chat_requests) > 0
    assert again.usage["calls"] == first.usage["calls"]
    assert again.usage["prompt_tokens"] == first.usage["prompt_tokens"] > 0


def test_an_llm_error_leaves_the_run_stopped_and_resumable(tmp_path):
    from reward_designer.llm import LLMError

    with FakeOpenAI(lambda request: (401, "bad key")) as server:
        with pytest.raises(LLMError):
            design(load_task("pendulum-upright"), tmp_path / "run", **live(server))
    saved = json.loads((tmp_path / "run" / "run.json").read_text())
    assert saved["status"] == "stopped" and "bad key" in saved["error"]


def test_a_replayed_run_resumed_after_a_stop_gets_the_replies_an_unbroken_one_gets(tmp_path, monkeypatch, fake_jobs):
    replayed = replies(tmp_path, [program(1.0), program(2.0)], analyze=["- first feedback", "- second feedback"])
    config = {**CONFIG, "iterations": 2}
    whole = design(load_task("pendulum-upright"), tmp_path / "whole", replay=replayed, samples=1, **config)

    real_round = Run._round

    def stop_at_round_two(self, it, *args):
        if it == 2:
            raise KeyboardInterrupt
        return real_round(self, it, *args)

    monkeypatch.setattr(Run, "_round", stop_at_round_two)
    with pytest.raises(KeyboardInterrupt):
        design(load_task("pendulum-upright"), tmp_path / "broken", replay=replayed, samples=1, **config)
    monkeypatch.setattr(Run, "_round", real_round)
    resumed = Run.open(tmp_path / "broken").execute(quiet=True)

    assert resumed.status == whole.status == "done"
    for name in ("iter_01/cand_00", "iter_02/cand_00"):
        got = json.loads((tmp_path / "broken" / name / "analysis.json").read_text())["feedback"]
        want = json.loads((tmp_path / "whole" / name / "analysis.json").read_text())["feedback"]
        assert got == want
    assert "second feedback" in want


def test_a_fixed_reply_that_had_no_code_keeps_its_fix_count_on_resume(tmp_path, fake_jobs):
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": ["I would reward being upright."], "fix": [program(1.0)],
                                    "analyze": ["- keep going"]}))
    first = design(load_task("pendulum-upright"), tmp_path / "run", replay=str(path), samples=1, **CONFIG)
    again = Run.open(tmp_path / "run").execute(quiet=True)
    assert first.candidates[0].status == "trained" and first.candidates[0].fixes == 1
    assert again.candidates[0].fixes == 1


def test_ctrl_c_during_an_analysis_stops_its_worker_and_asks_no_llm(tmp_path, monkeypatch):
    import os
    import signal

    import reward_designer.executor as executor
    from reward_designer.executor import Cancelled

    real_run_job, pressed = executor.run_job, []

    def run_job(job, *args, **kwargs):
        if job.kind == "analyze" and not pressed:
            pressed.append(True)
            os.kill(os.getpid(), signal.SIGINT)  # the user presses Ctrl-C as the rollout starts
            # The main thread sets the stop when it next runs, which on a loaded machine can be after
            # this short rollout: wait until the run's stop check raises, then go on as a late rollout.
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    kwargs["poll"]()
                except Cancelled:
                    break
                time.sleep(0.01)
        return real_run_job(job, *args, **kwargs)

    monkeypatch.setattr(executor, "run_job", run_job)
    with ctrl_c_as_in_a_terminal(), pytest.raises(KeyboardInterrupt):
        design(load_task("pendulum-upright"), tmp_path / "run", replay=replies(tmp_path, [GOOD]), samples=1, **CONFIG)
    cand = tmp_path / "run" / "iter_01" / "cand_00"
    purposes = [json.loads(line)["purpose"] for line in (tmp_path / "run" / "llm" / "calls.jsonl").read_text().splitlines()]
    assert pressed and purposes == ["design"]  # no analysis call
    assert not (cand / "analysis.json").exists() and not (cand / "rollout" / "result.json").exists()
    assert json.loads((tmp_path / "run" / "run.json").read_text())["status"] == "stopped"


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """One finished run (a candidate that crashes in training, one that trains), for tests that only
    read it or resume it (a finished run resumes to itself)."""
    tmp = tmp_path_factory.mktemp("finished")
    replayed = replies(tmp, [CRASHES_LATER, GOOD])
    record = design(load_task("pendulum-upright"), tmp / "run", replay=replayed, samples=2, **CONFIG)
    return tmp / "run", record, replayed


def test_the_runs_fitness_file_carries_the_cards_aggregate(finished):
    from reward_designer.program import fitness_aggregate

    folder, _, _ = finished
    assert fitness_aggregate((folder / "fitness.py").read_text(), "") == "mean"  # the card's


def test_the_summary_shows_the_error_a_candidate_failed_with(finished):
    from rich.console import Console

    folder, record, _ = finished
    console = Console(record=True, width=200)
    console.print(Run.open(folder).summary_table())
    assert record.candidates[0].error.count("\n") >= 1  # a traceback, then the error
    text = console.export_text()
    assert "RuntimeError: boom" in text and "in compute_reward" not in text  # the error, not the traceback


def test_a_run_file_that_does_not_validate_is_refused_naming_what(finished, tmp_path):
    folder, _, _ = finished
    saved = json.loads((folder / "run.json").read_text())
    saved["config"]["task"]["ppo"] = {"num_envs": 4.5}  # an edit by hand, or an older version's lax value
    (tmp_path / "edited").mkdir()
    (tmp_path / "edited" / "run.json").write_text(json.dumps(saved))
    with pytest.raises(RunError, match=r"incompatible version: config\.task\.ppo: .*num_envs"):
        Run.open(tmp_path / "edited")
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut" / "run.json").write_text((folder / "run.json").read_text()[:100])  # a torn write
    with pytest.raises(RunError, match="is damaged"):
        Run.open(tmp_path / "cut")


def test_one_process_at_a_time_runs_a_folder(finished):
    folder, record, _ = finished
    holder = Run.open(folder)
    with holder.folder.exclusive():  # as a resume running in another process holds it
        with pytest.raises(RunError, match=r"in use by another process \(pid \d+\)"):
            Run.open(folder).execute(quiet=True)
    assert Run.open(folder).execute(quiet=True).best == record.best  # free again


def test_the_api_resumes_only_the_same_run_and_checks_before_making_a_folder(finished, tmp_path, monkeypatch):
    from reward_designer.llm import LLMError
    from reward_designer.schemas import TaskSpec

    monkeypatch.delenv("REWARD_DESIGNER_MODEL", raising=False)
    folder, record, replayed = finished
    again = design(load_task("pendulum-upright"), folder, replay=replayed, samples=2, **CONFIG)
    assert again.best == record.best
    with pytest.raises(RunError, match="another task or config"):
        design(load_task("pendulum-upright"), folder, replay=replayed, samples=3, **CONFIG)
    with pytest.raises(RunError, match="CartPole-v1"):
        design(TaskSpec(name="c", env_id="CartPole-v1", description="balance"), tmp_path / "cart", replay=replayed)
    with pytest.raises(LLMError, match="no model configured"):
        design(load_task("pendulum-upright"), tmp_path / "nomodel", **CONFIG)
    assert not (tmp_path / "cart").exists() and not (tmp_path / "nomodel").exists()


def test_an_llm_success_check_with_an_unknown_aggregate_stops_the_run_with_a_clear_error(tmp_path):
    from reward_designer.schemas import TaskSpec

    fitness = ("```python\nAGGREGATE = 'median'\n\ndef compute_fitness(state, action):\n"
               "    return (state.obs[:, 0] > 0.95).float()\n```")
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"fitness": [fitness], "design": [GOOD]}))
    task = TaskSpec(name="p", env_id="Pendulum-v1", description="swing up and balance")
    with pytest.raises(RunError, match="unknown AGGREGATE 'median'"):
        design(task, tmp_path / "run", replay=str(path), samples=1, **CONFIG)
