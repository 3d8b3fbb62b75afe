"""Where the PPO update runs: inline, or split with a forked twin process."""

import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from gymnasium.spaces import Box

from reward_designer.forked_learner import ForkedLearner
from reward_designer.ppo import Batch, Collector, Learner, PPOConfig, compute_gae, make_learner, make_policy, train
from reward_designer.twin import TwinDied
from reward_designer.sim import cpu_cores, make_vecsim

pytestmark = pytest.mark.filterwarnings("ignore")
needs_two_cores = pytest.mark.skipif(cpu_cores() < 2, reason="a forked learner wants a second core")
CFG = dict(total_steps=4 * 16 * 4, num_envs=4, num_steps=16, update_epochs=2)


@needs_two_cores
def test_forked_and_inline_learners_compute_the_same_update():
    # Same policy, same batches: two half-minibatch gradients averaged are the whole
    # minibatch's. Not bit for bit: sums run in another order (and MKL's depend on alignment).
    cfg = PPOConfig(**CFG)
    sim = make_vecsim("HalfCheetah-v5", cfg.num_envs, seed=0)
    inline, forked = Learner(make_policy(sim, cfg), cfg), make_learner(sim, cfg)
    assert isinstance(forked, ForkedLearner)
    collector = Collector(sim, inline.policy, cfg, None)
    try:
        for _ in range(3):
            ro = collector.collect(cfg.num_steps)
            with torch.no_grad():
                data = Batch.of(ro, *compute_gae(ro.rewards, ro.values, ro.dones, ro.last_value, 0.99, 0.95))
            got = forked.step(data, None)
            expected = inline.step(data, None)
            assert got.keys() == expected.keys()
            for k in expected:
                assert got[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-6), k
            for a, b in zip(forked.policy.parameters(), inline.policy.parameters()):
                torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    finally:
        forked.close()
        sim.close()


@needs_two_cores
@pytest.mark.parametrize("num_envs, num_steps", [(3, 11), (1, 5)])  # halves of 17 and 16, of 3 and 2
def test_forked_and_inline_learners_compute_the_same_update_on_odd_minibatches(num_envs, num_steps):
    # Each half's means are weighted by its share of the minibatch: equal weights would
    # overweight the smaller half. Advantages that grow across the batch make the halves differ.
    cfg = PPOConfig(num_envs=num_envs, num_steps=num_steps, num_minibatches=1, update_epochs=2, lr=1e-2,
                    desired_kl=None, anneal_lr=False)
    sim = SimpleNamespace(num_envs=num_envs, observation_space=Box(-np.inf, np.inf, (5,)),
                          action_space=Box(-1.0, 1.0, (2,)))
    b = num_envs * num_steps
    g = torch.Generator().manual_seed(0)
    values = torch.randn(b, generator=g)
    advantages = torch.randn(b, generator=g) + torch.linspace(0, 5, b)
    logp = -2.0 + 0.3 * torch.randn(b, generator=g)
    data = Batch(torch.randn(b, 5, generator=g), torch.randn(b, 2, generator=g), logp, values, advantages,
                 values + advantages)
    inline, forked = Learner(make_policy(sim, cfg), cfg), make_learner(sim, cfg)
    assert isinstance(forked, ForkedLearner)
    try:
        got, expected = forked.step(data, None), inline.step(data, None)
    finally:
        forked.close()
    for k in expected:
        assert got[k] == pytest.approx(expected[k], rel=1e-4, abs=1e-6), k
    for p, q in zip(forked.policy.parameters(), inline.policy.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)


@needs_two_cores
def test_a_forked_learner_is_refused_minibatches_under_two_samples_per_process():
    cfg = PPOConfig(num_envs=2, num_steps=4, num_minibatches=4, total_steps=8)  # minibatches of 2: 1 per process
    sim = make_vecsim("HalfCheetah-v5", cfg.num_envs, seed=0, slabs=1)
    learner = make_learner(sim, cfg)
    assert isinstance(learner, ForkedLearner)
    try:
        with pytest.raises(ValueError, match=r"minibatches of 2, under the 4 a minibatch needs \(2 for each of the "
                                             r"two processes that share it\)"):
            train(sim, cfg, learner=learner)
        assert learner.twin.pid == 0  # closed by train
    finally:
        sim.close()


