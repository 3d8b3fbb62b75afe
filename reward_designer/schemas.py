"""Data that crosses a boundary: task cards, worker jobs and results, run records.

Everything here is a pydantic model so that it is validated where it enters:
a task card read from YAML, a job handed to a sandboxed worker, a result read
back from one (which untrusted code may have tried to forge), a run record
read on resume.
"""

from __future__ import annotations

import datetime
import re
from typing import Annotated, Literal, Union

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, StringConstraints, field_validator,
                      model_validator)

Aggregate = Literal["sum", "mean", "max", "last", "any"]
# What a training steps: MuJoCo C, one slab of envs per core ("mujoco"; the gymnasium vector env
# for a non-MuJoCo env), or one MuJoCo Warp batch on the training device ("warp").
Sim = Literal["mujoco", "warp"]


class FitnessSpec(BaseModel):
    """The task's own measure, hidden from the designer.

    ``code`` defines ``compute_fitness(state, action) -> tensor[n]``, a value
    per env step; ``aggregate`` folds an episode's values into one number
    ("any" on a success flag gives a success rate over episodes).
    """

    code: str
    aggregate: Aggregate = "sum"
    description: str = ""
    source: Literal["card", "llm", "file"] = "card"


MAX_DESCRIPTION_CHARS = 10_000
# The methods a card's anchors measure: "random" an untrained policy, "sparse" the fitness's per-step
# value as the reward, "expert" the card's expert reward, "env" the env's own where it is not the expert.
AnchorMethod = Literal["random", "sparse", "expert", "env"]
IMPLICIT_SUITE = "standard"  # every card outside "smoke"; a card does not list it


class Anchor(BaseModel):
    """One method's fitness over seeds at the card's budget, measured, with how and when."""

    model_config = ConfigDict(extra="forbid")

    mean: float
    std: float = Field(ge=0)
    seeds: list[int] = Field(min_length=1)
    train_steps: int | None = None  # the budget it was measured at (None: no training, as for random)
    command: str = Field(min_length=1)
    date: datetime.date


class TaskSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    env_id: str
    description: str = Field(min_length=1)
    fitness: FitnessSpec | None = None  # None: asked of the LLM once, at run start
    env_kwargs: dict = {}
    train_steps: int = Field(default=1_000_000, gt=0)
    ppo: dict = {}  # PPOConfig overrides for this task, over the env's preset; a run's own (--set) go over them
    suites: list[str] = []  # benchmark suites it belongs to (smoke, native, novel, locomotion, ...)
    expert: str | None = None  # the expert reward: "env" (the env's own) or a program file beside the card
    anchors: dict[AnchorMethod, Anchor] = {}

    @field_validator("suites")
    @classmethod
    def _suite_names(cls, v: list[str]) -> list[str]:
        for name in v:
            if not re.fullmatch(r"[a-z][a-z0-9-]*", name):
                raise ValueError(f"suite {name!r}: lowercase letters, digits and '-' only")
            if name == IMPLICIT_SUITE:
                raise ValueError(f"'{IMPLICIT_SUITE}' is implied: every card outside 'smoke' is in it")
        if len(set(v)) != len(v):
            raise ValueError("a suite is listed twice")
        return v

    @field_validator("expert")
    @classmethod
    def _expert_source(cls, v: str | None) -> str | None:
        if v is None or v == "env":
            return v
        if not re.fullmatch(r"[A-Za-z0-9_.-]+\.py", v) or v.startswith("."):
            raise ValueError(f"expert {v!r}: 'env', or the file name of a reward program beside the card (name.py)")
        return v

    @model_validator(mode="after")
    def _anchors_at_budget(self) -> "TaskSpec":
        for method, anchor in self.anchors.items():
            if anchor.train_steps is not None and anchor.train_steps != self.train_steps:
                raise ValueError(f"anchors.{method} was measured at {anchor.train_steps:,} steps, the card trains "
                                 f"{self.train_steps:,}: measure it again at the card's budget")
        return self

    @field_validator("description")
    @classmethod
    def _a_description(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("the task description is empty")
        if len(v.strip()) > MAX_DESCRIPTION_CHARS:  # it goes into every prompt of a run
            raise ValueError(f"the task description is {len(v.strip()):,} characters; at most "
                             f"{MAX_DESCRIPTION_CHARS:,} (say what the policy should do, not how)")
        return v.strip()

    @field_validator("ppo")
    @classmethod
    def _a_config(cls, v: dict) -> dict:
        from .presets import check_overrides, read_value

        return check_overrides({k: read_value(x) if isinstance(x, str) else x for k, x in v.items()}) if v else v


# ---------------------------------------------------------------- worker jobs
class _Job(BaseModel):
    model_config = ConfigDict(extra="forbid")
    env_id: str
    env_kwargs: dict = {}
    seed: int = 0


class ProbeJob(_Job):
    """Run a reward program on real sampled states; report what it returns."""

    kind: Literal["probe"] = "probe"
    code: str
    entry: str = "compute_reward"  # or "compute_fitness": a fitness function returns one tensor
    num_envs: int = 8
    steps: int = 48
    contacts: bool = False  # the simulator computes contact forces (the program reads them: lint.reads_contacts)


class TrainJob(_Job):
    """Train a policy on a reward program (None: the env's own reward)."""

    kind: Literal["train"] = "train"
    code: str | None
    fitness: FitnessSpec | None = None
    total_steps: int
    device: str = "cpu"
    algorithm: str = "ppo"  # an algorithms.ALGORITHMS key
    ppo: dict = {}  # PPOConfig overrides
    sim: Sim = "mujoco"
    kernel_cache: str | None = None  # sim "warp": MuJoCo Warp's compiled kernels (a WarmJob's), read-only
    contacts: bool = False  # the simulator computes contact forces (the reward or the fitness reads them)
    # Checkpoints: the training's whole state, written to ``checkpoint`` (in the worker's folder) every
    # ``checkpoint_every`` updates (0: never) and where it stops early. ``stop_at_steps``: stop after the
    # update that reaches this many env steps (a fraction of total_steps, which still sets the schedule).
    # ``resume_from``: a checkpoint of this same training to continue, as if it had never stopped.
    checkpoint: str | None = None
    checkpoint_every: int = Field(default=0, ge=0)
    stop_at_steps: int | None = Field(default=None, gt=0)
    resume_from: str | None = None

    @field_validator("algorithm")
    @classmethod
    def _known(cls, v: str) -> str:
        from .algorithms import get_algorithm

        get_algorithm(v)  # ValueError, listing the known ones
        return v

    @model_validator(mode="after")
    def _checkpoint_named(self) -> "TrainJob":
        if (self.checkpoint_every or self.stop_at_steps) and not self.checkpoint:
            raise ValueError("checkpoint_every and stop_at_steps need a checkpoint path")
        return self


class WarmJob(_Job):
    """Compile MuJoCo Warp's kernels for an env into ``kernels`` (the worker's folder); loads no program."""

    kind: Literal["warm"] = "warm"
    device: str = "cpu"
    kernels: str  # the folder to compile into, inside the worker's own


MAX_RENDER_STEPS = 10_000  # a filmed episode's steps (the analyzer's rollouts stop there too)


class AnalyzeJob(_Job):
    """Roll out a saved policy and measure fitness. Loads no reward program."""

    kind: Literal["analyze"] = "analyze"
    policy: str  # path to the policy's weights
    fitness: FitnessSpec
    episodes: int = 5
    record: str | None = None  # where to save the trajectories (npz) for reward evaluation
    contacts: bool = False  # contact forces computed and recorded (the reward or the fitness reads them)


class RewardEvalJob(_Job):
    """Evaluate a reward program on recorded trajectories (from an AnalyzeJob)."""

    kind: Literal["reward_eval"] = "reward_eval"
    code: str
    trajectories: str


class RenderJob(_Job):
    """Roll out a saved policy and film it (an mp4, and a few stills for a vision judge). Loads no program."""

    kind: Literal["render"] = "render"
    policy: str  # path to the policy's weights
    video: str  # the mp4 to write, inside the worker's folder
    episodes: int = Field(default=1, ge=1, le=20)
    max_steps: int = Field(default=1000, ge=1, le=MAX_RENDER_STEPS)  # per episode
    width: int = Field(default=480, ge=16, le=1920)  # multiples of 16: the encoder's block size
    height: int = Field(default=320, ge=16, le=1920)
    stills: int = Field(default=0, ge=0, le=16)  # evenly spaced frames saved as still_NN.jpg beside the video


Job = Annotated[Union[ProbeJob, TrainJob, AnalyzeJob, RewardEvalJob, WarmJob, RenderJob], Field(discriminator="kind")]


class JobEnvelope(BaseModel):
    job: Job
    cores: list[int] = []  # the CPUs the worker may use (the executor's budget); empty: all


# ------------------------------------------------------------- worker results
# A worker ran untrusted code, which can write its own result.json: what the parent reads back is
# bounded here, since it goes on into run records and LLM prompts.
MAX_COMPONENTS = 32  # a program's component names, per call and over a training
MAX_ERROR_CHARS = 4000  # the end of a traceback is what a designer can act on
MAX_STATE_CHARS = 1000  # a state's values, shown in a finding


def _error_tail(v):
    return v[-MAX_ERROR_CHARS:] if isinstance(v, str) else v


ErrorText = Annotated[str, BeforeValidator(_error_tail)]
ComponentName = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


class ProbeResult(BaseModel):
    kind: Literal["probe"] = "probe"
    ok: bool
    error: ErrorText = ""  # traceback tail or the check that failed
    reward_shape: list[int] = []
    reward_dtype: str = ""
    finite: bool = False
    constant: bool = True
    # The mean of each component over the probe.
    components: Annotated[dict[ComponentName, float], Field(max_length=MAX_COMPONENTS)] = {}
    component_sum_gap: float | None = None  # max |reward - sum(components)|
    reward_mean: float | None = None  # None when not finite
    reward_std: float | None = None
    ms_per_call: Finite = 0.0
    # When not finite: what was NaN or infinite ("reward" and the components' names), and the first
    # transition it was, as text (the probe step, the env, the obs/qpos/qvel and action values).
    nonfinite: Annotated[list[ComponentName], Field(max_length=MAX_COMPONENTS + 1)] = []
    nonfinite_at: Annotated[str, BeforeValidator(lambda v: v[:MAX_STATE_CHARS] if isinstance(v, str) else v)] = ""


class TrainResult(BaseModel):
    kind: Literal["train"] = "train"
    ok: bool
    error: ErrorText = ""
    steps: int = 0
    seconds: float = 0.0
    steps_per_second: float = 0.0
    policy: str = ""
    ppo: dict = {}  # the whole PPOConfig it trained with: the preset, the overrides, the defaults of this version
    numerics: dict[str, str] = {}  # numerics.loaded(): the BLAS and SIMD paths numpy and torch ran, their versions
    complete: bool = True  # False: stopped at the job's stop_at_steps, its checkpoint saved, to be continued
    resumed_at: int | None = None  # the env steps of the checkpoint it continued (None: it started afresh)


class EpisodeStats(BaseModel):
    fitness: float
    length: int
    terminated: bool  # the env ended it (fell, flipped over), not the time limit
    env_return: float
    step_fitness: list[float] = []  # the fitness value of each step, for the reward-fitness correlation


class AnalyzeResult(BaseModel):
    kind: Literal["analyze"] = "analyze"
    ok: bool
    error: ErrorText = ""
    episodes: list[EpisodeStats] = []


class RewardEvalResult(BaseModel):
    kind: Literal["reward_eval"] = "reward_eval"
    ok: bool
    error: ErrorText = ""
    episode_reward: list[float] = []  # per episode, summed
    step_reward: list[list[float]] = []  # per episode, per step
    # Each component's mean per step: per episode, and over each third of the episodes' steps.
    components: Annotated[dict[ComponentName, list[float]], Field(max_length=MAX_COMPONENTS)] = {}
    component_thirds: Annotated[dict[ComponentName, list[float]], Field(max_length=MAX_COMPONENTS)] = {}
    nonfinite: int = 0  # steps whose reward was NaN or infinite (zeroed above)


class WarmResult(BaseModel):
    kind: Literal["warm"] = "warm"
    ok: bool
    error: ErrorText = ""
    seconds: float = 0.0


class RenderResult(BaseModel):
    kind: Literal["render"] = "render"
    ok: bool
    error: ErrorText = ""
    frames: int = 0
    fps: float = 0.0
    episode_lengths: list[int] = []
    env_returns: list[float] = []
    stills: Annotated[list[Annotated[str, StringConstraints(pattern=r"^still_\d\d\.jpg$")]], Field(max_length=16)] = []


Result = Annotated[
    Union[ProbeResult, TrainResult, AnalyzeResult, RewardEvalResult, WarmResult, RenderResult],
    Field(discriminator="kind"),
]


class ResultEnvelope(BaseModel):
    result: Result
