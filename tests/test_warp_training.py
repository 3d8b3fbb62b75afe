"""Training candidates on MuJoCo Warp (``--sim warp``): the kernels are compiled once, in a
worker that loads no program, and every training loads them read-only. On Warp's CPU backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from reward_designer.program import fitness_from_code
from reward_designer.sandbox import doctor
from reward_designer.trainer import Trainer

pytest.importorskip("mujoco_warp")
pytestmark = pytest.mark.filterwarnings("ignore")

ROOT = Path(__file__).resolve().parents[1]
REWARD = (ROOT / "examples" / "my_reward.py").read_text()
FITNESS = fitness_from_code((ROOT / "examples" / "fitness_forward.py").read_text(), "file")
SMALL = {"num_envs": 8, "num_steps": 16, "num_minibatches": 2, "update_epochs": 1}
needs_bwrap = pytest.mark.skipif("namespaces" not in {s.name for s in doctor() if s.active},
                                 reason="bubblewrap is not usable here")


def listing(folder: Path) -> dict[str, int]:
    """Every file under ``folder`` with its modification time."""
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*") if p.is_file()}


# Warp's CPU backend everywhere; a GPU too where there is one (the sandbox, CUDA and Warp together).
DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(),
                                                                reason="no CUDA device here"))]


def cli(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "REWARD_DESIGNER_MODEL"}
    return subprocess.run([sys.executable, "-m", "reward_designer.cli", *args], capture_output=True, text=True,
                          env=env, timeout=300)


@pytest.fixture(scope="module", params=DEVICES)
def designed(request, tmp_path_factory):
    """The README's demo, one round, on MuJoCo Warp: (device, run folder, the CLI's process). Its kernels,
    compiled once for the run (tens of seconds on a CPU), serve the module's other trainings too."""
    out = tmp_path_factory.mktemp("design") / "run"  # mktemp's own folder is 0700: a worker cannot enter it
    proc = cli("design", "halfcheetah-run", "--replay", str(ROOT / "examples" / "demo" / "replies.yaml"),
               "--iterations", "1", "--samples", "2", "--train-steps", "1000", "--episodes", "1",
               "--sim", "warp", "--device", request.param, "--out", str(out), "-q")
    return request.param, out, proc


@pytest.fixture(scope="module")
def prepared(designed):
    """A trainer on the design run's kernel folder."""
    device, out, _ = designed
    trainer = Trainer("HalfCheetah-v5", 256, seed=0, device=device, ppo=SMALL, sim="warp", kernel_dir=out / "warp")
    trainer.prepare()
    return trainer, out / "warp" / "kernels"


