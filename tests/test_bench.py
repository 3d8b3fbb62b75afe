"""Batch runs (bench): the methods over a suite, resume, the scores against results.json, failures kept.

Most tests drive the whole batch with an in-process fake executor (no worker starts): each training's
fitness comes from the reward it trained on, through the policy file, as in tests/fake_executor.py.
The designer's replies are scripted (a replay file written here), never an LLM's.
"""

from __future__ import annotations

import csv
import json
import re
import time

import numpy as np
import pytest
from fake_executor import FakeExecutor, program
from test_pipeline import replies
from typer.testing import CliRunner

from reward_designer.bench import DESIGN_SEED, SPARSE_REWARD, bench_report, load_results, resume_bench, run_bench
from reward_designer.records import RunError

ENV_SCORE, EXPERT_PROGRAM_SCORE, SPARSE_SCORE = 2.0, 2.5, 1.0
SEED_STEP = 0.01  # each seed scores a little more, so seeds differ and the search's own seed stands out


class ScoringExecutor(FakeExecutor):
    """FakeExecutor whose trainings score by the reward they train on: a program's SCORE, the env's own
    reward, the sparse wrapper, or another program (an expert beside its card); plus SEED_STEP per seed."""

    def __init__(self, slots: int = 2, fail=None):
        super().__init__(slots)
        self.fail = fail or (lambda job: None)  # job -> an exception to raise, or None
        self.trained: list[tuple[str | None, int]] = []

    def train(self, job, workdir):
        if (exc := self.fail(job)) is not None:
            raise exc
        code = job.code
        if code is None:
            score = ENV_SCORE
        elif m := re.search(r"SCORE = ([-\d.]+)", code):
            score = float(m.group(1))
        elif SPARSE_REWARD in code:
            score = SPARSE_SCORE
        else:
            score = EXPERT_PROGRAM_SCORE
        score += SEED_STEP * job.seed
        with self._lock:
            self.trained.append((job.env_id, job.seed))
        return self.trained_to(score, job, workdir)


METHODS = "designed,expert,sparse,random"


@pytest.fixture(autouse=True)
def few_bootstrap_samples(monkeypatch):
    """The confidence intervals' 2000 resamples take seconds a report; the tests check them, not their width."""
    monkeypatch.setattr("reward_designer.scores.BOOTSTRAP_REPS", 100)


def smoke(tmp_path, executor, **kwargs):
    replayed = replies(tmp_path, [program(3.0), program(4.0)])
    return run_bench(tmp_path / "bench", suite="smoke", methods=METHODS, seeds=2, replay=replayed, iterations=1,
                     samples=2, episodes=2, executor=executor, **kwargs)


def by_key(results):
    return {(t.task, t.method, t.seed): t for t in results.trainings}


def test_a_smoke_batch_scores_every_method_and_the_report_agrees_with_results_json(tmp_path):
    fake = ScoringExecutor()
    t0 = time.monotonic()
    results = smoke(tmp_path, fake)
    seconds = time.monotonic() - t0

    trainings = by_key(results)
    tasks = ["halfcheetah-backwards-smoke", "pendulum-upright"]
    assert sorted({t for t, _, _ in trainings}) == tasks
    assert len(trainings) == 2 * 4 * 2 and all(t.status == "trained" for t in trainings.values())
    # designed: the search's winner (SCORE 4.0, trained at DESIGN_SEED) trained again on seeds 0 and 1.
    for task in tasks:
        assert [trainings[(task, "designed", s)].fitness for s in (0, 1)] == pytest.approx([4.0, 4.01])
        design = next(d for d in results.designs if d.task == task)
        assert design.status == "done" and design.search_fitness == pytest.approx(4.0 + SEED_STEP * DESIGN_SEED)
        assert design.code_hash == trainings[(task, "designed", 0)].code_hash != ""
    assert trainings[("pendulum-upright", "expert", 1)].fitness == pytest.approx(ENV_SCORE + SEED_STEP)
    assert trainings[("halfcheetah-backwards-smoke", "expert", 0)].fitness == EXPERT_PROGRAM_SCORE  # beside the card
    assert trainings[("pendulum-upright", "sparse", 0)].fitness == SPARSE_SCORE
    assert trainings[("pendulum-upright", "random", 0)].steps == 0 and trainings[("pendulum-upright", "random", 0)].fitness == 0.0
    # Each scoring training once, with its seed; the random method trains nothing.
    scoring = [s for _, s in fake.trained if s != DESIGN_SEED]
    assert sorted(scoring) == [0] * 6 + [1] * 6
    assert seconds < 90, f"the smoke batch took {seconds:.0f} s"

    # The table's normalized scores, recomputed here from results.json alone.
    saved = json.loads((tmp_path / "bench" / "results.json").read_text())
    fit = {}
    for t in saved["trainings"]:
        fit.setdefault((t["task"], t["method"]), []).append(t["fitness"])
    scores = bench_report(tmp_path / "bench")
    for task in tasks:
        sparse, expert = np.mean(fit[(task, "sparse")]), np.mean(fit[(task, "expert")])
        for method in ("designed", "random"):
            want = (np.mean(fit[(task, method)]) - sparse) / abs(expert - sparse)
            row = next(r for r in scores.per_task if (r.task, r.method) == (task, method))
            assert row.normalized == pytest.approx(want)
    markdown = (tmp_path / "bench" / "results.md").read_text()
    pendulum_row = next(line for line in markdown.splitlines() if line.startswith("| pendulum-upright"))
    assert f"{(4.005 - 1.005) / (2.005 - 1.005):.2f}" in pendulum_row  # designed's normalized score: 3.00
    assert "recorded replies" in markdown and "not a live model" in markdown
    designed = next(a for a in scores.aggregates if a.method == "designed")
    assert designed.tasks == 2 and designed.at_or_above_expert == 1.0
    assert designed.iqm_ci[0] <= designed.iqm <= designed.iqm_ci[1]
    with open(tmp_path / "bench" / "results.csv") as f:
        assert len(list(csv.DictReader(f))) == len(results.trainings)
    for plot in ("fitness.png", "profile.png"):
        assert (tmp_path / "bench" / plot).read_bytes()[:4] == b"\x89PNG"


