"""Does culling early pay? ``full`` against ``halving`` on fixed pools of reward programs.

Each task has a pool of 8 programs of mixed quality in benchmarks/pools/<task>/ (a good one, some
worse ones, some that reward the wrong thing, one constant). For each seed, each allocation trains
the pool as a design round would (selection.ALLOCATIONS; the sandboxed trainer and analyze worker)
and picks the best by the fitness it measured. The benchmark records the env steps it trained (a
continued training counts only its new steps), its wall time, and the program it picked, which is
then trained again on fresh seeds and measured: what the pick is worth, apart from the luck of the
search's own seed.

    python benchmarks/search_budget.py                        # 4 tasks, seeds 0-2, the budgets in BUDGETS
    python benchmarks/search_budget.py --tasks pendulum-upright --steps pendulum-upright=8192 --seeds 0

Budgets per candidate (``--steps``, else ``BUDGETS``, else the card's): two cards are smoke tests (8192
steps, four PPO updates, where nothing is learnt and halving has no room to cut), so each task gets a
budget at which its pool's good program learns (the env-like program's fitness along one training, seed
0: Pendulum 0.81 at 49k; InvertedPendulum 1.0 from 25k; HalfCheetah backwards 165 / 206 / 252 at 49k /
98k / 199k; Reacher -0.14 / -0.075 / -0.046 at 12k / 98k / 199k): 163,840 steps, 80 updates of 2048,
the least where halving's first rung is 1/8 of the budget and not its 10-update minimum
(selection.SuccessiveHalving), so the benchmark measures halving as it runs at larger budgets.

Target (issue 31): halving spends <= 35% of full's env steps, and its pick's re-trained fitness is
within the spread over seeds of full's pick's. The figures go to OUT/results.json and a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from reward_designer.analyzer import Analyzer
from reward_designer.executor import LocalExecutor
from reward_designer.pipeline import CandidatePipeline
from reward_designer.program import RewardProgram
from reward_designer.runfolder import CandidateFolder
from reward_designer.selection import ALLOCATIONS, BestFitness
from reward_designer.tasks import load_task
from reward_designer.trainer import Trainer, read_progress

POOLS = Path(__file__).parent / "pools"
TASKS = ["pendulum-upright", "inverted-pendulum-balance", "halfcheetah-backwards-smoke", "reacher-reach"]
BUDGETS = dict.fromkeys(TASKS, 163_840)  # 80 updates of 2048 steps: see the docstring


def pool(task: str) -> dict[str, str]:
    return {p.stem: p.read_text() for p in sorted((POOLS / task).glob("*.py"))}


def pipeline(task, steps: int, seed: int, episodes: int, executor) -> CandidatePipeline:
    trainer = Trainer(task.env_id, steps, task.env_kwargs, seed=seed, ppo=task.ppo, executor=executor)
    analyzer = Analyzer(task.env_id, task.fitness, task.env_kwargs, episodes=episodes, executor=executor)
    return CandidatePipeline(None, trainer, analyzer)


def trained_steps(cand: CandidateFolder) -> int:
    """The env steps a candidate's training reached (its log's last row): a continued one counts once."""
    rows = read_progress(cand.progress)
    return int(rows[-1]["global_step"]) if rows else 0


def search(task, programs: dict[str, str], allocation: str, seed: int, steps: int, episodes: int,
           folder: Path, executor) -> dict:
    """One allocation over the pool: steps spent, seconds, the pick and every candidate's end."""
    pipe = pipeline(task, steps, seed, episodes, executor)
    names = list(programs)

    def train(i: int, budget: float = 1.0):
        return pipe.train_and_analyze(CandidateFolder(folder / names[i]), RewardProgram(code=programs[names[i]]),
                                      1, i, budget=budget)

    t0 = time.perf_counter()
    records = list(ALLOCATIONS[allocation]().run(range(len(names)), train, executor, updates=pipe.trainer.updates))
    seconds = time.perf_counter() - t0
    best = BestFitness().best(records)
    return {
        "env_steps": sum(trained_steps(CandidateFolder(folder / n)) for n in names),
        "seconds": seconds,
        "pick": names[best.index] if best else None,
        "candidates": {names[r.index]: {"status": r.status, "fitness": r.fitness, "budget": r.budget or 1.0,
                                        "error": r.error} for r in records},
    }


