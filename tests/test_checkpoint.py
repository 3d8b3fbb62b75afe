"""A training paused and continued from its checkpoint ends where an unbroken one ends, bit for bit;
a training killed half-way continues from its last checkpoint, not from zero."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from reward_designer import ppo, trainer
from reward_designer.algorithms import Checkpoints
from reward_designer.ppo_config import PPOConfig
from reward_designer.runfolder import CandidateFolder
from reward_designer.sim import make_vecsim
from reward_designer.trainer import Trainer

# Hopper: its episodes end (falls) within a rollout, so envs reset with their own RNG mid-training.
ENV = "Hopper-v5"
CFG = dict(total_steps=4 * 64 * 5, num_envs=4, num_steps=64, seed=3)


def forward(prev, now, actions, done):
    """A reward on the snapshots, as a program's: forward velocity less a control cost."""
    return torch.as_tensor(now["qvel"][:, 0]) - 0.1 * (actions**2).sum(1)


def weights(policy) -> dict[str, np.ndarray]:
    return {k: v.detach().numpy().copy() for k, v in policy.state_dict().items()}


def train(cfg: PPOConfig, checkpoints: Checkpoints | None = None, resume: dict | None = None, log=None):
    # Two slabs and (where there are two cores) the forked learner: their state lives in other processes.
    sim = make_vecsim(ENV, cfg.num_envs, cfg.seed, slabs=2)
    try:
        learner = ppo.make_learner(sim, cfg, resume=resume)
        return weights(ppo.train(sim, cfg, reward_fn=forward, learner=learner, checkpoints=checkpoints,
                                 on_iteration=log))
    finally:
        sim.close()


@pytest.fixture(scope="module")
def unbroken():
    steps = []
    return train(PPOConfig(**CFG), log=lambda s: steps.append(s["global_step"])), steps


def test_a_training_paused_and_continued_ends_with_the_weights_of_one_that_ran_through(tmp_path, unbroken):
    whole, whole_steps = unbroken
    cfg, path = PPOConfig(**CFG), tmp_path / "checkpoint.npz"
    first, second = [], []
    paused = train(cfg, Checkpoints(path, stop_at=2 * 256), log=lambda s: first.append(s["global_step"]))
    assert first == [256, 512]  # it stopped at the update that reached stop_at
    saved = ppo.load_checkpoint(path)
    assert int(saved["global_step"]) == 512 and "collector/sim/mj_state" in saved
    assert any(not np.array_equal(paused[k], whole[k]) for k in whole)  # mid-way, not at the end yet

    resumed = train(cfg, Checkpoints(path, resume=saved), resume=saved, log=lambda s: second.append(s["global_step"]))
    assert first + second == whole_steps
    for k in whole:
        assert np.array_equal(resumed[k], whole[k]), k


def test_continuing_with_the_simulator_restarted_instead_of_restored_differs(tmp_path, unbroken):
    """The simulator's envs are part of the state: without them the continued training is another one
    (so the test above could fail)."""
    whole, _ = unbroken
    cfg, path = PPOConfig(**CFG), tmp_path / "checkpoint.npz"
    train(cfg, Checkpoints(path, stop_at=2 * 256))
    saved = {k: v for k, v in ppo.load_checkpoint(path).items() if not k.startswith("collector/sim/")}
    resumed = train(cfg, Checkpoints(path, resume=saved), resume=saved)
    assert any(not np.array_equal(resumed[k], whole[k]) for k in whole)


def test_a_checkpoint_of_another_training_or_format_is_refused(tmp_path):
    cfg, path = PPOConfig(**CFG), tmp_path / "checkpoint.npz"
    train(cfg, Checkpoints(path, stop_at=256))
    saved = ppo.load_checkpoint(path)
    sim = make_vecsim(ENV, 4, 0, slabs=1)
    try:
        with pytest.raises(ValueError, match="another training: its lr, seed differ"):
            ppo.make_learner(sim, PPOConfig(**{**CFG, "seed": 4, "lr": 1e-3}), resume=saved)
        with pytest.raises(ValueError, match="learner made with it"):
            ppo.train(sim, cfg, learner=ppo.make_learner(sim, cfg), checkpoints=Checkpoints(path, resume=saved))
    finally:
        sim.close()
    np.savez(tmp_path / "other.npz", x=np.zeros(3))
    with pytest.raises(ValueError, match="not a checkpoint"):
        ppo.load_checkpoint(tmp_path / "other.npz")


def test_the_simulator_refuses_a_state_that_does_not_fit_its_envs():
    sim = make_vecsim(ENV, 4, 0, slabs=2)
    try:
        sim.reset(0)
        state = sim.save_state()
        state["obs"] = state["obs"][:3]
        with pytest.raises(ValueError, match="'obs' does not fit 4 Hopper"):
            sim.load_state(state)
    finally:
        sim.close()


def test_a_training_killed_half_way_continues_from_its_last_checkpoint(tmp_path, monkeypatch):
    """Killed (as a stopping run kills its worker) after a checkpoint, the next training in the folder
    takes it up: its log goes on from the checkpoint's step, each step once."""
    monkeypatch.setattr(trainer, "CHECKPOINT_EVERY", 2)
    t = Trainer(ENV, 4 * 64 * 400, seed=1, ppo={"num_envs": 4, "num_steps": 64})
    cand = CandidateFolder(tmp_path / "cand")

    class Kill(Exception):
        pass

    def kill_after_a_checkpoint(step: int) -> None:
        if cand.checkpoint.is_file():
            raise Kill

    with pytest.raises(Kill):
        t.train(None, cand.train, on_progress=kill_after_a_checkpoint)
    assert cand.finished_training() is None
    killed_at = int(ppo.load_checkpoint(cand.checkpoint)["global_step"])

    # The rest of the budget in a second job: stop it early too, to keep this test short.
    out = t.train(None, cand.train, stop_at_steps=killed_at + 4 * 256)
    assert out.ok, out.problem or out.result.error
    assert out.result.resumed_at == killed_at > 0
    assert not out.result.complete and out.result.steps == killed_at + 4 * 256
    steps = [json.loads(line)["global_step"] for line in cand.progress.read_text().splitlines()]
    assert steps == list(range(256, out.result.steps + 1, 256))  # continuous: nothing lost, nothing twice
    assert cand.finished_training() is None and cand.training_result() == out.result
