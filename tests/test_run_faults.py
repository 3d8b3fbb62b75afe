"""A run's way past faults: an oversized reply, a refused request, a full disk, a broken card, leftovers."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from fake_executor import FakeExecutor, program
from fake_openai import FakeOpenAI
from reward_designer import design, load_task
from reward_designer.records import RunError
from reward_designer.run import Run

CONFIG = dict(train_steps=2048, episodes=2, device="cpu", ppo={"num_envs": 4, "num_steps": 64}, iterations=1)
HUGE = "```python\nimport torch\n\n" + "# padding\n" * 200_000 + \
    "def compute_reward(state, action):\n    r = state.obs[:, 0]\n    return r, {'r': r}\n```"


@pytest.fixture(autouse=True)
def _api_key(monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")


def serving(fix_reply):
    """Round one: a 2 MB program and a good one; a fix request gets ``fix_reply(request)``."""
    def script(request):
        text = request["messages"][-1]["content"]
        if "A policy was trained with PPO" in text:
            return "- keep going"
        if request.get("n", 1) == 2:
            return [HUGE, program(1.0)]
        return fix_reply(request)
    return script


def sent_chars(request) -> int:
    return sum(len(m["content"]) for m in request["messages"])


@pytest.mark.parametrize("provider", ["takes the fix", "refuses the fix"])
def test_an_oversized_reply_ends_in_a_run_that_finishes_and_resumes_asking_nothing(tmp_path, provider):
    def fix(request):
        if provider == "refuses the fix" or sent_chars(request) > 200_000:  # a provider's context limit
            return 400, "This model's maximum context length is 128000 tokens"
        return program(2.0)

    with FakeOpenAI(serving(fix)) as server:
        record = design(load_task("pendulum-upright"), tmp_path / "run", model="openai/scripted",
                        api_base=server.base_url, samples=2, executor=FakeExecutor(), **CONFIG)
        sent = len(server.chat_requests)
        again = Run.open(tmp_path / "run", executor=FakeExecutor()).execute(quiet=True)
        assert len(server.chat_requests) == sent  # resume sends no request again, the refused one included
    assert record.status == again.status == "done"
    huge = record.candidates[0] if record.candidates[0].index == 0 else record.candidates[1]
    if provider == "takes the fix":
        assert all(sent_chars(r) < 200_000 for r in server.chat_requests[1:])  # the 2 MB went back cut
        assert huge.status == "trained" and huge.fitness == 2.0 and huge.fixes == 1
    else:
        assert huge.status == "rejected" and "the fix request failed" in huge.findings[-1]
        assert record.best.fitness == 1.0


def test_a_full_disk_is_one_line_keeps_the_last_good_run_file_and_resume_finishes(tmp_path, monkeypatch):
    from reward_designer.cli import app

    replies = tmp_path / "replies.yaml"
    replies.write_text(yaml.safe_dump({"design": [program(1.0)], "analyze": ["- keep going"]}))
    run, real_write = tmp_path / "run", Path.write_text
    full = []

    def write_text(self, *args, **kwargs):
        if self.is_relative_to(run) and (full or self.name.startswith(".critic.json")):
            full.append(self)
            raise OSError(errno.ENOSPC, "No space left on device", str(self))
        return real_write(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", write_text)
    result = CliRunner().invoke(app, ["design", "pendulum-upright", "--replay", str(replies), "--iterations", "1",
                                      "--samples", "1", "--train-steps", "64", "--out", str(run), "--device", "cpu",
                                      "-q", "--set", "num_envs=4", "--set", "num_steps=16"])
    monkeypatch.undo()
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert result.exit_code == 2, result.output
    assert len(errors) == 1 and "the disk is full" in errors[0] and "critic.json" in errors[0]
    assert "Traceback" not in result.output and len(full) >= 2  # the stop's own save met the full disk too
    saved = json.loads((run / "run.json").read_text())  # the last good one, whole
    assert saved["status"] == "running" and saved["candidates"] == []
    assert not list(run.rglob("*.tmp"))
    record = Run.open(run, executor=FakeExecutor()).execute(quiet=True)
    assert record.status == "done" and record.best.fitness == 1.0


def test_a_broken_card_fitness_leaves_nothing_behind_and_the_fixed_card_runs_there(tmp_path):
    card = load_task("pendulum-upright")
    broken = card.fitness.model_copy(update={"code": "def compute_fitness(state, action):\n"
                                                     "    return state.joint('no_such_joint').qpos\n"})
    replies = tmp_path / "replies.yaml"
    replies.write_text(yaml.safe_dump({"design": [program(1.0)], "analyze": ["- keep going"]}))
    with pytest.raises(RunError, match=r"unusable.*nothing was kept in .*run: fix it and run design again"):
        design(card.model_copy(update={"fitness": broken}), tmp_path / "run", replay=str(replies), samples=1, **CONFIG)
    assert not (tmp_path / "run").exists()
    record = design(card, tmp_path / "run", replay=str(replies), samples=1, executor=FakeExecutor(), **CONFIG)
    assert record.status == "done"


def test_leftovers_of_a_killed_session_are_removed_and_no_lock_file_stays(tmp_path):
    replies = tmp_path / "replies.yaml"
    replies.write_text(yaml.safe_dump({"design": [program(1.0)], "analyze": ["- keep going"]}))
    run = tmp_path / "run"
    design(load_task("pendulum-upright"), run, replay=str(replies), samples=1, executor=FakeExecutor(), **CONFIG)
    assert not (run / ".lock").exists()
    planted = [run / ".run.json.4242.tmp", run / "llm" / "cache" / ".abc.json.x1y2.tmp"]
    for path in planted:
        path.write_text("{")  # as a kill between a write and its rename leaves them
    Run.open(run, executor=FakeExecutor()).execute(quiet=True)
    assert not any(p.exists() for p in planted) and not (run / ".lock").exists()