def test_trainings_load_the_kernels_compiled_once(prepared, tmp_path):
    trainer, kernels = prepared
    before = listing(kernels)
    assert any(name.endswith(".meta") for name in before), "the warm-up compiled nothing"
    trainer.prepare()  # a second call compiles nothing: the same trainer, the same folder
    for name, code, fitness in (("designed", REWARD, FITNESS), ("env_reward", None, None)):
        outcome = trainer.train(code, tmp_path / name, fitness)
        assert outcome.ok, outcome.problem or outcome.result.error
        assert outcome.result.steps == trainer.planned_steps == 256  # 8 worlds x 16 steps x 2 updates
        assert (tmp_path / name / "policy.npz").is_file()
        job = json.loads((tmp_path / name / "job.json").read_text())["job"]
        assert job["sim"] == "warp" and job["kernel_cache"] == str(kernels.resolve())
    rows = [json.loads(line) for line in (tmp_path / "designed" / "progress.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in rows] == [128, 256]
    # Episodes are 1000 steps: none ended, so no per-episode fitness yet; the log has the losses.
    assert all(np.isfinite(r["value_loss"]) for r in rows)
    assert listing(kernels) == before, "a training compiled or changed kernels"


@needs_bwrap
def test_a_training_cannot_change_the_kernels_the_next_one_loads(prepared, tmp_path):
    trainer, kernels = prepared
    before = listing(kernels)
    planted = kernels / "planted.txt"
    hostile = f"def compute_reward(state, action):\n    open({str(planted)!r}, 'w').write('x')\n" \
              "    return state.obs[:, 0], {'x': state.obs[:, 0]}\n"
    outcome = trainer.train(hostile, tmp_path / "hostile")
    assert outcome.result is not None and not outcome.result.ok
    assert "Read-only file system" in outcome.result.error
    assert not planted.exists()
    assert listing(kernels) == before


def test_an_env_warp_cannot_run_is_refused_before_any_training(tmp_path):
    trainer = Trainer("InvertedPendulum-v5", 256, device="cpu", sim="warp", kernel_dir=tmp_path / "warp")
    with pytest.raises(ValueError, match="MuJoCo Warp: the 'warp' backend runs the standard"):
        trainer.prepare()
    with pytest.raises(ValueError, match="InvertedPendulum"):  # a training tries the compile again first
        trainer.train(None, tmp_path / "train")
    # With no kernel folder each training compiles its own kernels, and says why it cannot.
    outcome = Trainer("InvertedPendulum-v5", 256, device="cpu", sim="warp").train(None, tmp_path / "train")
    assert outcome.result is not None and not outcome.result.ok
    assert "InvertedPendulum-v5" in outcome.result.error


def test_design_with_sim_warp_stops_before_any_llm_call_on_an_env_warp_cannot_run(tmp_path):
    proc = cli("design", "--env", "InvertedPendulum-v5", "--task", "balance the pole", "--sim", "warp",
               "--device", "cpu", "--fitness", str(ROOT / "examples" / "fitness_forward.py"),
               "--replay", str(ROOT / "examples" / "demo" / "replies.yaml"), "--out", str(tmp_path / "run"))
    assert proc.returncode == 2, proc.stderr
    last = [ln for ln in proc.stderr.splitlines() if ln.strip()][-1]
    assert last.startswith("error: MuJoCo Warp:") and "InvertedPendulum" in last, proc.stderr
    assert not (tmp_path / "run" / "llm" / "calls.jsonl").exists()


def test_sim_warp_without_the_extra_is_one_line_and_exit_2(tmp_path):
    # A stand-in for a machine without the extra: mujoco_warp's spec is hidden in the child.
    code = ("import importlib.util, sys; real = importlib.util.find_spec\n"
            "importlib.util.find_spec = lambda name, *a: None if name == 'mujoco_warp' else real(name, *a)\n"
            "from reward_designer.cli import app; sys.argv[0] = 'reward-designer'; app()")
    proc = subprocess.run([sys.executable, "-c", code, "train", str(ROOT / "examples" / "my_reward.py"),
                           "--env", "HalfCheetah-v5", "--sim", "warp", "--out", str(tmp_path / "t")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == "error: --sim warp needs MuJoCo Warp: pip install 'reward-designer[warp]'"


@pytest.mark.slow
def test_a_design_run_trains_its_candidates_on_warp(designed):
    """Kernels compiled once, every candidate trained on the batch."""
    _, out, proc = designed
    assert proc.returncode == 0, proc.stderr
    record = json.loads((out / "run.json").read_text())
    assert record["status"] == "done" and record["config"]["sim"] == "warp"
    trained = [c for c in record["candidates"] if c["status"] == "trained"]
    assert len(trained) == 2 and all(c["fitness"] is not None for c in trained)
    kernels = (out / "warp" / "kernels").resolve()
    assert any(kernels.rglob("*.meta"))
    for c in trained:
        job = json.loads((out / f"iter_01/cand_{c['index']:02d}/train/job.json").read_text())["job"]
        assert job["sim"] == "warp" and job["kernel_cache"] == str(kernels)
        rows = (out / f"iter_01/cand_{c['index']:02d}/train/progress.jsonl").read_text().splitlines()
        assert json.loads(rows[-1])["global_step"] == 2048  # one rollout of the warp preset: 128 worlds x 16
