"""The `reward-designer` command.

Exit codes: 0 success; 1 the critic rejected the code (`check`) or no
candidate survived (`design`, `resume`); 2 bad input or configuration.
"""

from __future__ import annotations

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

app = typer.Typer(
    help="LLM-designed dense rewards for RL: a critic checks them in a sandbox, policies train on them, "
    "an analyzer turns what the policies did into feedback, round after round.",
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


class BadInput(Exception):
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

    try:
        gym.spec(env_id)
    except Exception:  # noqa: BLE001 - gymnasium raises several kinds for an unknown id
        if ":" not in env_id:  # "module:EnvId" is registered by gym.make, which imports the module
            raise BadInput(f"unknown environment id {env_id!r} (not registered with gymnasium)") from None
    try:
        check_trainable(env_id, env_kwargs)
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def _read_python(path: Path, what: str) -> str:
    import ast

    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {what} {path}: {exc.strerror if isinstance(exc, OSError) else 'not text'}") from None
    try:
        ast.parse(text)
    except SyntaxError as exc:
        raise BadInput(f"{path} is not valid Python (line {exc.lineno}: {exc.msg})") from None
    return text


SET_HELP = ("A PPO hyperparameter over the env's preset (and a task card's ppo:), KEY=VALUE: a PPOConfig field "
            "and a Python literal; repeat the option for more, e.g. --set lr=1e-4 --set 'hidden=(128,128)' "
            "--set desired_kl=None.")


def _ppo_overrides(pairs: list[str] | None) -> dict:
    from .presets import parse_overrides

    try:
        return parse_overrides(pairs or [])
    except ValueError as exc:
        raise BadInput(str(exc)) from None


def custom_task_name(env_id: str, task: str) -> str:
    """Named for the env and the task's text, so another task on the same env gets its own run folder."""
    digest = hashlib.sha256(task.strip().encode()).hexdigest()[:6]
    return f"{env_id.lower().split(':')[-1].split('-v')[0]}-{digest}"


def _fitness_file(path: Path | None):
    from pydantic import ValidationError

    from .program import fitness_from_code

    if path is None:
        return None
    code = _read_python(path, "fitness file")
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
        from .envcard import EnvCardError
        from .llm import LLMError
        from .run import RunError
        from .tasks import TaskError

        try:
            return fn(*args, **kwargs)
        except (BadInput, TaskError, LLMError, RunError, EnvCardError) as exc:
            _fail(str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
        except KeyboardInterrupt:
            _fail("interrupted", 130)

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
    workers: Annotated[int, typer.Option(min=1, help="Candidates trained at once.")] = 1,
    fitness: Annotated[Optional[Path], typer.Option(help="Python file defining compute_fitness(state, action): the hidden measure of success.")] = None,
    llm_critic: Annotated[bool, typer.Option("--llm-critic", help="Also have the LLM review each program against the task.")] = False,
    fix_attempts: Annotated[int, typer.Option(min=0, help="Times a rejected program goes back to the LLM for a fix.")] = 2,
    episodes: Annotated[int, typer.Option(min=1, help="Evaluation episodes per trained policy.")] = 5,
    replay: Annotated[Optional[Path], typer.Option(help="Serve recorded LLM replies instead of a live model: a YAML file, or a run's llm/calls.jsonl.")] = None,
    require_sandbox: Annotated[bool, typer.Option("--require-sandbox", help="Refuse to run if a sandbox layer is missing.")] = False,
    set_: Annotated[Optional[list[str]], typer.Option("--set", metavar="KEY=VALUE", help=SET_HELP)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")] = False,
) -> None:
    """Design a reward for a task: from a task card, or from --env and --task."""
    from .run import Run, RunConfig
    from .schemas import TaskSpec
    from .tasks import load_task

    if task_card and (env or task):
        raise BadInput("give a task card or --env with --task, not both")
    if task_card:
        spec = load_task(task_card)
    else:
        if not env or task is None:
            raise BadInput("give a task card, or both --env and --task")
        if not task.strip():
            raise BadInput("--task is empty: say what the policy should do")
        spec = TaskSpec(name=custom_task_name(env, task), env_id=env, description=task)
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
        episodes=episodes, require_sandbox=require_sandbox, ppo=ppo,
    )
    _require_sandbox(require_sandbox)
    run = Run.create(out or Path("runs") / spec.name, config, console=err)
    _execute(run, quiet)


@app.command()
@_guard
def resume(
    run_dir: Annotated[Path, typer.Argument(help="The run folder to continue.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars or summary.")] = False,
) -> None:
    """Continue a stopped run: no LLM call is repeated, no finished training redone."""
    from .run import Run

    run = Run.open(run_dir, console=err)
    _require_sandbox(run.config.require_sandbox)
    # What design checked, again: this may be another machine, or the env may have changed.
    _check_env(run.config.task.env_id, run.config.task.env_kwargs)
    if run.config.device.startswith("cuda"):
        _device(Device.cuda)
    _execute(run, quiet)


def _execute(run, quiet: bool) -> None:
    # A SIGTERM (a scheduler, docker stop, timeout) stops the run as Ctrl-C does: saved as stopped.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    try:
        record = run.execute(quiet=quiet)
    except KeyboardInterrupt:
        _fail(f"interrupted; `reward-designer resume {run.folder}` continues the run where it stopped", 130)
    if record.status != "done":
        _fail(record.error or "the run failed", 1)
    best = record.best
    err.print(f"best: {best.name} (fitness {best.fitness:.3f}) -> {run.folder / 'best' / 'reward.py'}")


def _require_sandbox(required: bool) -> None:
    from .sandbox import doctor

    missing = [s for s in doctor() if not s.active]
    for s in missing:
        err.print(f"warning: sandbox layer '{s.name}' is not active: {s.detail}", markup=False, soft_wrap=True)
    if required and missing:
        raise BadInput("--require-sandbox: missing layers: " + ", ".join(s.name for s in missing))


# ------------------------------------------------------------------- tasks
@app.command()
def tasks() -> None:
    """List the task cards in envs/."""
    from .tasks import list_tasks

    table = Table("name", "env", "task", "fitness")
    for t in list_tasks():
        table.add_row(t.name, t.env_id, t.description, t.fitness.description if t.fitness else "")
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
    """Train a policy on a reward file (checked by the critic first)."""
    from rich.progress import Progress

    from .analyzer import Analyzer
    from .critic import Critic
    from .program import FITNESS_ENTRY
    from .trainer import Trainer

    code = _read_python(file, "reward file")
    ppo = _ppo_overrides(set_)
    _check_env(env)
    spec = _fitness_file(fitness)
    dev = _device(device)
    simulator = _sim(sim, dev)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadInput(f"--out {out}: {exc.strerror or exc}") from None
    (out / "analysis.json").unlink(missing_ok=True)  # an earlier train's, about another policy
    critic = Critic(env, seed=seed)
    if spec is not None:
        checked = critic.check(spec.code, out / "fitness_check", entry=FITNESS_ENTRY)
        if not checked.ok:
            raise BadInput(f"--fitness {fitness}: unusable: " + checked.summary()[:300])
    report = critic.check(code, out / "probe")
    if not report.ok:
        err.print(f"{file}: rejected by the critic at {report.stage}", markup=False)
        for f in report.findings:
            err.print(f"  - {f}", markup=False)
        raise typer.Exit(1)
    trainer = Trainer(env, steps, seed=seed, device=dev, sim=simulator, ppo=ppo, kernel_dir=out / "warp")
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
        result = trainer.train(code, out / "train", spec, on_progress=lambda s: bars.update(bar, completed=s))
        if result.ok:  # progress is polled once a second: a short training ends between two polls
            bars.update(bar, completed=result.result.steps)
    if not result.ok:
        _fail("training failed: " + (result.problem or result.result.error), 1)
    r = result.result
    err.print(f"trained {r.steps} steps in {r.seconds:.1f} s ({r.steps_per_second:.0f} steps/s) -> {out / 'train' / 'policy.npz'}")
    if spec is not None:
        analysis = Analyzer(env, spec, episodes=episodes).analyze(code, out / "train" / "policy.npz", out,
                                                                  out / "train" / "progress.jsonl")
        (out / "analysis.json").write_text(analysis.model_dump_json(indent=1))
        err.print(analysis.reflection if analysis.ok else f"analysis failed: {analysis.error}", markup=False)


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