class Killed(BaseException):
    """A kill mid-batch: nothing in the batch may catch it."""


def test_a_batch_killed_mid_way_resumes_without_redoing_a_finished_training(tmp_path):
    def kill_at_the_seventh(job):
        return Killed() if len(first.trained) == 6 else None

    first = ScoringExecutor(slots=1, fail=kill_at_the_seventh)
    with pytest.raises(Killed):
        smoke(tmp_path, first)
    kept = {k: t for k, t in by_key(load_results(tmp_path / "bench")).items() if t.status == "trained"}
    assert len(first.trained) == 6 and len(kept) == 8  # six trainings, and the two random policies

    fresh = ScoringExecutor()
    results = resume_bench(tmp_path / "bench", executor=fresh)
    assert len(results.trainings) == 16 and all(t.status == "trained" for t in results.trainings)
    # 16 trainings in the batch (2 tasks x (2 design candidates + 3 trained methods x 2 seeds)): each ran once.
    assert len(fresh.trained) == 16 - 6
    again = by_key(results)
    assert all(again[k].fitness == t.fitness and again[k].folder == t.folder for k, t in kept.items())
    assert by_key(load_results(tmp_path / "bench")) == again


def test_a_failing_method_is_recorded_and_the_batch_goes_on(tmp_path):
    def expert_program_breaks(job):
        if job.code is not None and "SCORE" not in job.code and SPARSE_REWARD not in job.code:
            return RuntimeError("the expert's training broke")
        return None

    results = smoke(tmp_path, ScoringExecutor(fail=expert_program_breaks))
    trainings = by_key(results)
    broken = [t for t in trainings.values() if t.status != "trained"]
    assert {(t.task, t.method) for t in broken} == {("halfcheetah-backwards-smoke", "expert")}
    assert all(t.status == "error" and "the expert's training broke" in t.error for t in broken)
    assert len(trainings) == 16  # every other training ran
    scores = bench_report(tmp_path / "bench")
    cheetah = next(r for r in scores.per_task if (r.task, r.method) == ("halfcheetah-backwards-smoke", "designed"))
    assert cheetah.fitness_mean is not None and cheetah.normalized is None  # no expert anchor: no score
    assert "Trainings that did not finish" in (tmp_path / "bench" / "results.md").read_text()


def test_a_design_search_that_finds_nothing_is_recorded_and_the_other_methods_still_score(tmp_path):
    replayed = replies(tmp_path, [program(3.0, broken=True)])  # the critic rejects it, and there is no fix
    results = run_bench(tmp_path / "bench", tasks="pendulum-upright", methods="designed,expert", seeds=1,
                        replay=replayed, iterations=1, samples=1, fix_attempts=0, executor=ScoringExecutor())
    design = results.designs[0]
    assert design.status == "failed" and design.best is None and "no candidate" in design.error
    designed, expert = by_key(results)[("pendulum-upright", "designed", 0)], by_key(results)[("pendulum-upright", "expert", 0)]
    assert designed.status == "error" and "the design search ended failed" in designed.error
    assert expert.status == "trained" and expert.fitness == ENV_SCORE


