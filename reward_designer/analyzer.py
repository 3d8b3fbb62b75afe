"""Analyzer: what a trained policy did, turned into feedback for the next round.

The rollouts and the fitness are measured in a worker that loads only the
policy's weights and the fitness, never the reward program, so a program
cannot change its own score. The program is then evaluated, in a worker of
its own, on the recorded trajectories for its components and its correlation
with the fitness (Eureka's reward reflection; a low or negative correlation
is how reward hacking shows).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
from pydantic import BaseModel

from . import templates
from .jobs import run_job
from .sandbox import Limits, copy_output
from .schemas import AnalyzeJob, FitnessSpec, RewardEvalJob, TaskSpec
from .trainer import read_progress


class ComponentStat(BaseModel):
    name: str
    mean: float  # per step, over the evaluation episodes
    thirds: list[float]  # mean over the first, middle and last third of the episodes


class Analysis(BaseModel):
    ok: bool
    error: str = ""
    episodes: int = 0
    fitness: list[float] = []
    fitness_mean: float | None = None  # None: not measured
    fitness_std: float = 0.0
    length_mean: float = 0.0
    terminated: int = 0
    env_return_mean: float = 0.0
    reward_mean: float = 0.0
    reward_nonfinite: int = 0  # evaluation steps where the reward was NaN or infinite
    step_correlation: float | None = None  # reward vs fitness, per step; None where either is constant
    components: list[ComponentStat] = []
    training_curve: list[dict] = []  # a few rows of the training log (fitness, components over steps)
    feedback: str = ""  # the LLM's failure analysis and suggestions, when asked
    reflection: str = ""  # the numbers, as the designer reads them

    @property
    def step_correlation_text(self) -> str:
        return "undefined (one of them is constant)" if self.step_correlation is None else f"{self.step_correlation:.2f}"

    @property
    def hacking_suspect(self) -> bool:
        return self.step_correlation is not None and self.step_correlation < 0


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def thin(rows: list[dict], keep: int = 6) -> list[dict]:
    """A few evenly spaced rows of a training log, last included."""
    if len(rows) <= keep:
        return rows
    idx = np.linspace(0, len(rows) - 1, keep).round().astype(int)
    return [rows[i] for i in idx]


class Analyzer:
    def __init__(
        self,
        env_id: str,
        fitness: FitnessSpec,
        env_kwargs: dict | None = None,
        episodes: int = 5,
        seed: int = 12345,
        llm=None,
        task: TaskSpec | None = None,
        limits: Limits | None = None,
        require_sandbox: bool = False,
    ):
        self.env_id, self.fitness, self.env_kwargs = env_id, fitness, env_kwargs or {}
        self.episodes, self.seed, self.llm, self.task = episodes, seed, llm, task
        self.limits = limits or Limits(wall_s=300, cpu_s=600, memory_mb=4096)
        self.require_sandbox = require_sandbox

    def analyze(self, code: str | None, policy: Path, workdir: Path, train_log: Path | None = None,
                tag: str = "", stop: Callable[[], None] | None = None) -> Analysis:
        """``tag``: where in a run the LLM is asked for feedback (see ``LLMClient.complete``).
        ``stop`` is called while the workers run and before the LLM call; if it raises, the worker
        is killed (no LLM call is made) and the exception goes on."""
        # Each worker sees only its own folder: the inputs are copied in. Paths are
        # absolute because a worker runs in its own folder.
        workdir = workdir.resolve()
        rollout_dir = workdir / "rollout"
        rollout_dir.mkdir(parents=True, exist_ok=True)
        copy_output(policy, rollout_dir / "policy.npz")
        rollout = run_job(
            AnalyzeJob(env_id=self.env_id, env_kwargs=self.env_kwargs, seed=self.seed,
                       policy=str(rollout_dir / "policy.npz"), fitness=self.fitness, episodes=self.episodes,
                       record=str(rollout_dir / "trajectories.npz")),
            rollout_dir, self.limits, poll=stop, require_sandbox=self.require_sandbox,
        )
        if not rollout.ok:
            return Analysis(ok=False, error=rollout.problem or rollout.result.error)
        eps = rollout.result.episodes
        fitness = np.array([e.fitness for e in eps])
        analysis = Analysis(
            ok=True, episodes=len(eps), fitness=fitness.tolist(), fitness_mean=float(fitness.mean()),
            fitness_std=float(fitness.std()), length_mean=float(np.mean([e.length for e in eps])),
            terminated=sum(e.terminated for e in eps), env_return_mean=float(np.mean([e.env_return for e in eps])),
            training_curve=thin(read_progress(train_log)) if train_log else [],
        )
        if code is not None:
            self._reflect(analysis, code, eps, workdir, stop)
        analysis.reflection = templates.render("reflection.j2", a=analysis)
        if self.llm is not None and self.task is not None and code is not None:
            if stop is not None:
                stop()
            chat = [{"role": "user", "content": templates.render(
                "analyzer.j2", task=self.task, code=code, episodes=analysis.episodes, reflection=analysis.reflection)}]
            analysis.feedback = self.llm.complete(chat, n=1, purpose="analyze", temperature=0.3,
                                               tag=tag)[0].text.strip()
        return analysis

    def _reflect(self, analysis: Analysis, code: str, eps, workdir: Path, stop: Callable[[], None] | None) -> None:
        """The program's own view of the rollouts: its components and how its reward tracks the fitness."""
        eval_dir = workdir / "reward_eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        copy_output(workdir / "rollout" / "trajectories.npz", eval_dir / "trajectories.npz")
        out = run_job(
            RewardEvalJob(env_id=self.env_id, env_kwargs=self.env_kwargs, code=code,
                          trajectories=str(eval_dir / "trajectories.npz")),
            eval_dir, self.limits, poll=stop, require_sandbox=self.require_sandbox,
        )
        if not out.ok:
            analysis.error = "the reward program failed on the evaluation rollouts: " + (
                out.problem or out.result.error)
            return
        r = out.result
        if len(r.step_reward) != len(eps) or any(len(s) != e.length for s, e in zip(r.step_reward, eps)):
            analysis.error = "the reward evaluation returned the wrong number of steps"
            return
        analysis.reward_mean = float(np.mean(r.episode_reward))
        analysis.reward_nonfinite = r.nonfinite
        analysis.step_correlation = correlation(
            np.concatenate([np.asarray(s, dtype=float) for s in r.step_reward]),
            np.concatenate([np.asarray(e.step_fitness, dtype=float) for e in eps]),
        )
        analysis.components = [
            ComponentStat(name=k, mean=float(np.mean(v)), thirds=r.component_thirds.get(k, []))
            for k, v in r.components.items()
        ]
