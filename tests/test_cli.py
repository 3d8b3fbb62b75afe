"""The command line: bad input gives one line and exit 2; help and README stay true."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def run(*args: str, env: dict | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k != "REWARD_DESIGNER_MODEL"}
    full.update(env or {})
    return subprocess.run([sys.executable, "-m", "reward_designer.cli", *args], capture_output=True, text=True,
                          env=full, cwd=cwd, timeout=120)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_line_exit_2(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("warning:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for w in words:
        assert w.lower() in lines[0].lower(), lines[0]
    each_missing_layer_once(proc.stderr)


def each_missing_layer_once(stderr: str) -> None:
    """The warnings about a sandbox layer missing here name each one once, whatever printed them."""
    from reward_designer.sandbox import doctor

    for s in doctor():
        if not s.active:
            assert stderr.count(s.detail) <= 1, stderr


def test_unknown_env_id(tmp_path):
    one_line_exit_2(run("design", "--env", "NoSuchEnv-v9", "--task", "walk", "--model", "openai/x",
                        "--out", str(tmp_path / "r")), "unknown environment", "NoSuchEnv-v9")


def test_empty_task(tmp_path):
    one_line_exit_2(run("design", "--env", "HalfCheetah-v5", "--task", "   ", "--model", "openai/x",
                        "--out", str(tmp_path / "r")), "empty")


def test_no_model_configured(tmp_path):
    one_line_exit_2(run("design", "--env", "HalfCheetah-v5", "--task", "run", "--out", str(tmp_path / "r")),
                    "no model configured")


def test_unreachable_api_base_leaves_no_run(tmp_path):
    out = tmp_path / "r"
    proc = run("design", "--env", "HalfCheetah-v5", "--task", "run", "--model", "openai/local",
               "--api-base", f"http://127.0.0.1:{closed_port()}/v1", "--out", str(out))
    one_line_exit_2(proc, "127.0.0.1")
    assert not out.exists()


def test_reward_file_that_is_not_python(tmp_path):
    bad = tmp_path / "reward.py"
    bad.write_text("This is a description of a reward, not code.\n")
    proc = run("check", str(bad), "--env", "HalfCheetah-v5")  # the critic's to reject, as any program: exit 1
    assert proc.returncode == 1 and "rejected at lint" in proc.stderr and "syntax error" in proc.stderr, proc.stderr
    binary = tmp_path / "blob.py"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    one_line_exit_2(run("train", str(binary), "--env", "HalfCheetah-v5"), "cannot read")


def test_unknown_task_card_and_resume_of_nothing(tmp_path):
    one_line_exit_2(run("design", "no-such-card", "--model", "openai/x"), "no task card")
    one_line_exit_2(run("resume", str(tmp_path)), "no run")


def test_check_exit_codes_and_json(tmp_path):
    good = ROOT / "examples" / "my_reward.py"
    ok = run("check", str(good), "--env", "HalfCheetah-v5", "--json")
    assert ok.returncode == 0, ok.stderr
    import json

    report = json.loads(ok.stdout)
    assert report["ok"] is True and set(report["probe"]["components"]) == {"forward", "ctrl_cost"}
    nan = tmp_path / "nan.py"
    nan.write_text("import torch\ndef compute_reward(state, action):\n    r = torch.full((state.n,), float('nan'))\n"
                   "    return r, {'r': r}\n")
    rejected = run("check", str(nan), "--env", "HalfCheetah-v5")
    assert rejected.returncode == 1 and "NaN" in rejected.stderr


def test_tasks_lists_the_cards():
    proc = run("tasks")
    assert proc.returncode == 0
    for card in (ROOT / "envs").glob("*.yaml"):
        assert card.stem[:15] in proc.stdout


@pytest.mark.parametrize("columns", ["80", "40"])
def test_tasks_never_cuts_a_card_name(columns):
    proc = run("tasks", env={"COLUMNS": columns})
    assert proc.returncode == 0, proc.stderr
    names = {ln.split("│")[1].strip() for ln in proc.stdout.splitlines() if ln.startswith("│")} - {""}
    assert names == {card.stem for card in (ROOT / "envs").glob("*.yaml")}, proc.stdout


NO_BWRAP = {"RD_SANDBOX_NO_BWRAP": "1"}


def test_without_bubblewrap_each_missing_layer_is_said_once_naming_only_real_flags(tmp_path):
    doctor = run("doctor", env={**NO_BWRAP, "COLUMNS": "200"})
    assert doctor.returncode == 0
    row = next(ln for ln in doctor.stdout.splitlines() if "namespaces" in ln)
    assert " no " in row and "RD_SANDBOX_NO_BWRAP=1" in row
    assert run("doctor", "--require-sandbox", env=NO_BWRAP).returncode == 2

    card = tmp_path / "card.yaml"
    card.write_text("name: x\nenv_id: Pendulum-v1\ndescription: swing up\nfitness:\n  code: |\n"
                    "    def compute_fitness(state, action):\n        return state.body('nope').pos[:, 0]\n")
    design = run("design", str(card), "--replay", DEMO_REPLIES, "--out", str(tmp_path / "r"), env=NO_BWRAP)
    one_line_exit_2(design, "unusable")
    assert design.stderr.count("bubblewrap is not used: RD_SANDBOX_NO_BWRAP=1 is set") == 1, design.stderr
    one_line_exit_2(run("design", str(card), "--replay", DEMO_REPLIES, "--require-sandbox",
                        "--out", str(tmp_path / "r2"), env=NO_BWRAP), "--require-sandbox", "namespaces")

    reward = tmp_path / "reward.py"
    reward.write_text(PEND_REWARD)
    for command in (["check", str(reward), "--env", "Pendulum-v1"], ["design", str(card), "--replay", DEMO_REPLIES,
                                                                   "--out", str(tmp_path / "r3")]):
        proc = run(*command, env=NO_BWRAP)
        warnings = "\n".join(ln for ln in proc.stderr.splitlines() if "sandbox" in ln or "confined" in ln)
        assert "RD_SANDBOX_NO_BWRAP=1" in warnings, proc.stderr
        each_missing_layer_once(proc.stderr)
        helps = run(command[0], "--help", env={"COLUMNS": "200"}).stdout
        for flag in re.findall(r"--[a-z][a-z-]*", warnings):
            assert flag in helps, f"{command[0]}'s sandbox warning names {flag}, which it does not have"


def test_the_nobwrap_part_of_the_suite_passes_without_bubblewrap():
    """CI installs bubblewrap; this runs the tests marked nobwrap once more as on a machine without it."""
    from reward_designer.sandbox import doctor

    if "namespaces" not in {s.name for s in doctor() if s.active}:
        pytest.skip("no bubblewrap here: the suite itself is the run without it")
    files = {p: p.read_text() for p in sorted((ROOT / "tests").glob("test_*.py"))}
    marked = [str(p) for p, text in files.items() if "mark.nobwrap" in text]
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "nobwrap", "-p", "no:cacheprovider", *marked],
                          capture_output=True, text=True, cwd=ROOT, timeout=900, env={**os.environ, **NO_BWRAP})
    assert proc.returncode == 0, proc.stdout[-4000:]
    passed = re.search(r"(\d+) passed", proc.stdout)
    expected = sum(text.count("@pytest.mark.nobwrap\n") for text in files.values())  # every marked test ran
    assert expected >= 3 and passed and int(passed.group(1)) == expected, proc.stdout[-4000:]


ISSUE_OPTIONS = {
    "design": ["--env", "--task", "--model", "--api-base", "--iterations", "--samples", "--train-steps", "--out",
               "--seed", "--device", "--workers", "--llm-critic", "--fitness", "--require-sandbox", "--set"],
    "check": ["--env", "--json"],
    "train": ["--env", "--steps", "--out", "--seed", "--device", "--set"],
    "resume": [],
    "tasks": [],
    "doctor": ["--require-sandbox"],
}


@pytest.mark.parametrize("command", sorted(ISSUE_OPTIONS))
def test_help_lists_each_option(command):
    proc = run(command, "--help", env={"COLUMNS": "200"})
    assert proc.returncode == 0
    for opt in ISSUE_OPTIONS[command]:
        assert opt in proc.stdout, f"{command} --help lacks {opt}"


def test_readme_commands_use_only_real_options():
    """Every `reward-designer CMD ... --opt` in the README is an option that CMD's help lists."""
    readme = (ROOT / "README.md").read_text().replace("\\\n", " ")
    top = run("--help", env={"COLUMNS": "200"}).stdout
    helps: dict[str, str] = {}
    uses = re.findall(r"reward-designer (\w+)([^\n`#]*)", readme)
    assert len(uses) >= 8
    for command, rest in uses:
        assert command in top, f"README uses unknown command {command}"
        if command not in helps:
            helps[command] = run(command, "--help", env={"COLUMNS": "200"}).stdout
        for opt in re.findall(r"(--[a-z][a-z-]*)", rest):
            assert opt in helps[command], f"README: `{command} {opt}` is not in its --help"


