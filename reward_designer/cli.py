"""The `reward-designer` command.

Exit codes: 0 success; 1 the critic rejected the reward program, for any
reason, a syntax error included (`check`, `train`, `refine --edit`), training
failed (`train`), a policy could not be filmed (`play`), no candidate
survived (`design`, `resume`, `refine`) or a training of the batch did not
finish (`bench`); 2 bad input that is not the
program under test (a missing or unreadable file, a flag, a task card, a
fitness file) or configuration, or an LLM error that retries could not get
past (one line on stderr); 130 interrupted.
"""

from __future__ import annotations

import errno
import hashlib
import os
import signal
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.table import Table

from .errors import UserError

app = typer.Typer(
    help="LLM-designed dense rewards for RL: a critic checks them in a sandbox, policies train on them, "
    "an analyzer turns what the policies did into feedback, round after round.",
    epilog=__doc__.partition("\n\n")[2],  # the exit codes
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
err = Console(stderr=True)
out = Console()


def _version(value: bool) -> None:
    if value:
        from . import __version__

        print(f"reward-designer {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                          help="Print the version and exit.")] = False,
) -> None:
    pass  # the app's help says what it does; this only holds the global options


class Device(str, Enum):
    auto = "auto"
    cpu = "cpu"
    cuda = "cuda"


class Sim(str, Enum):
    mujoco = "mujoco"
    warp = "warp"


SIM_HELP = ("What training steps: mujoco (MuJoCo on the CPU, a slab of envs per core) or warp "
            "(one MuJoCo Warp batch of many envs on the --device GPU; the 'warp' extra).")


class BadInput(UserError):
    """Bad input or configuration: one line on stderr, exit code 2."""


def _fail(message: str, code: int = 2) -> None:
    err.print(f"error: {message}", markup=False, highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _device(device: Device) -> str:
    import torch

    if device is Device.auto:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device is Device.cuda and not torch.cuda.is_available():
        raise BadInput("--device cuda: no CUDA device is available here")
    return device.value


def _sim(sim: Sim, device: str) -> str:
    """The simulator a training uses, checked: MuJoCo Warp needs its extra, and is slow on a CPU."""
    if sim is Sim.warp:
        import importlib.util

        if importlib.util.find_spec("mujoco_warp") is None:
            raise BadInput("--sim warp needs MuJoCo Warp: pip install 'reward-designer[warp]'")
        if device == "cpu":
            err.print("warning: --sim warp on the CPU runs Warp's CPU backend, far slower than --sim mujoco",
                      markup=False)
    return sim.value


def _check_env(env_id: str, env_kwargs: dict | None = None) -> None:
    """A registered env that our PPO can train on (Box observations and actions), or BadInput."""
    import gymnasium as gym

    from .trainer import check_trainable

    from .tasks import did_you_mean

    try:
        gym.spec(env_id)
    except Exception:  # noqa: BLE001 - gymnasium raises several kinds for an unknown id
        if ":" not in env_id:  # "module:EnvId" is registered by gym.make, which imports the module
            hint = did_you_mean(env_id, gym.registry, "")
            raise BadInput(f"unknown environment id {env_id!r}: not registered with gymnasium{hint}") from None
    try:
        check_trainable(env_id, env_kwargs)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


MAX_FILE_BYTES = 1_000_000  # far past any program the critic takes (20,000 characters): not read whole


def _read_python(path: Path, what: str) -> str:
    """A file's text, or BadInput when it is no text to give the critic (missing, not UTF-8, huge).
    Whether the text is a good program, syntax included, is the critic's to say."""
    try:
        with path.open("rb") as f:
            data = f.read(MAX_FILE_BYTES + 1)
    except OSError as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_FILE_BYTES:
        raise BadInput(f"{what} {path} is over {MAX_FILE_BYTES:,} bytes: not a program")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"cannot read {what} {path}: not UTF-8 text") from None


SET_HELP = ("A PPO hyperparameter over the env's preset (and a task card's ppo:), KEY=VALUE: a PPOConfig field "
            "and a Python literal; repeat the option for more, e.g. --set lr=1e-4 --set 'hidden=(128,128)' "
            "--set desired_kl=None.")


MAX_SET_CHARS = 1000  # a hyperparameter's value; a literal is parsed whole before it is checked


def _ppo_overrides(pairs: list[str] | None) -> dict:
    from .presets import parse_overrides

    for pair in pairs or []:
        if len(pair) > MAX_SET_CHARS:
            raise BadInput(f"--set {pair[:40]!r}...: {len(pair):,} characters; a value is at most {MAX_SET_CHARS:,}")
    try:
        return parse_overrides(pairs or [])
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def custom_task_name(env_id: str, task: str) -> str:
    """Named for the env and the task's text, so another task on the same env gets its own run folder."""
    digest = hashlib.sha256(task.strip().encode()).hexdigest()[:6]
    return f"{env_id.lower().split(':')[-1].split('-v')[0]}-{digest}"


def _fitness_file(path: Path | None):
    import ast

    from pydantic import ValidationError

    from .program import fitness_from_code

    if path is None:
        return None
    code = _read_python(path, "fitness file")
    try:  # the measure the run is judged by is input, not a program under test: a syntax error is exit 2
        ast.parse(code)
    except (SyntaxError, ValueError) as exc:
        raise BadInput(f"{path} is not valid Python (line {getattr(exc, 'lineno', '?')}: "
                       f"{getattr(exc, 'msg', exc)})") from None
    if "def compute_fitness" not in code:
        raise BadInput(f"{path} defines no compute_fitness(state, action)")
    try:
        return fitness_from_code(code, "file", f"from {path}")
    except ValidationError as exc:  # an AGGREGATE it does not know
        raise BadInput(f"{path}: AGGREGATE: {exc.errors()[0]['msg']}") from None


def _guard(fn):
    """Turn the library's user-facing errors into one line and exit code 2."""
    import functools

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UserError as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            _fail("interrupted", 130)
        except OSError as exc:  # a full disk, a folder we may not write: where, in one line
            what = "the disk is full" if exc.errno == errno.ENOSPC else (exc.strerror or str(exc))
            _fail(f"{what}: {exc.filename}" if exc.filename else what)

    return wrapper


# ------------------------------------------------------------------ design
@app.command()
@_guard
def design(
    task_card: Annotated[Optional[str], typer.Argument(help="A task card name from `reward-designer tasks`, or a YAML file.")] = None,
    env: Annotated[Optional[str], typer.Option(help="Gymnasium env id (with --task), e.g. HalfCheetah-v5.")] = None,
    task: Annotated[Optional[str], typer.Option(help="What the policy should do, in plain language.")] = None,
    model: Annotated[Optional[str], typer.Option(help="litellm model string, e.g. openai/gpt-4o. Default: $REWARD_DESIGNER_MODEL.")] = None,
    api_base: Annotated[Optional[str], typer.Option(help="Base URL of an OpenAI-compatible server (vLLM, Ollama), e.g. http://localhost:8000/v1.")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Design rounds.")] = 3,
    samples: Annotated[int, typer.Option(min=1, help="Reward programs asked of the LLM per round.")] = 4,
    train_steps: Annotated[Optional[int], typer.Option(min=1, help="PPO env steps per candidate, in whole PPO batches (rounded down, at least one). Default: the task card's, else 1000000.")] = None,
    out: Annotated[Optional[Path], typer.Option(help="Run folder. Default: runs/<task name>.")] = None,
    seed: Annotated[int, typer.Option(help="Seed for training and the critic's probe (the evaluation episodes are the same for every run).")] = 0,
    device: Annotated[Device, typer.Option(help="Where policies and rewards run.")] = Device.auto,
    sim: Annotated[Sim, typer.Option(help=SIM_HELP)] = Sim.mujoco,
    workers: Annotated[int, typer.Option(min=1, help="Candidates trained at once, each on its share of the CPU cores.")] = 1,
    allocation: Annotated[str, typer.Option(help="How a round's training budget is spent: 'full' (every candidate to the whole budget) or 'halving' (all to 1/8 of it, the better half by task score on to twice that, and so on).")] = "full",
    fitness: Annotated[Optional[Path], typer.Option(help="Python file defining compute_fitness(state, action): the hidden measure of success.")] = None,
    llm_critic: Annotated[bool, typer.Option("--llm-critic", help="Also have the LLM review each program against the task.")] = False,
    fix_attempts: Annotated[int, typer.Option(min=0, help="Times a rejected program goes back to the LLM for a fix.")] = 2,
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes per trained policy.")] = 5,
    replay: Annotated[Optional[Path], typer.Option(help="Serve recorded LLM replies instead of a live model: a YAML file, or a run's llm/calls.jsonl.")] = None,
    require_sandbox: Annotated[bool, typer.Option("--require-sandbox", help="Refuse to run if a sandbox layer is missing.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help=SET_HELP)] = None,
    name: Annotated[Optional[str], typer.Option(help="Name of a --task task (its run folder's default name). Default: the env and a hash of the text.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accept a measure the LLM writes without asking (batch use).")] = False,
    videos: Annotated[bool, typer.Option("--videos", help="Film each round's best policy as the run goes (iter_XX/cand_YY/video.mp4; `report` shows them).")] = False,
    judge: Annotated[Optional[str], typer.Option(help="A litellm vision model shown frames of each round's best policy with the task: its verdict goes into the next round's prompt and the report, never into the fitness.")] = None,
    judge_api_base: Annotated[Optional[str], typer.Option(help="Base URL of the --judge model's OpenAI-compatible server, if not its provider's.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")] = False,
) -> None:
    """Design a reward for a task: from a task card, or from --env and --task."""
    from .records import RunConfig
    from .tasks import load_task, task_from_flags

    if task_card and (env or task):
        raise BadInput("give a task card or --env with --task, not both")
    if task_card:
        spec = load_task(task_card)
    else:
        if not env or task is None:
            raise BadInput("give a task card, or both --env and --task")
        if not task.strip():
            raise BadInput("--task is empty: say what the policy should do")
        spec = task_from_flags(custom_task_name(env, task) if name is None else _task_name(name), env, task)
    ppo = _ppo_overrides(set_)
    _check_env(spec.env_id, spec.env_kwargs)
    if fitness is not None:
        spec = spec.model_copy(update={"fitness": _fitness_file(fitness)})
    model = model or os.environ.get("REWARD_DESIGNER_MODEL")
    if model is None and replay is None:
        raise BadInput("no model configured: pass --model or set REWARD_DESIGNER_MODEL")
    if replay is not None and not replay.is_file():
        raise BadInput(f"--replay: no file {replay}")
    dev = _device(device)
    config = RunConfig(
        task=spec, model=model, api_base=api_base, replay=str(replay.resolve()) if replay else None,
        iterations=iterations, samples=samples, train_steps=train_steps or spec.train_steps, seed=seed,
        device=dev, sim=_sim(sim, dev), workers=workers, fix_attempts=fix_attempts, llm_critic=llm_critic,
        episodes=episodes, require_sandbox=require_sandbox, ppo=ppo, allocation=allocation,
        videos=videos, judge=judge, judge_api_base=judge_api_base,
    )
    if name is not None and task_card:
        raise BadInput("--name names a --task task; a card has its own name")
    _require_sandbox(require_sandbox)
    from .run import Run  # heavy (torch): once the input is known good

    run = Run.create(out or Path("runs") / spec.name, config, console=err)
    run.accept_fitness = _shown_measure(yes)
    _execute(run, quiet)


@app.command()
@_guard
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run folder to continue.")],
    iterations: Annotated[Optional[int], typer.Option(min=1, help="Extend the run (a finished one too) to this many rounds.")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Accept a measure the LLM writes without asking (batch use).")] = False,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")] = False,
) -> None:
    """Continue a stopped run, or extend a finished one (--iterations): no finished LLM call or training is redone."""
    from .run import Run

    run = Run.open(run_dir, console=err)
    if iterations is not None:
        run.add_rounds(iterations)
    run.accept_fitness = _shown_measure(yes)
    _require_sandbox(run.config.require_sandbox)
    # What design checked, again: this may be another machine, or the env may have changed.
    _check_env(run.config.task.env_id, run.config.task.env_kwargs)
    if run.config.device.startswith("cuda"):
        _device(Device.cuda)
    _execute(run, quiet)


def _task_name(name: str) -> str:
    """A --name, checked: it names the default run folder, so one plain path component."""
    import re

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
        raise BadInput(f"--name {name!r}: use letters, digits, '.', '_' and '-' (at most 64), starting with a letter or digit")
    return name


def _shown_measure(yes: bool):
    """The hook that shows a measure the LLM wrote before the search spends anything on it, and asks
    whether to go on: at a terminal unless --yes; piped or logged runs go on."""
    def accept(fitness, path: Path) -> bool:
        err.print(f"The LLM wrote the task's measure ({path}): {fitness.description}; "
                  f"AGGREGATE {fitness.aggregate}", markup=False, soft_wrap=True)
        err.print(fitness.code.strip()[:2000], markup=False, highlight=False)
        if yes or not sys.stdin.isatty():
            return True
        return typer.confirm("Search with this measure?", default=True, err=True)
    return accept


def _execute(run, quiet: bool) -> None:
    # A SIGTERM (a scheduler, docker stop, timeout) stops the run as Ctrl-C does: saved as stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        record = run.execute(quiet=quiet)
    except KeyboardInterrupt:
        _fail(f"interrupted; `reward-designer resume {run.folder.path}` continues the run where it stopped", 130)
    if record.status != "done":
        _fail(record.error or "the run failed", 1)
    best = record.best
    err.print(f"best: {best.name} (fitness {best.fitness:.3f}) -> {run.folder.best / 'reward.py'}")


def _require_sandbox(required: bool) -> None:
    """Say once which sandbox layers are missing (the workers this process starts then say nothing more),
    or refuse with ``required``."""
    from .sandbox.layers import plan_layers

    plan = plan_layers()
    if required and plan.missing:
        raise BadInput("--require-sandbox: missing layers: " + ", ".join(s.name for s in plan.missing))
    if plan.warned or not plan.missing:
        return
    plan.warned = True
    for s in plan.missing:
        err.print(f"warning: sandbox layer '{s.name}' is not active: {s.detail}", markup=False, soft_wrap=True)
    # design and resume call this; a run started with `design --require-sandbox` resumes under it too.
    err.print("warning: untrusted reward code runs less confined; `design --require-sandbox` refuses to run instead",
              markup=False, soft_wrap=True)


# ------------------------------------------------------------------- tasks
@app.command()
def tasks() -> None:
    """List the task cards in envs/: their suites, and their anchors (each method's measured fitness)."""
    from .tasks import card_suites, list_tasks

    cards = list_tasks()
    table = Table()
    # A name is what `design` takes: it is never cut; the other columns fold to make room.
    table.add_column("name", no_wrap=True, min_width=max((len(t.name) for t in cards), default=4))
    for column in ("env", "suites", "task", "fitness", "anchors"):
        table.add_column(column, overflow="fold")
    for t in cards:
        anchors = ", ".join(f"{method} {a.mean:.3g}±{a.std:.2g}" for method, a in t.anchors.items())
        table.add_row(t.name, t.env_id, " ".join(card_suites(t)), t.description,
                      t.fitness.description if t.fitness else "", anchors or "not measured")
    out.print(table)


# ------------------------------------------------------------------- check
@app.command()
@_guard
def check(
    file: Annotated[Path, typer.Argument(help="Python file defining compute_reward(state, action).")],
    env: Annotated[str, typer.Option(help="Gymnasium env id to probe it on.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print the critic's report as JSON.")] = False,
    seed: Annotated[int, typer.Option(help="Seed of the sampled states.")] = 0,
) -> None:
    """Run the critic on a reward file (lint + sandboxed probe). Exit 1 when rejected."""
    import tempfile

    from .critic import Critic

    code = _read_python(file, "reward file")
    _check_env(env)
    with tempfile.TemporaryDirectory(prefix="rd-check-") as tmp:
        report = Critic(env, seed=seed).check(code, Path(tmp) / "probe")
    if json_out:
        print(report.model_dump_json(indent=1))
    else:
        verdict = "[green]accepted[/]" if report.ok else f"[red]rejected[/] at {report.stage}"
        err.print(f"{file}: {verdict}")
        for f in report.findings:
            err.print(f"  - {f}", markup=False)
        if report.probe and report.probe.ok and report.probe.finite:
            p = report.probe
            comps = ", ".join(f"{k}={v:.3g}" for k, v in p.components.items())
            err.print(f"  probe: reward mean {p.reward_mean:.3g} std {p.reward_std:.3g}, "
                      f"{p.ms_per_call:.2f} ms/call; components: {comps}", markup=False)
    raise typer.Exit(0 if report.ok else 1)


# ------------------------------------------------------------------- train
@app.command()
@_guard
def train(
    file: Annotated[Path, typer.Argument(help="Python file defining compute_reward(state, action).")],
    env: Annotated[str, typer.Option(help="Gymnasium env id.")],
    steps: Annotated[int, typer.Option(min=1, help="PPO env steps, in whole PPO batches (rounded down, at least one).")] = 1_000_000,
    out: Annotated[Path, typer.Option(help="Folder for the policy, training log and analysis.")] = Path("runs/manual"),
    seed: Annotated[int, typer.Option(help="Training seed.")] = 0,
    device: Annotated[Device, typer.Option(help="Where the policy and the reward run.")] = Device.auto,
    sim: Annotated[Sim, typer.Option(help=SIM_HELP)] = Sim.mujoco,
    fitness: Annotated[Optional[Path], typer.Option(help="Python file defining compute_fitness(state, action), to evaluate the policy by.")] = None,
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes (with --fitness).")] = 5,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help=SET_HELP)] = None,
) -> None:
    """Train a policy on a reward file: the critic, PPO, then (with --fitness) the analyzer, as in `design`.

    --out is one candidate's folder, laid out as in a run (critic.json, train/, analysis.json)."""
    code = _read_python(file, "reward file")
    ppo = _ppo_overrides(set_)
    _check_env(env)
    spec = _fitness_file(fitness)
    dev = _device(device)
    simulator = _sim(sim, dev)
    # Imported once the input is known good: a mistyped flag is refused in a fraction of a second.
    from rich.progress import Progress

    from .analyzer import Analyzer
    from .critic import Critic
    from .pipeline import CandidatePipeline, check_fitness, rejected
    from .program import RewardProgram
    from .runfolder import CandidateFolder
    from .trainer import Trainer

    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {out}: {exc.strerror or exc}") from None
    cand = CandidateFolder(out)
    cand.clear()  # an earlier train's outputs, about another program or policy
    critic = Critic(env, seed=seed)
    if spec is not None and not (checked := check_fitness(critic, spec.code, cand.fitness_check)).ok:
        raise BadInput(f"--fitness {fitness}: unusable: " + checked.summary()[:300])
    trainer = Trainer(env, steps, seed=seed, device=dev, sim=simulator, ppo=ppo, kernel_dir=out / "warp")
    analyzer = Analyzer(env, spec, episodes=episodes) if spec is not None else None
    pipeline = CandidatePipeline(critic, trainer, analyzer)
    checked = pipeline.criticize(cand, RewardProgram(code=code))
    if not checked.report.ok:
        _report_rejection(file, rejected(0, 0, checked))
    if simulator == "warp":
        err.print(f"MuJoCo Warp: compiling the kernels for {env}", markup=False)
    try:
        trainer.prepare()
    except ValueError as exc:
        raise BadInput(str(exc)) from None
    if note := trainer.rounding_note():
        err.print(note, markup=False)
    with Progress(console=err) as bars:
        bar = bars.add_task("training", total=trainer.planned_steps)
        rec = pipeline.train_and_analyze(cand, checked.program, on_progress=lambda s: bars.update(bar, completed=s))
        if rec.steps is not None:  # progress is polled once a second: a short training ends between two polls
            bars.update(bar, completed=rec.steps)
    if rec.steps is None:
        _fail("training failed: " + rec.error, 1)
    err.print(f"trained {rec.steps} steps in {rec.train_seconds:.1f} s ({rec.steps_per_second:.0f} steps/s)"
              f" -> {cand.policy}")
    if analyzer is not None:
        analysis = pipeline.analysis(cand)
        err.print(analysis.reflection if analysis.ok else f"analysis failed: {analysis.error}", markup=False)


def _report_rejection(file: Path, rec) -> None:
    """A program the critic rejected: where, and each finding, as `design` records them; exit 1."""
    err.print(f"{file}: rejected by the critic at {rec.stage}", markup=False, soft_wrap=True)
    for f in rec.findings:
        err.print(f"  - {f}", markup=False, soft_wrap=True)  # whole, to be read or copied
    raise typer.Exit(1)


# ------------------------------------------------------------------- bench
@app.command()
@_guard
def bench(
    suite: Annotated[Optional[str], typer.Option(help="A suite of task cards: smoke, locomotion, novel, standard (`reward-designer tasks` lists them).")] = None,
    task_cards: Annotated[Optional[str], typer.Option("--tasks", help="Task cards instead of a suite: names or YAML files, comma-separated.")] = None,
    methods: Annotated[str, typer.Option(help="Comma-separated, of designed, expert, sparse, env, random.")] = "designed,expert,sparse,random",
    seeds: Annotated[int, typer.Option(min=1, help="Scoring trainings per task and method (seeds 0 .. N-1).")] = 3,
    model: Annotated[Optional[str], typer.Option(help="litellm model string for the designed method. Default: $REWARD_DESIGNER_MODEL.")] = None,
    api_base: Annotated[Optional[str], typer.Option(help="Base URL of an OpenAI-compatible server.")] = None,
    iterations: Annotated[int, typer.Option(min=1, help="Design rounds per task (designed).")] = 3,
    samples: Annotated[int, typer.Option(min=1, help="Reward programs asked of the LLM per round (designed).")] = 4,
    fix_attempts: Annotated[int, typer.Option(min=0, help="Times a rejected program goes back to the LLM for a fix.")] = 2,
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes per trained policy.")] = 5,
    workers: Annotated[int, typer.Option(min=1, help="Trainings at once.")] = 1,
    device: Annotated[Device, typer.Option(help="Where policies and rewards run.")] = Device.auto,
    executor: Annotated[str, typer.Option(help="Where the sandboxed jobs run: local, or ray (the 'ray' extra).")] = "local",
    address: Annotated[Optional[str], typer.Option(help="The Ray cluster to join (--executor ray), e.g. auto.")] = None,
    replay: Annotated[Optional[Path], typer.Option(help="Serve recorded LLM replies to the design searches instead of a live model.")] = None,
    require_sandbox: Annotated[bool, typer.Option("--require-sandbox", help="Refuse to run if a sandbox layer is missing.")] = False,
    out_dir: Annotated[Optional[Path], typer.Option("--out", help="The batch's folder. Default: runs/bench-<suite>.")] = None,
    resume_dir: Annotated[Optional[Path], typer.Option("--resume", help="Go on with the batch in this folder (its own settings).")] = None,
    report_dir: Annotated[Optional[Path], typer.Option("--report", help="Write and show the tables and plots of this batch again, from its results.")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar or tables.")] = False,
) -> None:
    """Run methods x task cards x seeds and score them: fitness per task, normalized scores, aggregates.

    Exit 1 when a training of the batch did not finish (the tables say which); the folder's
    results.md, results.csv and plots hold the rest."""
    from . import bench as batch
    from .executor import EXECUTORS

    if report_dir is not None:
        if resume_dir or out_dir or suite or task_cards:
            raise BadInput("--report takes only the batch's folder")
        batch.bench_report(report_dir, None if quiet else out)
        return
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # a scheduler's stop, as Ctrl-C: resumable
    if resume_dir is not None:
        if out_dir or suite or task_cards:
            raise BadInput("--resume takes only the batch's folder: it goes on with its own settings")
        folder = resume_dir
        run = batch.Bench.open(folder, console=err)
        _require_sandbox(run.config.require_sandbox)
    else:
        if (suite is None) == (task_cards is None):
            raise BadInput("give --suite or --tasks")
        if executor not in EXECUTORS:
            raise BadInput(f"--executor {executor}: known: {', '.join(sorted(EXECUTORS))}")
        model = model or os.environ.get("REWARD_DESIGNER_MODEL")
        if replay is not None and not replay.is_file():
            raise BadInput(f"--replay: no file {replay}")
        refs = batch.suite_cards(suite) if suite else batch.resolve_cards(task_cards)
        dev = device.value if executor != "local" and device is not Device.auto else _device(device)
        config = batch.BenchConfig(
            tasks=refs, methods=batch.parse_methods(methods), seeds=list(range(seeds)), model=model,
            api_base=api_base, replay=str(replay.resolve()) if replay else None, iterations=iterations,
            samples=samples, fix_attempts=fix_attempts, episodes=episodes, workers=workers, device=dev,
            executor=executor, address=address, require_sandbox=require_sandbox)
        _require_sandbox(require_sandbox)
        folder = out_dir or Path("runs") / f"bench-{suite or 'tasks'}"
        run = batch.Bench.create(folder, config, console=err)
    try:
        results = run.execute(quiet=quiet)
    except KeyboardInterrupt:
        _fail(f"interrupted; `reward-designer bench --resume {folder}` goes on with the batch", 130)
    if not quiet:
        err.print(f"results: {Path(folder) / 'results.md'}", markup=False)
    unfinished = [t for t in results.trainings if t.status != "trained"]
    if unfinished:
        _fail(f"{len(unfinished)} of {len(results.trainings)} trainings did not finish (see {Path(folder) / 'results.md'})", 1)


# ----------------------------------------------------------- review a run
CANDIDATE_NAME = r"iter_\d{2}/cand_\d{2}"


def _candidate_of(run, name: str | None, what: str):
    """A trained candidate of ``run`` by name (default: the best), or BadInput saying which there are."""
    import re

    record = run.read_record()
    trained = sorted(c.name for c in record.candidates if c.status == "trained")
    name = name or (record.best.name if record.best else None)
    if name is None or not re.fullmatch(CANDIDATE_NAME, name) or name not in trained:
        raise BadInput(f"{what} {name or '(the best)'}: not a trained candidate of {run.path}; trained: "
                       + (", ".join(trained) or "none"))
    return record, run.named(name)


@app.command()
@_guard
def report(
    run_dir: Annotated[Path, typer.Argument(help="The run folder.")],
    videos: Annotated[bool, typer.Option("--videos", help="First film each round's best policy that has no video yet.")] = False,
) -> None:
    """Write the run as one HTML page for review (RUN/report.html) and print its path.

    Every candidate's code and diff, the critic's and the analyzer's words, the training curves, and
    each round's best as a video (files beside the page)."""
    from .report import build, film_round_bests
    from .runfolder import RunFolder

    folder = RunFolder(run_dir)
    record = folder.read_record()  # a missing or damaged run is one line
    if videos:
        _require_sandbox(record.config.require_sandbox)
        with folder.exclusive():
            for name, problem in film_round_bests(folder):
                err.print(f"warning: no video of {name}: {problem}" if problem else f"filmed {name}", markup=False)
    print(build(folder.path))


@app.command()
@_guard
def play(
    run_dir: Annotated[Path, typer.Argument(help="The run folder.")],
    candidate: Annotated[Optional[str], typer.Option(help="Which policy, e.g. iter_02/cand_01. Default: the run's best.")] = None,
    episodes: Annotated[int, typer.Option(min=1, max=20, help="Episodes filmed, one after another.")] = 1,
    out: Annotated[Optional[Path], typer.Option(help="The mp4 to write. Default: the candidate's video.mp4 in the run.")] = None,
) -> None:
    """Film a trained policy to an mp4 and print its path.

    Headless (MUJOCO_GL=egl), in a sandboxed worker that loads the policy and no reward program."""
    import tempfile

    from .executor import LocalExecutor
    from .render import RenderError, film_candidate
    from .runfolder import RunFolder

    record, cand = _candidate_of(RunFolder(run_dir), candidate, "--candidate")
    _require_sandbox(record.config.require_sandbox)
    target = (out or cand.video).resolve()
    with tempfile.TemporaryDirectory(prefix="rd-play-") as tmp:  # not render/: a design may be filming there
        try:
            result = film_candidate(cand, record.config.task, out=target, workdir=Path(tmp), episodes=episodes,
                                    executor=LocalExecutor(1, record.config.require_sandbox))
        except RenderError as exc:
            _fail(str(exc), 1)
    err.print(f"{result.frames} frames at {result.fps:g} fps, episodes of {', '.join(map(str, result.episode_lengths))} "
              f"steps", markup=False)
    print(target)


MAX_FEEDBACK_CHARS = 4000  # a person's words, in one prompt


@app.command()
@_guard
def refine(
    run_dir: Annotated[Path, typer.Argument(help="A finished run folder.")],
    feedback: Annotated[Optional[str], typer.Option(help="What you want changed, in your words; it goes into the round's prompt, e.g. \"keep the torso level; it hops too much\".")] = None,
    from_: Annotated[Optional[str], typer.Option("--from", help="Refine this trained candidate (e.g. iter_01/cand_02) instead of the best.")] = None,
    edit: Annotated[Optional[Path], typer.Option(help="A reward program you edited by hand: the round refines it once the critic passes it (exit 1 if not).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")] = False,
) -> None:
    """One more round steered by your feedback, from the best program, another (--from) or your edit (--edit).

    Your words go into the designer's prompt; they are recorded in run.json and shown by `report`. A
    stopped refine continues with `resume`."""
    from .run import EditRejected, Run

    text = (feedback or "").strip()
    if not text and edit is None:
        raise BadInput("say what to change with --feedback, or give an edited program with --edit")
    if len(text) > MAX_FEEDBACK_CHARS:
        raise BadInput(f"--feedback is {len(text):,} characters; at most {MAX_FEEDBACK_CHARS:,}")
    code = _read_python(edit, "edited program") if edit is not None else None
    run = Run.open(run_dir, console=err)
    if from_ is not None:
        _candidate_of(run.folder, from_, "--from")
    _require_sandbox(run.config.require_sandbox)
    _check_env(run.config.task.env_id, run.config.task.env_kwargs)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        record = run.refine(text, from_, code, quiet=quiet)
    except EditRejected as exc:
        _report_rejection(edit, exc)
    except KeyboardInterrupt:
        _fail(f"interrupted; `reward-designer resume {run.folder.path}` finishes the feedback round", 130)
    if record.status != "done":
        _fail(record.error or "the run failed", 1)
    err.print(f"best: {record.best.name} (fitness {record.best.fitness:.3f}); "
              f"`reward-designer report {run.folder.path}` shows the new round")


# ------------------------------------------------------------------ doctor
@app.command()
def doctor(
    require_sandbox: Annotated[bool, typer.Option("--require-sandbox", help="Exit 2 if any layer is missing.")] = False,
) -> None:
    """Show which sandbox layers are active on this machine, and why any is missing."""
    from .sandbox import doctor as layers

    table = Table("layer", "active", "detail")
    statuses = layers()
    for s in statuses:
        table.add_row(s.name, "[green]yes[/]" if s.active else "[red]no[/]", s.detail)
    out.print(table)
    if require_sandbox and not all(s.active for s in statuses):
        raise typer.Exit(2)


if __name__ == "__main__":
    sys.exit(app())
