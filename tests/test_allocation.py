"""How a round's training budget is spent: successive halving trains every candidate a little, the
better half further, and keeps the ones it stopped in the run and in what the designer reads."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import yaml

from fake_executor import FakeExecutor, program
from reward_designer import design, load_task
from reward_designer.records import CandidateRecord
from reward_designer.run import Run
from reward_designer.schemas import ResultEnvelope
from reward_designer.selection import ALLOCATIONS, FullBudget, SuccessiveHalving


class Slots:
    """The executor as an allocation sees it: slots, and a cancel on the first error."""

    slots = 2

    def __init__(self):
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


def scored(qualities: dict[int, float | None]):
    """A ``train`` whose candidate i scores qualities[i] at any budget (None: its training fails)."""
    calls, lock = [], threading.Lock()

    def train(i: int, budget: float = 1.0) -> CandidateRecord:
        with lock:
            calls.append((i, budget))
        if qualities[i] is None:
            return CandidateRecord(iteration=1, index=i, status="failed", error="boom")
        return CandidateRecord(iteration=1, index=i, status="trained", fitness=qualities[i],
                               budget=budget if budget < 1 else None)

    return train, calls


def test_successive_halving_trains_the_better_half_further_and_spends_under_a_third_of_full():
    qualities = {i: q for i, q in enumerate([3.0, 7.0, 1.0, 5.0, 8.0, 2.0, 6.0, 4.0])}
    train, calls = scored(qualities)
    records = {r.index: r for r in SuccessiveHalving().run(range(8), train, Slots())}

    assert records[4].status == "trained" and records[4].budget is None  # the best, to the whole budget
    culled = {i: r.budget for i, r in records.items() if r.status == "culled"}
    assert culled == {0: 0.125, 2: 0.125, 5: 0.125, 7: 0.125, 3: 0.25, 6: 0.25, 1: 0.5}
    assert records[1].note() == "stopped at 50% of the budget, task score 7"
    # A continued training costs only its new steps: each candidate spends the most it was given.
    spent = sum(max(b for j, b in calls if j == i) for i in qualities)
    assert spent == 2.5 and spent / 8 <= 0.35
    full_train, full_calls = scored(qualities)
    assert [r.status for r in FullBudget().run(range(8), full_train, Slots())] == ["trained"] * 8
    assert sorted(full_calls) == [(i, 1.0) for i in range(8)]


def test_the_first_cut_waits_for_the_minimum_number_of_updates():
    qualities = {i: float(i) for i in range(8)}
    # 24 updates: 1/8 would be 3; the first rung is 10 updates, then 20, and the last two train to the end.
    train, calls = scored(qualities)
    records = {r.index: r for r in SuccessiveHalving(min_updates=10).run(range(8), train, Slots(), updates=24)}
    assert sorted({b for _, b in calls}) == [10 / 24, 20 / 24, 1.0]
    assert sorted(i for i, b in calls if b == 1.0) == [6, 7]  # no third cut: 40 updates are over the budget
    assert records[6].status == records[7].status == "trained"
    assert {i: r.budget for i, r in records.items() if r.status == "culled"} == {
        0: 10 / 24, 1: 10 / 24, 2: 10 / 24, 3: 10 / 24, 4: 20 / 24, 5: 20 / 24}
    # A budget of 8 updates has no room for a cut: everyone trains to the end, as under full.
    train, calls = scored(qualities)
    assert [r.status for r in SuccessiveHalving(min_updates=10).run(range(8), train, Slots(), updates=8)] == [
        "trained"] * 8
    assert sorted(calls) == [(i, 1.0) for i in range(8)]
    # Where 1/8 of the budget is over the minimum, the rungs are 1/8, 1/4 and 1/2, in whole updates.
    assert SuccessiveHalving(min_updates=10).rungs(160) == [20 / 160, 40 / 160, 80 / 160]
    assert SuccessiveHalving(min_updates=10).rungs(None) == [0.125, 0.25, 0.5]


def test_a_training_that_fails_at_a_rung_ends_there_and_ties_go_to_the_earlier_candidate():
    train, calls = scored({0: 2.0, 1: None, 2: 2.0, 3: 1.0})
    records = list(SuccessiveHalving().run(range(4), train, Slots()))
    by_index = {r.index: r for r in records}
    assert len(records) == 4 and by_index[1].status == "failed"
    assert [i for i, b in calls if b == 1.0] == [0]  # 0 and 2 tie: the earlier one goes on
    assert by_index[2].status == by_index[3].status == "culled"
    assert "halving" in ALLOCATIONS and "full" in ALLOCATIONS


class Checkpointing(FakeExecutor):
    """The fake executor, with trainings that stop at ``stop_at_steps`` and continue a checkpoint, as
    the real worker's do; it counts the env steps each job trained."""

    def __init__(self):
        super().__init__()
        self.trained: dict[str, int] = {}

    def train(self, job, workdir):
        start = int(np.load(job.resume_from)["global_step"]) if job.resume_from else 0
        end = min(job.stop_at_steps or job.total_steps, job.total_steps)
        assert end > start, "a training was asked for steps it already had"
        result = super().train(job, workdir)
        result = result.model_copy(update={"steps": end, "complete": end == job.total_steps,
                                           "resumed_at": start or None})
        (Path(workdir) / "result.json").write_text(ResultEnvelope(result=result).model_dump_json())
        if not result.complete:
            np.savez(job.checkpoint, global_step=end)
        name = str(Path(workdir).parent.relative_to(Path(workdir).parents[2]))
        self.trained[name] = self.trained.get(name, 0) + end - start
        return result


