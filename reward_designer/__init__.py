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
    "Analyzer": "analyzer", "Analysis": "analyzer",
    "Run": "run", "RunConfig": "run", "RunRecord": "run",
    "State": "state",
    "load_task": "tasks", "list_tasks": "tasks",
    "make_client": "llm",
}

__all__ = [*_LAZY, "design", "check", "train"]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'reward_designer' has no attribute {name!r}")


def design(task, out: str | Path, *, quiet: bool = True, **config):
    """Run the design loop for ``task`` (a TaskSpec) into the folder ``out``; see RunConfig for ``config``.

    If ``out`` already holds a run of the same task and config, it is resumed instead; one of
    another task or config is an error (``Run.open(out).execute()`` resumes it as it was).
    The env and the LLM are checked before the folder is made.
    """
    from .run import RUN_FILE, Run, RunConfig, RunError

    out, wanted = Path(out), RunConfig(task=task, **config)
    if (out / RUN_FILE).exists():
        run = Run.open(out)
        if run.config != wanted:
            raise RunError(f"{out} holds a run of another task or config; resume it with Run.open({str(out)!r})"
                           ".execute(), or choose another folder")
        return run.execute(quiet=quiet)
    return Run.create(out, wanted).execute(quiet=quiet)


def check(code: str, env_id: str, workdir: str | Path, **critic_kwargs):
    """The critic's report on a reward program (lint, then a sandboxed probe on real states)."""
    from .critic import Critic

    return Critic(env_id, **critic_kwargs).check(code, Path(workdir))


def train(code: str | None, env_id: str, steps: int, out: str | Path, fitness=None, **trainer_kwargs):
    """Train a policy on a reward program in a sandboxed worker; the policy lands in ``out/policy.npz``."""
    from .trainer import Trainer

    return Trainer(env_id, steps, **trainer_kwargs).train(code, Path(out), fitness)
