"""reward-designer: LLM-designed dense rewards, checked in a sandbox, refined from trained policies.

The nouns: TaskSpec (what to do, on which env, judged how), EnvCard (what the
designer may read about the env), RewardProgram (the code an LLM wrote),
Critic (checks it before training), Trainer (PPO on it, sandboxed), Analyzer
(what the policy did, as feedback), Run (the loop over a run folder).

    from reward_designer import load_task, design
    record = design(load_task("halfcheetah-run"), model="openai/gpt-4o", out="runs/cheetah")
"""

from __future__ import annotations

import importlib
from pathlib import Path

__version__ = "0.1.0"

# Imported on first use: torch and litellm take seconds, and `reward-designer --help` should not.
_LAZY = {
    "TaskSpec": "schemas", "FitnessSpec": "schemas",
    "EnvCard": "envcard",
    "RewardProgram": "program", "extract_code": "program",
    "Critic": "critic", "CriticReport": "critic",
    "Trainer": "trainer",
    "Analyzer": "analyzer", "Analysis": "records",
    "Run": "run", "RunConfig": "records", "RunRecord": "records", "CandidateRecord": "records",
    "RunFolder": "runfolder", "CandidatePipeline": "pipeline",
    "Executor": "executor", "LocalExecutor": "executor",
    "State": "state",
    "load_task": "tasks", "list_tasks": "tasks",
    "make_client": "llm",
    "run_bench": "bench", "resume_bench": "bench", "load_results": "bench", "bench_report": "bench",
    "BenchConfig": "bench", "BenchResults": "bench", "RayExecutor": "ray_executor",
}

__all__ = [*_LAZY, "design", "check", "train"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'reward_designer' has no attribute {name!r}")


def design(task, out: str | Path, *, quiet: bool = True, executor=None, **config):
    """Run the design loop for ``task`` (a TaskSpec) into the folder ``out``; see RunConfig for ``config``.

    If ``out`` already holds a run of the same task and config, it is resumed instead; one of
    another task or config is an error (``Run.open(out).execute()`` resumes it as it was).
    The env and the LLM are checked before the folder is made. ``executor``: where the
    sandboxed jobs run (default: local workers, ``workers`` at once).
    """
    from .run import Run, RunConfig, RunError
    from .runfolder import RunFolder

    wanted = RunConfig(task=task, **config)
    if RunFolder(out).exists():
        run = Run.open(out, executor=executor)
        if run.config != wanted:
            raise RunError(f"{out} holds a run of another task or config; resume it with Run.open({str(out)!r})"
                           ".execute(), or choose another folder")
        return run.execute(quiet=quiet)
    return Run.create(out, wanted, executor=executor).execute(quiet=quiet)


def check(code: str, env_id: str, workdir: str | Path, **critic_kwargs):
    """The critic's report on a reward program (lint, then a sandboxed probe on real states)."""
    from .critic import Critic

    return Critic(env_id, **critic_kwargs).check(code, Path(workdir))


def train(code: str | None, env_id: str, steps: int, out: str | Path, fitness=None, *, env_kwargs=None,
          seed: int = 0, episodes: int = 5, executor=None, **trainer_kwargs):
    """A reward program through the same pipeline as a design round's candidates: the critic, a
    sandboxed PPO training (the policy lands in ``out/train/policy.npz``) and, with a ``fitness``
    (FitnessSpec), the analyzer. Returns the candidate's record (``status``, ``findings``, ``fitness``).
    ``code`` None trains on the env's own reward, with no critic."""
    from .analyzer import Analyzer
    from .critic import Critic
    from .executor import LocalExecutor
    from .pipeline import CandidatePipeline
    from .program import RewardProgram
    from .runfolder import CandidateFolder
    from .trainer import Trainer

    executor = executor or LocalExecutor()
    cand = CandidateFolder(out)
    cand.clear()
    pipeline = CandidatePipeline(
        Critic(env_id, env_kwargs, seed=seed, executor=executor),
        Trainer(env_id, steps, env_kwargs, seed=seed, executor=executor, **trainer_kwargs),
        Analyzer(env_id, fitness, env_kwargs, episodes=episodes, executor=executor) if fitness else None,
    )
    if code is None:
        return pipeline.train_and_analyze(cand, RewardProgram(code=None))
    return pipeline.run(cand, RewardProgram(code=code))