def replies(tmp_path: Path, scores: list[float]) -> str:
    path = tmp_path / "replies.yaml"
    path.write_text(yaml.safe_dump({"design": [program(s) for s in scores] * 2, "fix": [],
                                    "analyze": ["- keep going"] * 16}))
    return str(path)


# 80 updates of 256 steps: the least where halving's first rung is 1/8 of the budget, not its 10-update minimum.
CONFIG = dict(train_steps=20480, episodes=2, device="cpu", ppo={"num_envs": 4, "num_steps": 64})


def test_a_design_round_with_halving_keeps_its_culled_candidates_and_tells_the_designer(tmp_path):
    fake = Checkpointing()
    record = design(load_task("pendulum-upright"), tmp_path / "run", replay=replies(tmp_path, [1.0, 4.0, 2.0, 3.0]),
                    iterations=2, samples=4, allocation="halving", executor=fake, **CONFIG)

    first = {c.index: c for c in record.candidates if c.iteration == 1}
    assert record.status == "done" and record.best.name == "iter_01/cand_01"
    assert [first[i].status for i in range(4)] == ["culled", "trained", "culled", "culled"]
    assert (first[0].budget, first[2].budget, first[3].budget) == (0.125, 0.125, 0.25)
    assert first[3].steps == 5120 and first[3].fitness == 3.0
    # Each training continued its checkpoint: 4 x 2560 + 2 x 2560 + 1 x (20480 - 5120) steps, not 4 x 20480.
    assert sum(v for k, v in fake.trained.items() if k.startswith("iter_01")) == 10240 + 5120 + 15360
    run = tmp_path / "run"
    assert json.loads((run / "iter_01/cand_03/measure_5120/analysis.json").read_text())["fitness_mean"] == 3.0
    assert first[1].steps == 20480
    round_two = (run / "iter_02" / "prompt.md").read_text()
    assert "stopped at 25% of the budget, task score 3" in round_two  # the designer learns from them too

    again = Checkpointing()
    assert Run.open(run, executor=again).execute(quiet=True).candidates == record.candidates
    assert again.jobs == []  # resumed: every rung's measure is read back, nothing retrained


def test_the_full_budget_trains_everyone_to_the_end(tmp_path):
    fake = Checkpointing()
    record = design(load_task("pendulum-upright"), tmp_path / "run", replay=replies(tmp_path, [1.0, 2.0]),
                    iterations=1, samples=2, executor=fake, **CONFIG)
    assert [c.status for c in record.candidates] == ["trained", "trained"]
    assert sorted(fake.trained.values()) == [20480, 20480]


def test_a_design_round_waits_for_the_minimum_updates_before_its_first_cut(tmp_path):
    # 24 updates of 256 steps: the first rung is 10 updates (not 3, an eighth), the next 20.
    fake = Checkpointing()
    record = design(load_task("pendulum-upright"), tmp_path / "run", replay=replies(tmp_path, [1.0, 4.0, 2.0, 3.0]),
                    iterations=1, samples=4, allocation="halving", executor=fake, **{**CONFIG, "train_steps": 24 * 256})
    first = {c.index: c for c in record.candidates}
    assert [first[i].status for i in range(4)] == ["culled", "trained", "culled", "culled"]
    assert (first[0].steps, first[2].steps, first[3].steps) == (2560, 2560, 5120)
    assert first[1].steps == 24 * 256