def test_env_our_ppo_cannot_act_in(tmp_path):
    """Discrete actions or observations: refused up front, before any LLM call or run folder."""
    out = tmp_path / "r"
    one_line_exit_2(run("design", "--env", "CartPole-v1", "--task", "balance", "--model", "openai/x",
                        "--out", str(out)), "CartPole-v1", "continuous (Box) actions", "Discrete(2)")
    assert not out.exists()
    reward = tmp_path / "reward.py"
    reward.write_text("def compute_reward(state, action):\n    r = state.obs[:, 0]\n    return r, {'r': r}\n")
    one_line_exit_2(run("check", str(reward), "--env", "FrozenLake-v1"), "FrozenLake-v1", "Box observations")
    one_line_exit_2(run("train", str(reward), "--env", "CartPole-v1", "--out", str(out)), "CartPole-v1", "Discrete(2)")
    assert not out.exists()


PEND_REWARD = "def compute_reward(state, action):\n    r = state.obs[:, 0]\n    return r, {'r': r}\n"
DEMO_REPLIES = str(ROOT / "examples" / "demo" / "replies.yaml")


@pytest.mark.nobwrap
def test_a_broken_success_check_is_refused_before_any_llm_call_or_training(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("name: x\nenv_id: Pendulum-v1\ndescription: swing up\nfitness:\n  code: |\n"
                    "    def compute_fitness(state, action):\n        return state.body('nope').pos[:, 0]\n")
    proc = run("design", str(card), "--replay", DEMO_REPLIES, "--out", str(tmp_path / "r"))
    one_line_exit_2(proc, "success check", "unusable", "no body named 'nope'")
    calls = tmp_path / "r" / "llm" / "calls.jsonl"
    assert not calls.exists() or not calls.read_text().strip()
    assert not list((tmp_path / "r").glob("iter_*"))

    reward = tmp_path / "reward.py"
    reward.write_text(PEND_REWARD)
    scalar = tmp_path / "scalar.py"
    scalar.write_text("def compute_fitness(state, action):\n    return 1.0\n")
    proc = run("train", str(reward), "--env", "Pendulum-v1", "--fitness", str(scalar), "--out", str(tmp_path / "t"))
    one_line_exit_2(proc, "--fitness", "one value per env")
    assert not (tmp_path / "t" / "train").exists()
    median = tmp_path / "median.py"
    median.write_text('AGGREGATE = "median"\ndef compute_fitness(state, action):\n    return state.obs[:, 0]\n')
    one_line_exit_2(run("train", str(reward), "--env", "Pendulum-v1", "--fitness", str(median)), "AGGREGATE", "'mean'")


def test_env_that_cannot_be_made_and_unusable_out_folders(tmp_path):
    card = tmp_path / "card.yaml"
    card.write_text("name: x\nenv_id: Pendulum-v1\ndescription: swing up\nenv_kwargs: {nonsense_kwarg: 3}\n")
    one_line_exit_2(run("design", str(card), "--replay", DEMO_REPLIES, "--out", str(tmp_path / "r")),
                    "Pendulum-v1", "cannot make it", "nonsense_kwarg")
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    one_line_exit_2(run("design", "--env", "Pendulum-v1", "--task", "swing up", "--replay", DEMO_REPLIES,
                        "--out", str(a_file / "run")), "cannot create the run folder")
    reward = tmp_path / "reward.py"
    reward.write_text(PEND_REWARD)
    one_line_exit_2(run("train", str(reward), "--env", "Pendulum-v1", "--out", str(a_file)), "--out")


def test_resume_checks_the_machine_again(tmp_path):
    import json

    import torch

    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    from reward_designer import load_task
    from reward_designer.run import Run, RunConfig

    out = tmp_path / "r"  # a stopped run made on a GPU machine
    Run.create(out, RunConfig(task=load_task("pendulum-upright"), replay=DEMO_REPLIES, device="cuda"))
    one_line_exit_2(run("resume", str(out)), "--device cuda", "no CUDA")
    assert json.loads((out / "run.json").read_text())["status"] == "running"  # untouched: never started


def test_version():
    from reward_designer import __version__

    proc = run("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"reward-designer {__version__}"


def test_each_custom_task_gets_its_own_default_folder():
    from reward_designer.cli import custom_task_name

    run_fwd, run_back = custom_task_name("HalfCheetah-v5", "run forward"), custom_task_name("HalfCheetah-v5", "run back")
    assert run_fwd != run_back and run_fwd.startswith("halfcheetah-")
    assert custom_task_name("HalfCheetah-v5", " run forward ") == run_fwd
    assert custom_task_name("mypkg:MyCheetah-v0", "run").startswith("mycheetah-")


def test_set_overrides_ppo_hyperparameters_and_bad_ones_are_refused_up_front(tmp_path):
    reward = tmp_path / "reward.py"
    reward.write_text(PEND_REWARD)
    for pair, words in (("lr", ("expected KEY=VALUE",)), ("lrr=1e-4", ("unknown", "lrr")),
                        ("lr=fast", ("lr", "valid number")), ("hidden=32", ("hidden", "array")),
                        ("num_envs='4'", ("num_envs", "integer")), ("gamma=2", ("gamma", "(0, 1]")),
                        ("seed=3", ("seed", "--seed")), ("activation=gelu", ("activation", "relu"))):
        one_line_exit_2(run("train", str(reward), "--env", "Pendulum-v1", "--set", pair, "--out", str(tmp_path / "t")),
                        *words)
        assert not (tmp_path / "t").exists()
    one_line_exit_2(run("design", "--env", "Pendulum-v1", "--task", "swing up", "--replay", DEMO_REPLIES,
                        "--set", "num_envs=0.5", "--out", str(tmp_path / "r")), "num_envs", "integer")
    assert not (tmp_path / "r").exists()
    card = tmp_path / "card.yaml"  # a task card's own overrides are checked alike
    card.write_text("name: x\nenv_id: Pendulum-v1\ndescription: swing up\nppo: {gamma: high}\n")
    one_line_exit_2(run("design", str(card), "--replay", DEMO_REPLIES, "--out", str(tmp_path / "r")),
                    "not a valid task card", "gamma")
    assert not (tmp_path / "r").exists()

    out = tmp_path / "ok"
    proc = run("train", str(reward), "--env", "Pendulum-v1", "--steps", "512", "--out", str(out),
               "--set", "hidden=(16, 16)", "--set", "num_envs=4", "--set", "num_steps=32", "--set", "activation=relu")
    assert proc.returncode == 0, proc.stderr
    import numpy as np

    policy = np.load(out / "train" / "policy.npz")
    assert policy["actor.0.weight"].shape == (16, 3) and policy["critic.2.weight"].shape == (16, 16)
    assert "trained 512 steps" in proc.stderr  # 4 updates of 4 envs x 32 steps, not the base preset's 2048
