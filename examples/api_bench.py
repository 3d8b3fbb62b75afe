"""The Python API of `reward-designer bench`: a batch over the smoke suite, its scores, its report.

    python examples/api_bench.py                 # the baselines only: expert, sparse, random (no LLM)
    python examples/api_bench.py openai/gpt-4o   # and the designed method, with a live model via litellm

The smoke suite's budgets are tiny (8192 steps a training, for CI): nothing is learnt at them, so the
numbers say only that the batch ran end to end. Run it again and it is resumed: nothing finished is redone.
"""

import sys
from pathlib import Path

from reward_designer import bench_report, load_results, resume_bench, run_bench

out = Path("runs/api-bench")
model = sys.argv[1] if len(sys.argv) > 1 else None
methods = ["expert", "sparse", "random"] + (["designed"] if model else [])

if (out / "results.json").exists():
    resume_bench(out, quiet=False)
else:
    run_bench(out, suite="smoke", methods=methods, seeds=2, model=model, iterations=1, samples=2,
              episodes=3, quiet=False)

for t in load_results(out).trainings:
    print(f"{t.task:30} {t.method:9} seed {t.seed}: {t.status}, fitness {t.fitness}")
scores = bench_report(out)  # results.md, results.csv, fitness.png, profile.png again, from results.json
for agg in scores.aggregates:
    print(f"{agg.method}: IQM of the normalized score {agg.iqm} over {agg.tasks} tasks")
