"""The Python API: a short design run on a task card, with replayed example replies.

    python examples/api_design.py            # replays examples/demo/replies.yaml (no API key)
    python examples/api_design.py openai/gpt-4o   # a live model through litellm

The replayed replies were written by hand; they are not any LLM's output.
"""

import sys
from pathlib import Path

from reward_designer import check, design, load_task

here = Path(__file__).parent
task = load_task("halfcheetah-run")

# The critic alone, on a program of our own.
report = check((here / "my_reward.py").read_text(), task.env_id, workdir="runs/api-check")
print("critic:", "accepted" if report.ok else f"rejected: {report.findings}")

model = sys.argv[1] if len(sys.argv) > 1 else None
record = design(
    task,
    out="runs/api-demo",
    model=model,
    replay=None if model else str(here / "demo" / "replies.yaml"),
    iterations=2,
    samples=2,
    train_steps=50_000,
    episodes=3,
)
print(f"status: {record.status}; best: {record.best.name if record.best else None}")
for c in record.candidates:
    print(f"  {c.name}: {c.status}, fitness {c.fitness}")
