"""`reward-designer design` end to end through a loopback OpenAI-compatible server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fake_openai import FakeOpenAI
from processes import ctrl_c_as_in_a_terminal, processes_naming
from scripted import reply

pytestmark = pytest.mark.slow

DESIGN = ["--env", "HalfCheetah-v5", "--task", "run forward as fast as possible", "--model", "openai/scripted",
          "--iterations", "2", "--samples", "3", "--episodes", "2", "--device", "cpu", "--fix-attempts", "1"]


def cli(*args: str, env: dict | None = None, **kw) -> subprocess.Popen:
    # faulthandler: a CLI that hangs dumps its threads' stacks when finish() gives up on it.
    full_env = {**os.environ, "OPENAI_API_KEY": "sk-test", "PYTHONFAULTHANDLER": "1", **(env or {})}
    with ctrl_c_as_in_a_terminal():  # the Ctrl-C tests need the CLI to take SIGINT
        return subprocess.Popen([sys.executable, "-m", "reward_designer.cli", *args], env=full_env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kw)


def finish(proc: subprocess.Popen, timeout: float = 400) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGABRT)
        _, err = proc.communicate(timeout=30)
        pytest.fail(f"the CLI did not exit within {timeout} s; where its threads were:\n{err[-6000:]}")
    return proc.returncode, err


def requests_text(server: FakeOpenAI) -> list[str]:
    return [json.dumps(body, sort_keys=True) for body in server.chat_requests]


def design_until_training(server: FakeOpenAI, out, steps: int = 6000, cand: int = 1) -> subprocess.Popen:
    """A design run in its own process group, once round 1's candidate ``cand`` is training."""
    proc = cli("design", *DESIGN, "--train-steps", str(steps), "--api-base", server.base_url, "--out", str(out),
               start_new_session=True)
    progress = out / "iter_01" / f"cand_{cand:02d}" / "train" / "progress.jsonl"
    deadline = time.monotonic() + 240
    while not (progress.is_file() and progress.read_text().strip()) and time.monotonic() < deadline:
        assert proc.poll() is None, proc.stderr.read()
        time.sleep(0.05)
    assert progress.is_file(), "training never started"
    return proc


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted scripted design run; several tests read it."""
    out = tmp_path_factory.mktemp("design") / "run"
    with FakeOpenAI(reply) as server:
        code, err = finish(cli("design", *DESIGN, "--train-steps", "6000", "--api-base", server.base_url,
                               "--out", str(out)))
        requests = requests_text(server)
    assert code == 0, err
    return out, requests, err


def test_broken_programs_never_reach_training(full_run):
    out, _, _ = full_run
    record = json.loads((out / "run.json").read_text())
    cands = {(c["iteration"], c["index"]): c for c in record["candidates"]}
    # Round 1: the good one trains; the syntax error comes back fixed and trains; NaN stays rejected.
    assert cands[(1, 0)]["status"] == "trained" and cands[(1, 0)]["fixes"] == 0
    assert cands[(1, 1)]["status"] == "trained" and cands[(1, 1)]["fixes"] == 1
    assert cands[(1, 2)]["status"] == "rejected" and cands[(1, 2)]["stage"] == "probe"
    assert any("NaN" in f for f in cands[(1, 2)]["findings"])
    assert not (out / "iter_01" / "cand_02" / "train").exists()
    first_try = (out / "iter_01" / "cand_01" / "attempt_0.py").read_text()
    assert json.loads((out / "iter_01" / "cand_01" / "critic.json").read_text())["ok"] is True
    assert "{\"speed\": speed\n" in first_try and (out / "iter_01" / "cand_01" / "attempt_1.py").is_file()


def test_round_two_prompt_holds_best_code_and_reflection(full_run):
    out, requests, _ = full_run
    record = json.loads((out / "run.json").read_text())
    round1 = [c for c in record["candidates"] if c["iteration"] == 1 and c["status"] == "trained"]
    best1 = max(round1, key=lambda c: c["fitness"])
    best_code = (out / f"iter_01/cand_{best1['index']:02d}" / "reward.py").read_text()
    analysis = json.loads((out / f"iter_01/cand_{best1['index']:02d}" / "analysis.json").read_text())
    refine = [r for r in requests if "We trained a policy on the best reward function so far" in r]
    assert refine  # more than one when the server returned fewer samples than asked
    prompt = json.loads(refine[0])["messages"][-1]["content"]
    assert best_code.strip() in prompt
    assert f"mean {analysis['fitness_mean']:.4g}" in prompt  # the reflection numbers
    assert "correlation of the reward with the task score" in prompt
    assert "raise the weight of `forward`" in prompt  # the analyzer's feedback


def test_run_ends_with_best_and_summary(full_run):
    out, _, err = full_run
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "done"
    best = record["best"]
    assert (out / "best" / "reward.py").read_text() == (
        out / f"iter_{best['iteration']:02d}/cand_{best['index']:02d}" / "reward.py").read_text()
    assert (out / "best" / "policy.npz").stat().st_size > 0
    assert best["fitness"] == max(c["fitness"] for c in record["candidates"] if c["status"] == "trained")
    assert "fitness" in err and "best:" in err  # the summary table and the closing line
    assert record["usage"]["calls"] > 0 and record["usage"]["prompt_tokens"] > 0
    assert (out / "fitness.py").read_text().count("compute_fitness") == 1  # asked of the LLM, kept for review


@pytest.mark.parametrize("stop", ["ctrl-c", "sigterm"])
def test_ctrl_c_stops_the_run_and_its_training_and_says_how_to_resume(tmp_path, stop):
    out = tmp_path / "run"
    with FakeOpenAI(reply) as server:
        proc = design_until_training(server, out, steps=5_000_000, cand=0)  # a training that would take minutes
        asked = len(server.chat_requests)
        # What Ctrl-C sends: the CLI's process group. Workers run in sessions of their own, so
        # the CLI must stop them itself. A SIGTERM (timeout, docker stop) goes to the CLI alone.
        if stop == "ctrl-c":
            os.killpg(proc.pid, signal.SIGINT)
        else:
            os.kill(proc.pid, signal.SIGTERM)
        code, err = finish(proc, timeout=30)
        assert len(server.chat_requests) == asked  # no analysis of a stopped training
    assert code == 130, err
    assert f"reward-designer resume {out}" in err.strip().splitlines()[-1]
    assert "Traceback" not in err
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "stopped" and record["error"] == "interrupted"
    assert record["usage"]["calls"] == asked
    assert not (out / "iter_01" / "cand_00" / "train" / "result.json").exists()
    deadline = time.monotonic() + 10  # and no worker outlives the CLI (their job files are under out)
    while processes_naming(str(out)):
        assert time.monotonic() < deadline, "a worker is still running after the CLI exited"
        time.sleep(0.1)


def test_killed_run_resumes_with_no_repeated_request(full_run, tmp_path):
    ref_out, ref_requests, _ = full_run
    out = tmp_path / "run"
    with FakeOpenAI(reply) as server:
        proc = design_until_training(server, out)
        os.killpg(proc.pid, signal.SIGKILL)  # the CLI and every worker it started
        proc.wait()
        assert not (out / "iter_01" / "cand_01" / "train" / "result.json").exists()
        before = requests_text(server)

        code, err = finish(cli("resume", str(out), env={"OPENAI_API_KEY": "sk-test"}))
        assert code == 0, err
        after = requests_text(server)

    assert len(after) > len(before)
    # Killed and resumed, the run sends what an unbroken one sends: no request twice, none left out.
    # (Two places may send the same text, e.g. two candidates with the same code: both runs do.)
    assert sorted(after) == sorted(ref_requests)
    record = json.loads((out / "run.json").read_text())
    ref = json.loads((ref_out / "run.json").read_text())
    assert (record["best"]["iteration"], record["best"]["index"]) == (ref["best"]["iteration"], ref["best"]["index"])
    assert record["best"]["fitness"] == pytest.approx(ref["best"]["fitness"], rel=1e-6)
    assert (out / "best" / "reward.py").read_text() == (ref_out / "best" / "reward.py").read_text()
