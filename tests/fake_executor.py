"""An in-process stand-in for the sandboxed executor: the design loop's logic, tested in seconds."""

from __future__ import annotations

import json
import re
import threading
from concurrent.futures import Future
from pathlib import Path

import numpy as np

from reward_designer.executor import Cancelled
from reward_designer.jobs import JobOutcome
from reward_designer.sandbox import Outcome
from reward_designer.schemas import (
    AnalyzeResult,
    EpisodeStats,
    ProbeResult,
    ResultEnvelope,
    RewardEvalResult,
    TrainResult,
)


def program(score: float, broken: bool = False) -> str:
    """A reply whose program the fake executor scores ``score`` (and whose probe fails if ``broken``)."""
    body = "    raise RuntimeError('broken')\n" if broken else "    r = state.obs[:, 0]\n    return r, {'r': r}\n"
    return f"```python\nimport torch\n\nSCORE = {score}\n\ndef compute_reward(state, action):\n{body}```"


class FakeExecutor:
    """Runs no worker: answers each job as a sandboxed worker would, from the program's ``SCORE``.

    The score travels the way a real one does: the training writes it into the policy file, and the
    rollout reads it from there, never from the program.
    """

    def __init__(self, slots: int = 2):
        self.slots, self.jobs = slots, []
        self._cancelled = threading.Event()
        self._lock = threading.Lock()

    def submit(self, job, workdir, limits, *, poll=None, read_only=()) -> Future:
        future = Future()
        try:
            future.set_result(self.run(job, workdir, limits, poll=poll, read_only=read_only))
        except Exception as exc:  # noqa: BLE001 - as a real future holds it
            future.set_exception(exc)
        return future

    def run(self, job, workdir, limits, *, poll=None, read_only=()) -> JobOutcome:
        self.raise_if_cancelled()
        with self._lock:
            self.jobs.append(job.kind)
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        if poll is not None:
            poll()
        return JobOutcome(result=getattr(self, job.kind)(job, workdir), sandbox=Outcome(returncode=0))

    def cancel(self) -> None:
        self._cancelled.set()

    def raise_if_cancelled(self) -> None:
        if self._cancelled.is_set():
            raise Cancelled("stopped")

    @staticmethod
    def probe(job, workdir):
        if "broken" in job.code:
            return ProbeResult(ok=False, error="RuntimeError: broken")
        components = {} if job.entry == "compute_fitness" else {"r": 0.5}
        return ProbeResult(ok=True, reward_shape=[8], reward_dtype="torch.float32", finite=True, constant=False,
                           components=components, component_sum_gap=0.0 if components else None,
                           reward_mean=0.5, reward_std=0.1, ms_per_call=0.1)

    def train(self, job, workdir):
        return self.trained_to(float(re.search(r"SCORE = ([-\d.]+)", job.code).group(1)), job, workdir)

    @staticmethod
    def trained_to(score: float, job, workdir):
        """What a training that reached ``score`` leaves: its policy, log and result."""
        np.savez(workdir / "policy.npz", score=score)
        (workdir / "progress.jsonl").write_text(json.dumps({"global_step": job.total_steps, "fitness": score}) + "\n")
        result = TrainResult(ok=True, steps=job.total_steps, seconds=1.0, steps_per_second=float(job.total_steps),
                             policy=str(workdir / "policy.npz"))
        (workdir / "result.json").write_text(ResultEnvelope(result=result).model_dump_json())
        return result

    @staticmethod
    def analyze(job, workdir):
        with np.load(job.policy) as saved:  # a policy no fake trained (an untrained network) scores 0
            score = float(saved["score"]) if "score" in saved.files else 0.0
        np.savez(job.record, episodes=job.episodes)
        episode = EpisodeStats(fitness=score, length=3, terminated=False, env_return=0.0, step_fitness=[score / 3] * 3)
        return AnalyzeResult(ok=True, episodes=[episode] * job.episodes)

    @staticmethod
    def reward_eval(job, workdir):
        n = int(np.load(job.trajectories)["episodes"])
        return RewardEvalResult(ok=True, episode_reward=[3.0] * n, step_reward=[[0.5, 1.0, 1.5]] * n,
                                components={"r": [1.0] * n}, component_thirds={"r": [0.5, 1.0, 1.5]})
