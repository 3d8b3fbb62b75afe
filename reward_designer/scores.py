"""A batch's scores: per task and method, the human-normalized score, and aggregates over tasks.

The normalized score is Eureka's, the card's expert reward in the human's place:
``(method - sparse) / |expert - sparse|`` on the task's fitness, so 0 is what
training on the fitness alone reaches and 1 what the expert reward reaches. It
is undefined where the two anchors score the same. Aggregates over tasks
(mean, median, interquartile mean) use each task's score clipped to [0, 3], as
Eureka averaged them (the raw value is kept per task), with stratified-bootstrap
confidence intervals over seeds from rliable (Agarwal et al. 2021).

Plain numbers in, pydantic models out; rliable and scipy are imported only here.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping

import numpy as np
from pydantic import BaseModel

SPARSE, EXPERT = "sparse", "expert"
CLIP = (0.0, 3.0)  # Eureka's clip of a task's normalized score, before averaging over tasks
BOOTSTRAP_REPS = 2000
CONFIDENCE = 0.95
PROFILE_TAUS = np.linspace(0.0, CLIP[1], 61)  # the performance profile's thresholds

# (task, method) -> {seed: fitness} of the trainings that finished
Runs = Mapping[tuple[str, str], Mapping[int, float]]


class MethodScore(BaseModel):
    """One method on one task, over seeds."""

    task: str
    method: str
    runs: int  # seeds with a fitness
    fitness_mean: float | None = None
    fitness_std: float | None = None  # over seeds (population std; 0 for one seed)
    normalized: float | None = None  # raw: (mean - sparse) / |expert - sparse|; None: anchors missing or equal


class Aggregate(BaseModel):
    """One method's normalized score over tasks, each clipped to CLIP, with bootstrap CIs (low, high)."""

    method: str
    tasks: int  # tasks with the anchors and every seed of this method
    mean: float | None = None
    mean_ci: tuple[float, float] | None = None
    median: float | None = None
    median_ci: tuple[float, float] | None = None
    iqm: float | None = None
    iqm_ci: tuple[float, float] | None = None
    at_or_above_expert: float | None = None  # share of tasks whose fitness mean is at least the expert's
    compared: int = 0  # tasks where both it and the expert have a fitness


class Profile(BaseModel):
    """A performance profile: the share of runs (seed x task) whose clipped normalized score exceeds tau."""

    taus: list[float]
    share: dict[str, list[float]]


class Scores(BaseModel):
    per_task: list[MethodScore]
    aggregates: list[Aggregate]
    profile: Profile


def normalized(value: float, sparse: float, expert: float) -> float | None:
    """Eureka's normalized score; None where the anchors score the same (no scale to measure on)."""
    gap = abs(expert - sparse)
    return None if gap == 0 or not math.isfinite(gap) else (value - sparse) / gap


def score(runs: Runs, tasks: list[str], methods: list[str], seeds: list[int]) -> Scores:
    """Every table and plot of a batch from its finished trainings' fitness."""
    per_task = []
    means: dict[tuple[str, str], float] = {}
    for task in tasks:
        for method in methods:
            values = [runs.get((task, method), {})[s] for s in seeds if s in runs.get((task, method), {})]
            row = MethodScore(task=task, method=method, runs=len(values))
            if values:
                row.fitness_mean, row.fitness_std = float(np.mean(values)), float(np.std(values))
                means[(task, method)] = row.fitness_mean
            per_task.append(row)
    for row in per_task:
        anchors = (means.get((row.task, SPARSE)), means.get((row.task, EXPERT)))
        if row.fitness_mean is not None and None not in anchors:
            row.normalized = normalized(row.fitness_mean, *anchors)

    # Per method, a (seeds x tasks) matrix of clipped normalized scores: the tasks where it is defined
    # and the method has every seed (the stratified bootstrap resamples seeds within each task).
    matrices: dict[str, np.ndarray] = {}
    for method in methods:
        columns = []
        for task in tasks:
            anchors = (means.get((task, SPARSE)), means.get((task, EXPERT)))
            seed_fitness = runs.get((task, method), {})
            if None in anchors or normalized(0.0, *anchors) is None or any(s not in seed_fitness for s in seeds):
                continue
            columns.append([normalized(seed_fitness[s], *anchors) for s in seeds])
        if columns:
            matrices[method] = np.clip(np.array(columns, dtype=float).T, *CLIP)
    estimates, intervals = _interval_estimates(matrices)

    aggregates = []
    for method in methods:
        agg = Aggregate(method=method, tasks=matrices[method].shape[1] if method in matrices else 0)
        if method in estimates:
            for i, name in enumerate(("mean", "median", "iqm")):
                setattr(agg, name, float(estimates[method][i]))
                setattr(agg, f"{name}_ci", (float(intervals[method][0, i]), float(intervals[method][1, i])))
        both = [t for t in tasks if (t, method) in means and (t, EXPERT) in means]
        if method != EXPERT and both:
            agg.compared = len(both)
            agg.at_or_above_expert = sum(means[(t, method)] >= means[(t, EXPERT)] for t in both) / len(both)
        aggregates.append(agg)
    return Scores(per_task=per_task, aggregates=aggregates, profile=_profile(matrices))


def _interval_estimates(matrices: dict[str, np.ndarray]):
    if not matrices:
        return {}, {}
    from rliable import library as rly
    from rliable import metrics

    def mean_median_iqm(x: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_mean(x), metrics.aggregate_median(x), metrics.aggregate_iqm(x)])

    # A fixed bootstrap seed: the report of the same results is the same report. (rliable hands it to arch,
    # whose newer versions warn that they will want a Generator instead.)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "random_state is deprecated", FutureWarning)
        return rly.get_interval_estimates(matrices, mean_median_iqm, reps=BOOTSTRAP_REPS,
                                          confidence_interval_size=CONFIDENCE, random_state=np.random.RandomState(0))


def _profile(matrices: dict[str, np.ndarray]) -> Profile:
    share = {}
    if matrices:
        from rliable import library as rly

        share = {m: [float(rly.run_score_deviation(x, tau)) for tau in PROFILE_TAUS] for m, x in matrices.items()}
    return Profile(taus=[float(t) for t in PROFILE_TAUS], share=share)