def test_fork_learner_false_never_forks():
    cfg = PPOConfig(**CFG, fork_learner=False)
    sim = make_vecsim("HalfCheetah-v5", cfg.num_envs, seed=0)
    assert type(make_learner(sim, cfg)) is Learner
    sim.close()


@needs_two_cores
def test_a_killed_learner_is_an_error_not_a_hang():
    cfg = PPOConfig(**{**CFG, "total_steps": 4 * 16 * 8})
    sim = make_vecsim("HalfCheetah-v5", cfg.num_envs, seed=0)
    learner = make_learner(sim, cfg)

    def kill(stats):
        if stats["iteration"] == 2:
            os.kill(learner.twin.pid, signal.SIGKILL)

    with pytest.raises(TwinDied, match="SIGKILL"):
        train(sim, cfg, on_iteration=kill, learner=learner)
    assert learner.twin.pid == 0  # reaped
    sim.close()


@needs_two_cores
def test_an_update_that_raises_is_reported_with_its_traceback(monkeypatch):
    step = Learner.step

    def broken_in_the_twin(self, data, lr, peer=None):
        if peer is not None and peer.rank == 1:
            raise FloatingPointError("boom in the learner")
        return step(self, data, lr, peer)

    monkeypatch.setattr(Learner, "step", broken_in_the_twin)  # before the fork: the twin inherits it
    cfg = PPOConfig(**CFG)
    sim = make_vecsim("HalfCheetah-v5", cfg.num_envs, seed=0)
    learner = make_learner(sim, cfg)
    with pytest.raises(TwinDied, match="boom in the learner"):
        train(sim, cfg, learner=learner)
    assert learner.twin.pid == 0
    sim.close()


@needs_two_cores
def test_the_learner_exits_with_its_parent(tmp_path):
    # A parent that forks a learner and is then SIGKILLed: the learner must not outlive it.
    script = tmp_path / "parent.py"
    script.write_text(
        "import os, sys, time\n"
        "from reward_designer.ppo import PPOConfig, make_learner\n"
        "from reward_designer.sim import make_vecsim\n"
        "sim = make_vecsim('HalfCheetah-v5', 2, seed=0)\n"
        "learner = make_learner(sim, PPOConfig(num_envs=2, num_steps=4))\n"
        "print(learner.twin.pid, flush=True)\n"
        "time.sleep(60)\n"
    )
    parent = subprocess.Popen([sys.executable, "-W", "ignore", str(script)], stdout=subprocess.PIPE, text=True)
    child = int(parent.stdout.readline())
    assert _alive(child)
    parent.kill()
    parent.wait()
    for _ in range(100):
        if not _alive(child):
            break
        time.sleep(0.05)
    assert not _alive(child)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/status") as f:
            return "\nState:\tZ" not in f.read()  # a zombie waiting for init counts as gone
    except FileNotFoundError:
        return False


@needs_two_cores
def test_the_worker_confines_its_twins():
    from reward_designer.sandbox.seccomp import available

    if not available()[0]:
        pytest.skip("seccomp is not available here")
    code = (
        "from reward_designer.ppo import PPOConfig, make_learner\n"
        "from reward_designer.sandbox import confine_forked\n"
        "from reward_designer.sim import make_vecsim\n"
        "import time\n"
        "sim = make_vecsim('HalfCheetah-v5', 2, seed=0, on_fork=confine_forked)\n"
        "learner = make_learner(sim, PPOConfig(num_envs=2, num_steps=4), on_fork=confine_forked)\n"
        "time.sleep(1.0)\n"
        "for pid in (sim._twins[0].pid, learner.twin.pid):\n"
        "    status = open(f'/proc/{pid}/status').read()\n"
        "    print([l for l in status.splitlines() if l.startswith('Seccomp:')][0])\n"
        "learner.close()\n"
        "sim.close()\n"
    )
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["Seccomp:", "2"] * 2, out.stdout  # a seccomp filter is on, in both twins