def retrain(task, code: str, seeds: list[int], steps: int, episodes: int, folder: Path, executor) -> list[float]:
    """The program trained again on each of ``seeds`` to the whole budget: its fitness on each."""
    out = []
    for s in seeds:
        rec = pipeline(task, steps, s, episodes, executor).train_and_analyze(
            CandidateFolder(folder / f"seed_{s}"), RewardProgram(code=code))
        out.append(rec.fitness if rec.fitness is not None else float("nan"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task cards with a pool")
    parser.add_argument("--seeds", default="0,1,2", help="the searches' seeds")
    parser.add_argument("--retrain-seeds", default="100,101,102", help="fresh seeds the picks are trained on again")
    parser.add_argument("--steps", default="", help="training budgets per candidate, TASK=N,...: over BUDGETS, "
                        "which is over the card's")
    parser.add_argument("--episodes", type=int, default=5, help="evaluation episodes per measure")
    parser.add_argument("--workers", type=int, default=1, help="trainings at once")
    parser.add_argument("--out", type=Path, default=Path("runs/search_budget"))
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    retrain_seeds = [int(s) for s in args.retrain_seeds.split(",")]
    budgets = {**BUDGETS, **{t: int(n) for t, n in (kv.split("=") for kv in args.steps.split(",") if kv)}}
    executor = LocalExecutor(args.workers)
    results = {}
    for name in args.tasks.split(","):
        task, programs = load_task(name), pool(name)
        steps = budgets.get(name, task.train_steps)
        out = args.out.resolve() / name
        runs = {a: {s: search(task, programs, a, s, steps, args.episodes, out / a / f"seed_{s}", executor)
                    for s in seeds} for a in ("full", "halving")}
        worth = {}  # each picked program's re-trained fitness, once per program
        for a in runs:
            for s, r in runs[a].items():
                if r["pick"] is not None and r["pick"] not in worth:
                    worth[r["pick"]] = retrain(task, programs[r["pick"]], retrain_seeds, steps, args.episodes,
                                               out / "retrain" / r["pick"], executor)
                r["pick_fitness"] = statistics.fmean(worth[r["pick"]]) if r["pick"] is not None else None
        results[name] = {"steps": steps, "runs": runs, "retrained": worth}
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "results.json").write_text(json.dumps(results, indent=1))
        report(name, runs)


def report(name: str, runs: dict) -> None:
    full, halving = runs["full"], runs["halving"]
    f_steps, h_steps = (statistics.fmean(r["env_steps"] for r in x.values()) for x in (full, halving))
    f_fit = [r["pick_fitness"] for r in full.values() if r["pick_fitness"] is not None]
    h_fit = [r["pick_fitness"] for r in halving.values() if r["pick_fitness"] is not None]
    print(f"\n{name}")
    for label, x in (("full", full), ("halving", halving)):
        for s, r in x.items():
            print(f"  {label:8s} seed {s}: {r['env_steps']:>9d} steps  {r['seconds']:7.1f} s  pick {r['pick']}"
                  f"  re-trained fitness {r['pick_fitness']:.4g}" if r["pick_fitness"] is not None else
                  f"  {label:8s} seed {s}: no pick")
    within = bool(f_fit and h_fit and statistics.fmean(h_fit) >= min(f_fit))
    print(f"  halving spent {h_steps / f_steps:.0%} of full's env steps; picks' fitness: full "
          f"{min(f_fit, default=float('nan')):.4g}..{max(f_fit, default=float('nan')):.4g}, halving mean "
          f"{statistics.fmean(h_fit) if h_fit else float('nan'):.4g} ({'within' if within else 'below'} full's spread)")


if __name__ == "__main__":
    main()