def test_scores_clip_for_averaging_keep_the_raw_value_and_leave_out_what_is_undefined():
    from reward_designer.scores import score

    runs = {("same", "sparse"): {0: 1.0, 1: 1.0}, ("same", "expert"): {0: 1.0, 1: 1.0},  # equal anchors
            ("same", "designed"): {0: 2.0, 1: 2.0},
            ("far", "sparse"): {0: 0.0, 1: 0.0}, ("far", "expert"): {0: 2.0, 1: 2.0},
            ("far", "designed"): {0: 8.0, 1: 8.0},  # 4x the expert's gain: 4.0 raw, 3.0 clipped
            ("short", "sparse"): {0: 0.0, 1: 0.0}, ("short", "expert"): {0: 1.0, 1: 1.0},
            ("short", "designed"): {0: 0.5}}  # seed 1 failed
    scores = score(runs, ["same", "far", "short"], ["designed", "expert", "sparse"], [0, 1])
    norm = {(r.task, r.method): r.normalized for r in scores.per_task}
    assert norm[("same", "designed")] is None and norm[("far", "designed")] == 4.0 and norm[("short", "designed")] == 0.5
    designed = next(a for a in scores.aggregates if a.method == "designed")
    assert designed.tasks == 1 and designed.mean == designed.iqm == 3.0  # only "far" has the anchors and every seed
    assert designed.at_or_above_expert == 2 / 3 and designed.compared == 3
    assert scores.profile.share["designed"][0] == 1.0 and scores.profile.share["designed"][-1] == 0.0


def test_bad_input_is_refused_before_anything_runs(tmp_path):
    with pytest.raises(RunError, match="unknown method nope"):
        run_bench(tmp_path / "a", suite="smoke", methods="expert,nope", executor=ScoringExecutor())
    with pytest.raises(RunError, match="needs a model"):
        run_bench(tmp_path / "b", suite="smoke", methods="designed", executor=ScoringExecutor())
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    smoke(tmp_path, ScoringExecutor())
    with pytest.raises(RunError, match="already holds a batch"):
        smoke(tmp_path, ScoringExecutor())


def test_the_cli_runs_reports_and_resumes_a_batch(tmp_path):
    from reward_designer import cli

    fake = ScoringExecutor()
    replayed = replies(tmp_path, [program(3.0), program(4.0)])
    args = ["bench", "--tasks", "pendulum-upright", "--methods", "expert,sparse,random", "--seeds", "1",
            "--out", str(tmp_path / "b"), "--replay", replayed, "--episodes", "2", "--device", "cpu"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("reward_designer.bench.make_executor", lambda config: fake)
        result = CliRunner().invoke(cli.app, args)
        assert result.exit_code == 0, result.output
        assert "normalized" in result.output and "pendulum-upright" in result.output
        again = CliRunner().invoke(cli.app, ["bench", "--resume", str(tmp_path / "b")])
        assert again.exit_code == 0, again.output
    assert len(fake.trained) == 2  # expert and sparse once; the resume trained nothing
    shown = CliRunner().invoke(cli.app, ["bench", "--report", str(tmp_path / "b")])
    assert shown.exit_code == 0 and "pendulum-upright" in shown.output
    refused = CliRunner().invoke(cli.app, ["bench", "--report", str(tmp_path / "nothing")])
    assert refused.exit_code == 2 and "no batch" in refused.output


@pytest.mark.slow
def test_a_real_batch_on_the_local_executor(tmp_path):
    """Sandboxed workers for real: the env's own reward (pendulum's expert) and the untrained floor."""
    results = run_bench(tmp_path / "b", tasks="pendulum-upright", methods="expert,random", seeds=1, episodes=2,
                        device="cpu")
    expert, floor = by_key(results)[("pendulum-upright", "expert", 0)], by_key(results)[("pendulum-upright", "random", 0)]
    assert expert.status == "trained" and expert.steps == 8192 and 0.0 <= expert.fitness <= 1.0, expert
    assert floor.status == "trained" and floor.steps == 0 and 0.0 <= floor.fitness <= 1.0, floor
    policy = tmp_path / "b" / expert.folder / "train" / "policy.npz"
    assert policy.is_file() and json.loads((tmp_path / "b" / expert.folder / "analysis.json").read_text())["ok"]


@pytest.mark.slow
def test_the_ray_executor_runs_a_batch_and_asks_for_no_gpu_the_cluster_lacks(tmp_path):
    ray = pytest.importorskip("ray", reason="the ray extra is not installed: pip install 'reward-designer[ray]'")
    from reward_designer.ray_executor import RayExecutor
    from reward_designer.sandbox import Limits
    from reward_designer.schemas import TrainJob

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        executor = RayExecutor(slots=1)
        with pytest.raises(RuntimeError, match="no GPU"):  # at once: a task asking for one would pend forever
            executor.run(TrainJob(env_id="Pendulum-v1", code=None, total_steps=64, device="cuda"), tmp_path / "gpu",
                         Limits(wall_s=60))
        results = run_bench(tmp_path / "b", tasks="pendulum-upright", methods="expert", seeds=1, episodes=2,
                            device="cpu", executor=executor)
        expert = by_key(results)[("pendulum-upright", "expert", 0)]
        assert expert.status == "trained" and expert.steps == 8192 and expert.fitness is not None, expert
        assert (tmp_path / "b" / expert.folder / "train" / "policy.npz").is_file()
    finally:
        ray.shutdown()
