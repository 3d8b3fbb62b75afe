"""Analyzer: what a trained policy did, turned into feedback for the next round.

The rollouts and the fitness are measured in a worker that loads only the
policy's weights and the fitness, never the reward program, so a program
cannot change its own score. The program is then evaluated, in a worker of
its own, on the recorded trajectories for its components and its correlation
with the fitness (Eureka's reward reflection). Reward hacking is flagged where
the training log shows the reward rising while the fitness does not, or the
reward falls where the fitness rises. Which termination check ended each
terminated episode is read here, from the recorded states, with the env
card's checks (trusted env parameters; no program runs here).
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from . import templates
from .envcard import EnvCard
from .lint import reads_contacts
from .executor import Executor, LocalExecutor
from .records import AGAINST, Analysis, ComponentStat
from .sandbox import Limits, copy_output, read_output
from .schemas import AnalyzeJob, FitnessSpec, RewardEvalJob, TaskSpec
from .trainer import read_progress, thin

# A recorded rollout read here (written by a worker that ran the fitness): at most this much, packed
# or unpacked.
MAX_RECORD_BYTES = 256 << 20


def correlation(a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.std(a) < 1e-12 or np.std(b) < 1e-12:
        return None
    return float(np.corrcoef(a, b)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    """Ranks with ties averaged: a series flat at 0 has no trend."""
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x))
    _, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    return (np.bincount(inv, weights=ranks) / counts)[inv]


def trend(values: list[float]) -> float | None:
    """How steadily a series rises over training: its rank correlation with time (-1 .. 1)."""
    x = np.asarray(values, dtype=float)
    return correlation(_ranks(x), np.arange(len(x), dtype=float))


MIN_TREND_ROWS = 6  # fewer training log rows than this say nothing about a trend
def rose_alone(reward: list[float], fitness: list[float]) -> bool:
    """The reward rose steadily over training while the fitness did not: reward hacking, or a
    reward that does not lead to the task. The fitness counts as rising if its rank correlation
    with time is at least 0.3; flat (or constant) it is not."""
    if len(reward) < MIN_TREND_ROWS or len(fitness) < MIN_TREND_ROWS:
        return False
    third = max(1, len(reward) // 3)
    r_trend, f_trend = trend(reward), trend(fitness)
    return (r_trend is not None and r_trend > 0.6 and np.mean(reward[-third:]) > np.mean(reward[:third])
            and (f_trend is None or f_trend < 0.3))


def thirds_of(values: list[float]) -> list[float]:
    """The means of the first and the last third of a series."""
    third = max(1, len(values) // 3)
    return [float(np.mean(values[:third])), float(np.mean(values[-third:]))]


def termination_causes(record: Path, card: EnvCard, eps) -> dict[str, int]:
    """Per termination check: how many of the terminated episodes it ended (at their last recorded
    state). Read defensively: the record was written by a worker that ran the fitness program."""
    if not card.terminations or not any(e.terminated for e in eps):
        return {}
    need = {"active", "now_qpos", "now_qvel", "now_site_xpos"}
    try:
        packed = io.BytesIO(read_output(record, MAX_RECORD_BYTES))  # no links, no FIFOs
        with zipfile.ZipFile(packed) as z:
            if sum(i.file_size for i in z.infolist() if i.filename[:-4] in need) > MAX_RECORD_BYTES:
                return {}
        with np.load(packed, allow_pickle=False) as f:
            arrays = {k: f[k] for k in need if k in f.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile):
        return {}
    active = arrays.get("active")
    if active is None or active.ndim != 2 or active.shape[1] != len(eps):
        return {}
    sites = list(card.layout.sites) if card.layout else []
    counts: dict[str, int] = {}
    for i, e in enumerate(eps):
        steps = np.flatnonzero(active[:, i])
        if not e.terminated or not steps.size:
            continue
        t = steps[-1]
        for b in card.terminations:
            if b.source in ("qpos", "qvel"):
                source = arrays.get("now_" + b.source)
            elif b.source.startswith('site("') and b.source[6:-6] in sites and "now_site_xpos" in arrays:
                source = arrays["now_site_xpos"][:, :, sites.index(b.source[6:-6])]
            else:
                source = None
            if source is None or source.shape[:2] != active.shape or source.shape[-1] < b.index[1]:
                continue
            for cause, fired in zip(b.causes(), b.ended(source[t, i, b.index[0]:b.index[1]])):
                counts[cause] = counts.get(cause, 0) + fired
    return {k: v for k, v in counts.items() if v}


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
        executor: Executor | None = None,
        card: EnvCard | None = None,
    ):
        """``card``: the env card the designer reads (built here when not given): the LLM reads it,
        and its termination checks name what ended each episode."""
        self.env_id, self.fitness, self.env_kwargs = env_id, fitness, env_kwargs or {}
        self._card = card
        self.episodes, self.seed, self.llm, self.task = episodes, seed, llm, task
        self.limits = limits or Limits(wall_s=300, cpu_s=600, memory_mb=4096)
        self.executor = executor or LocalExecutor()

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
        rollout = self.executor.run(
            AnalyzeJob(env_id=self.env_id, env_kwargs=self.env_kwargs, seed=self.seed,
                       policy=str(rollout_dir / "policy.npz"), fitness=self.fitness, episodes=self.episodes,
                       record=str(rollout_dir / "trajectories.npz"),
                       contacts=reads_contacts(code, self.fitness.code)),
            rollout_dir, self.limits, poll=stop,
        )
        if not rollout.ok:
            return Analysis(ok=False, error=rollout.problem or rollout.result.error)
        eps = rollout.result.episodes
        fitness = np.array([e.fitness for e in eps])
        analysis = Analysis(
            ok=True, episodes=len(eps), fitness=fitness.tolist(), fitness_mean=float(fitness.mean()),
            fitness_std=float(fitness.std()), length_mean=float(np.mean([e.length for e in eps])),
            terminated=sum(e.terminated for e in eps), env_return_mean=float(np.mean([e.env_return for e in eps])),
        )
        if analysis.terminated:
            analysis.termination_causes = termination_causes(rollout_dir / "trajectories.npz", self.card, eps)
        log = read_progress(train_log) if train_log else []
        if log:
            analysis.training_curve = thin(log)
            analysis.trained_steps = int(log[-1].get("global_step", 0)) or None
        reward = [r["train_reward_mean"] for r in log if np.isfinite(r.get("train_reward_mean", np.nan))]
        fit = [r["fitness"] for r in log if np.isfinite(r.get("fitness", np.nan))]
        if len(reward) >= MIN_TREND_ROWS and len(fit) >= MIN_TREND_ROWS:
            analysis.train_reward, analysis.train_fitness = thirds_of(reward), thirds_of(fit)
            if rose_alone(reward, fit):
                analysis.hacking.append("rose_alone")
        if code is not None:
            self._reflect(analysis, code, eps, workdir, stop)
            if analysis.step_correlation is not None and analysis.step_correlation < AGAINST:
                analysis.hacking.append("against")
        analysis.reflection = templates.render("reflection.j2", a=analysis)
        if self.llm is not None and self.task is not None and code is not None:
            if stop is not None:
                stop()
            card = self.card
            chat = [{"role": "user", "content": templates.render(
                "analyzer.j2", task=self.task, code=code, episodes=analysis.episodes, reflection=analysis.reflection,
                envcard=card.render(), card=card, fitness=self.fitness, trained_steps=analysis.trained_steps)}]
            analysis.feedback = self.llm.complete(chat, n=1, purpose="analyze", temperature=0.3,
                                               tag=tag)[0].text.strip()
        return analysis

    @property
    def card(self) -> EnvCard:
        if self._card is None:
            self._card = EnvCard.from_env(self.env_id, self.env_kwargs)
        return self._card

    def _reflect(self, analysis: Analysis, code: str, eps, workdir: Path, stop: Callable[[], None] | None) -> None:
        """The program's own view of the rollouts: its components and how its reward tracks the fitness."""
        eval_dir = workdir / "reward_eval"
        eval_dir.mkdir(parents=True, exist_ok=True)
        copy_output(workdir / "rollout" / "trajectories.npz", eval_dir / "trajectories.npz")
        out = self.executor.run(
            RewardEvalJob(env_id=self.env_id, env_kwargs=self.env_kwargs, code=code,
                          trajectories=str(eval_dir / "trajectories.npz")),
            eval_dir, self.limits, poll=stop,
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
        # Per step over all episodes, as the worker pools the thirds: each episode's mean by its length.
        lengths = [e.length for e in eps]
        analysis.components = [
            ComponentStat(name=k, mean=float(np.average(v, weights=lengths)), thirds=r.component_thirds.get(k, []))
            for k, v in r.components.items() if len(v) == len(eps)
        ]
