"""Entry point of a sandboxed worker: ``python -m reward_designer.worker JOB.json``.

Every job does its imports and builds its simulator first, then confines
itself (``sandbox.confine_self``), and only then loads any code an LLM wrote.
It writes ``result.json`` (and, while training, ``progress.jsonl``) next to the
job file; the parent validates both, since untrusted code ran here.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch

from . import numerics
from . import program as prog
from .schemas import (
    MAX_COMPONENTS,
    MAX_ERROR_CHARS,
    AnalyzeJob,
    AnalyzeResult,
    EpisodeStats,
    JobEnvelope,
    ProbeJob,
    ProbeResult,
    RenderJob,
    RenderResult,
    ResultEnvelope,
    RewardEvalJob,
    RewardEvalResult,
    TrainJob,
    TrainResult,
    WarmJob,
    WarmResult,
)
from .state import state_pair

MAX_EPISODE_STEPS = 10_000


class ProgramError(Exception):
    """The reward program broke the contract; the message goes back to the designer."""


def check_output(out, n: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Validate what ``compute_reward`` returned: ``(reward[n], {name: tensor[n]})``."""
    if not (isinstance(out, tuple) and len(out) == 2):
        raise ProgramError(f"compute_reward must return (reward, components), got {type(out).__name__}")
    reward, comps = out
    if not isinstance(reward, torch.Tensor):
        raise ProgramError(f"reward must be a torch.Tensor, got {type(reward).__name__}")
    if tuple(reward.shape) != (n,):
        raise ProgramError(f"reward must have shape [{n}] (one value per env), got {list(reward.shape)}")
    if not reward.dtype.is_floating_point:
        raise ProgramError(f"reward must be a float tensor, got {reward.dtype}")
    if not isinstance(comps, dict):
        raise ProgramError(f"components must be a dict of tensors, got {type(comps).__name__}")
    if len(comps) > MAX_COMPONENTS:
        raise ProgramError(f"at most {MAX_COMPONENTS} components, got {len(comps)}")
    clean = {}
    for name, value in comps.items():
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ProgramError("component names must be short non-empty strings")
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != (n,):
            shape = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise ProgramError(f"component {name!r} must be a tensor of shape [{n}], got {shape}")
        clean[name] = value.detach().float()
    return reward.detach().float(), clean


class EpisodeMeter:
    """Folds per-step values into per-episode values, env by env."""

    def __init__(self, n: int, aggregate: str = "sum"):
        self.aggregate = aggregate
        self.acc = np.zeros(n)
        self.count = np.zeros(n)
        if aggregate == "max":
            self.acc[:] = -np.inf

    def step(self, values: np.ndarray, done: np.ndarray) -> np.ndarray:
        """Add one step; return the values of the episodes that ended on it."""
        values = np.asarray(values, dtype=np.float64)
        if self.aggregate in ("sum", "mean"):
            self.acc += values
        elif self.aggregate == "max":
            self.acc = np.maximum(self.acc, values)
        elif self.aggregate == "any":
            self.acc = np.maximum(self.acc, (values > 0).astype(np.float64))
        elif self.aggregate == "last":
            self.acc = values.copy()
        self.count += 1
        if not done.any():  # most steps: no episode ends, and the masked copies below cost more than this
            return self.acc[:0]
        finished = self.current()[done]
        self.acc[done] = -np.inf if self.aggregate == "max" else 0.0
        self.count[done] = 0
        return finished

    def current(self) -> np.ndarray:
        """Each env's value for its episode so far."""
        return self.acc / np.maximum(self.count, 1) if self.aggregate == "mean" else self.acc.copy()


def fitness_values(fitness_fn, state, actions, n: int) -> np.ndarray:
    """One step's fitness, one float per env."""
    return torch.as_tensor(fitness_fn(state, actions)).float().reshape(n).cpu().numpy()


class StepReward:
    """A training's ``reward_fn``, called once per vector step on the whole batch: the program's
    reward, checked, with its components and the fitness metered per episode for the progress
    log. ``program`` None: the env's own reward (only the fitness is metered).

    benchmarks/trainer_speed.py times training with this same object, so its figures include it.
    """

    def __init__(self, program, fitness_fn, aggregate: str, layout, dt: float, n: int, device: str):
        self.program, self.fitness_fn = program, fitness_fn
        self.layout, self.dt, self.n, self.device = layout, dt, n, device
        self.fitness_meter = EpisodeMeter(n, aggregate)
        self.component_meters: dict[str, EpisodeMeter] = {}
        self.finished: dict[str, list[float]] = {}  # per-episode values since the last episode_means()
        self.values = self.nonfinite = 0

    def __call__(self, prev, now, actions, done):
        state = state_pair(prev, now, self.layout, self.dt, self.device)
        if isinstance(done, torch.Tensor):  # a batch on a device: to the host once, for the meters
            done = done.cpu().numpy()
        if self.fitness_fn is not None:
            fit = fitness_values(self.fitness_fn, state, actions, self.n)
            self.finished.setdefault("fitness", []).extend(self.fitness_meter.step(fit, done))
        if self.program is None:
            return None
        reward, components = check_output(self.program(state, actions), self.n)
        for k in [k for k in components if k not in self.component_meters]:
            if len(self.component_meters) == MAX_COMPONENTS:
                raise ProgramError(f"at most {MAX_COMPONENTS} component names over a training")
            self.component_meters[k] = EpisodeMeter(self.n, "mean")
            self.finished[f"component/{k}"] = []
        # Every meter steps on every call, so each stays in step with the episodes: a component
        # the program leaves out on a step counts as 0 there.
        for k, meter in self.component_meters.items():
            v = components[k].cpu().numpy() if k in components else np.zeros(self.n)
            ended = meter.step(v, done)
            if len(ended):
                self.finished[f"component/{k}"].extend(ended)
        # A rare non-finite value is zeroed; a habit of them fails the candidate. One sum finds
        # them (it is finite unless a value is not, or huge ones overflow: then look closer).
        self.values += self.n
        if not math.isfinite(float(reward.sum())) and (bad := ~torch.isfinite(reward)).any():
            self.nonfinite += int(bad.sum())
            if self.nonfinite > max(100, 0.01 * self.values):
                raise ProgramError("the reward was NaN or infinite on more than 1% of steps during training "
                                   "(a value beyond float32's range is infinite)")
            reward = torch.nan_to_num(reward, nan=0.0, posinf=0.0, neginf=0.0)
        return reward.to(self.device)

    def episode_means(self) -> dict[str, float]:
        """Each metered value's mean over the episodes that ended since the last call."""
        means = {k: float(np.mean(v)) for k, v in self.finished.items() if v}
        for v in self.finished.values():
            v.clear()
        return means


def _write_result(workdir: Path, result) -> None:
    tmp = workdir / "result.json.tmp"
    tmp.write_text(ResultEnvelope(result=result).model_dump_json())
    tmp.replace(workdir / "result.json")


def _error_text(exc: BaseException) -> str:
    """The traceback lines that point into the program, then the error: what a designer can fix."""
    if isinstance(exc, ProgramError):
        return str(exc)[-MAX_ERROR_CHARS:]
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename.startswith("<")]
    lines = [f"  line {f.lineno}, in {f.name}: {f.line or ''}".rstrip() for f in frames[-3:]]
    return "\n".join(lines + [f"{type(exc).__name__}: {exc}"])[-2000:]


def _confine() -> None:
    from .sandbox import confine_self

    confine_self()


def _random_actions(space, n: int, rng: np.random.Generator) -> np.ndarray:
    low = np.where(np.isfinite(space.low), space.low, -1.0)
    high = np.where(np.isfinite(space.high), space.high, 1.0)
    return rng.uniform(low, high, size=(n, *space.shape)).astype(np.float32)


def _values(row, shown: int = 12) -> str:
    """A state's row as short text: its first ``shown`` values."""
    row = np.asarray(row, dtype=np.float64).reshape(-1)
    more = f", ... ({len(row)} in all)" if len(row) > shown else ""
    return "[" + ", ".join(f"{x:.4g}" for x in row[:shown]) + more + "]"


def run_probe(job: ProbeJob, workdir: Path) -> ProbeResult:
    from .sim import make_vecsim

    try:
        sim = make_vecsim(job.env_id, job.num_envs, job.seed, job.env_kwargs, contacts=job.contacts)
    except ValueError as exc:  # contact forces asked of an env without them: the designer reads why
        return ProbeResult(ok=False, error=str(exc))
    rng = np.random.default_rng(job.seed)
    sim.reset(job.seed)
    prev, transitions = sim.physics(), []
    for _ in range(job.steps):
        actions = _random_actions(sim.action_space, sim.num_envs, rng)
        out = sim.step(actions)
        transitions.append((prev, out.physics, actions))
        prev = sim.physics()
    layout, dt, n = sim.layout, sim.dt, sim.num_envs
    sim.close()

    _confine()
    try:
        fn = prog.load_function(job.code, job.entry)
        if job.entry == prog.FITNESS_ENTRY:
            fitness_fn = fn

            def fn(state, action):
                value = torch.as_tensor(fitness_fn(state, action)).float()
                if tuple(value.shape) != (n,):
                    raise ProgramError(f"compute_fitness must return one value per env, shape [{n}], "
                                       f"got {list(value.shape)}")
                return value, {}

        rewards, comps, gaps, seconds = [], {}, [], 0.0
        for before, now, actions in transitions:
            state = state_pair(before, now, layout, dt)
            t0 = time.perf_counter()
            reward, components = check_output(fn(state, torch.as_tensor(actions)), n)
            seconds += time.perf_counter() - t0
            rewards.append(reward)
            for k, v in components.items():
                comps.setdefault(k, []).append(v)
            if components:
                gaps.append(float((reward - sum(components.values())).abs().max()))
    except Exception as exc:  # noqa: BLE001 - any failure of the program is a finding
        return ProbeResult(ok=False, error=_error_text(exc))
    r = torch.stack(rewards)
    main = "reward" if job.entry == prog.ENTRY else "fitness"
    terms = {main: r, **{k: torch.stack(v) for k, v in comps.items()}}  # each [steps, n]
    bad = {k: ~torch.isfinite(v) for k, v in terms.items()}
    nonfinite = [k for k, b in bad.items() if bool(b.any())]
    finite = not nonfinite
    nonfinite_at = ""
    if nonfinite:  # the first transition any term was NaN or infinite on, for the designer to reason from
        step, env = (int(i) for i in torch.nonzero(sum(bad[k].int() for k in nonfinite))[0])
        before, now, actions = transitions[step]
        named = ", ".join(f"{k}={terms[k][step, env].item()}" for k in nonfinite)
        values = "; ".join(f"{key} {_values(now[key][env])}" for key in ("obs", "qpos", "qvel") if key in now)
        nonfinite_at = f"probe step {step}, env {env} ({named}): {values}; action {_values(actions[env])}"
    return ProbeResult(
        ok=True,
        reward_shape=[n],
        reward_dtype=str(rewards[0].dtype),
        finite=finite,
        nonfinite=nonfinite,
        nonfinite_at=nonfinite_at,
        constant=bool(r.max() - r.min() <= 1e-8) if finite else False,
        components={k: float(torch.stack(v).mean()) for k, v in comps.items() if finite},
        component_sum_gap=max(gaps) if gaps else None,
        reward_mean=float(r.mean()) if finite else None,
        reward_std=float(r.std()) if finite else None,
        ms_per_call=1000 * seconds / len(transitions),
    )


def _warp_sim(env_id: str, n: int, seed: int, env_kwargs: dict, device: str, kernels: str | None,
              contacts: bool = False):
    """A MuJoCo Warp batch with every kernel compiled into, or loaded from, ``kernels`` (None:
    Warp's default cache, which in the sandbox is the worker's private /tmp), before confinement."""
    from .sim import make_vecsim

    if kernels is not None:
        os.environ["WARP_CACHE_PATH"] = kernels  # read once, when Warp is first imported
    sim = make_vecsim(env_id, n, seed, env_kwargs, backend="warp", device=device, contacts=contacts)
    sim.warm_up()
    return sim


def run_warm(job: WarmJob, workdir: Path) -> WarmResult:
    t0 = time.perf_counter()
    try:
        _warp_sim(job.env_id, 2, job.seed, job.env_kwargs, job.device, job.kernels).close()
    except (ImportError, ValueError) as exc:  # no extra, an env Warp cannot run, no such device
        return WarmResult(ok=False, error=str(exc))
    _confine()  # nothing untrusted runs here; confined all the same, as every job ends
    return WarmResult(ok=True, seconds=time.perf_counter() - t0)


def _trim_progress(path: Path, steps: int) -> None:
    """Keep the training log's lines up to ``steps`` (a checkpoint's): the lines after it are retrained."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("global_step"), int) and row["global_step"] <= steps:
            kept.append(line + "\n")
    path.write_text("".join(kept))


def run_train(job: TrainJob, workdir: Path) -> TrainResult:
    from .algorithms import Checkpoints, get_algorithm
    from .sandbox import confine_forked
    from .sim import make_vecsim

    algorithm = get_algorithm(job.algorithm)
    try:
        cfg = algorithm.make_config(job.env_id, job.sim, job.ppo, total_steps=job.total_steps, seed=job.seed,
                                    device=job.device)
    except (TypeError, ValueError) as exc:
        return TrainResult(ok=False, error=f"{job.algorithm} overrides: {exc}")
    if job.sim == "warp":
        try:
            sim = _warp_sim(job.env_id, cfg.num_envs, job.seed, job.env_kwargs, cfg.device, job.kernel_cache,
                            job.contacts)
        except (ImportError, ValueError, OSError) as exc:  # OSError: a kernel missing from a read-only cache
            return TrainResult(ok=False, error=f"MuJoCo Warp: {exc}")
    else:
        # Both fork (the simulator's slab twins, the learner's twin): before seccomp forbids it.
        try:
            sim = make_vecsim(job.env_id, cfg.num_envs, job.seed, job.env_kwargs, on_fork=confine_forked,
                              contacts=job.contacts)
        except ValueError as exc:  # contact forces asked of an env without them
            return TrainResult(ok=False, error=str(exc))
    layout, dt, n = sim.layout, sim.dt, sim.num_envs
    resume, resumed_at = None, None
    try:
        if job.resume_from:
            resume = algorithm.load_checkpoint(Path(job.resume_from))
            resumed_at = int(resume["global_step"])
            _trim_progress(workdir / "progress.jsonl", resumed_at)
        learner = algorithm.make_learner(sim, cfg, on_fork=confine_forked, resume=resume)
    except (OSError, ValueError, KeyError) as exc:  # unreadable, or another training's checkpoint
        sim.close()
        return TrainResult(ok=False, error=f"cannot continue the checkpoint {job.resume_from}: {exc}")
    progress = open(workdir / "progress.jsonl", "a", buffering=1)
    try:  # before the confinement: threadpoolctl asks the loaded libraries through ctypes
        loaded = numerics.loaded()
    except Exception:  # noqa: BLE001 - a record of the training, never a reason to fail it
        loaded = {}
    _confine()
    try:
        reward_program = prog.load_function(job.code, prog.ENTRY) if job.code else None
        fitness_fn = prog.load_function(job.fitness.code, prog.FITNESS_ENTRY, "fitness") if job.fitness else None
    except Exception as exc:  # noqa: BLE001
        return TrainResult(ok=False, error=_error_text(exc))

    reward_fn = StepReward(reward_program, fitness_fn, job.fitness.aggregate if job.fitness else "sum",
                           layout, dt, n, cfg.device)
    # Trained, whole rollouts; the seconds of the whole training, earlier jobs' included.
    counts = {"steps": resumed_at or 0, "seconds": 0.0}

    def on_iteration(stats: dict) -> None:
        line = {k: v for k, v in stats.items() if isinstance(v, (int, float))}
        line.update(reward_fn.episode_means())
        counts["steps"], counts["seconds"] = stats["global_step"], stats["seconds"]
        progress.write(json.dumps(line) + "\n")

    checkpoints = Checkpoints(Path(job.checkpoint) if job.checkpoint else None, job.checkpoint_every,
                              job.stop_at_steps, resume)
    t0 = time.perf_counter()
    try:
        policy = algorithm.train(sim, cfg, learner, reward_fn, on_iteration, checkpoints)
    except Exception as exc:  # noqa: BLE001
        return TrainResult(ok=False, error=_error_text(exc))
    finally:
        sim.close()
    seconds = time.perf_counter() - t0
    policy.save(workdir / "policy.npz")
    batch = algorithm.batch_steps(job.env_id, job.sim, job.ppo)
    complete = counts["steps"] >= max(1, job.total_steps // batch) * batch
    if complete and job.checkpoint:  # a finished training is continued by nothing: its last one is stale
        Path(job.checkpoint).unlink(missing_ok=True)
    return TrainResult(ok=True, steps=counts["steps"], seconds=counts["seconds"] or seconds,
                       steps_per_second=(counts["steps"] - (resumed_at or 0)) / seconds,
                       policy=str(workdir / "policy.npz"), ppo=cfg.to_dict(), numerics=loaded,
                       complete=complete, resumed_at=resumed_at)


def run_analyze(job: AnalyzeJob, workdir: Path) -> AnalyzeResult:
    from .algorithms import load_policy
    from .sandbox import confine_forked
    from .sim import make_vecsim

    n = job.episodes
    # ``contacts``: the recorded snapshots hold the contact forces, for the reward evaluation too.
    sim = make_vecsim(job.env_id, n, job.seed, job.env_kwargs, on_fork=confine_forked, contacts=job.contacts)
    policy = load_policy(job.policy)
    layout, dt = sim.layout, sim.dt

    _confine()
    try:
        fitness_fn = prog.load_function(job.fitness.code, prog.FITNESS_ENTRY, "fitness")
    except Exception as exc:  # noqa: BLE001
        return AnalyzeResult(ok=False, error=_error_text(exc))

    obs = sim.reset(job.seed)
    prev = sim.physics()
    meter = EpisodeMeter(n, job.fitness.aggregate)
    active = np.ones(n, bool)
    fitness, lengths = np.zeros(n), np.zeros(n, int)
    terminated, env_return = np.zeros(n, bool), np.zeros(n)
    steps_fitness: list[list[float]] = [[] for _ in range(n)]
    record: dict[str, list] = {}
    for _ in range(MAX_EPISODE_STEPS):
        actions = policy.act(obs, deterministic=True)
        out = sim.step(actions)
        state = state_pair(prev, out.physics, layout, dt)
        try:
            fit = fitness_values(fitness_fn, state, torch.as_tensor(actions), n)
        except Exception as exc:  # noqa: BLE001
            return AnalyzeResult(ok=False, error="fitness: " + _error_text(exc))
        if not np.isfinite(fit).all():
            return AnalyzeResult(ok=False, error="fitness: the success check returned NaN or infinite values")
        done = out.terminated | out.truncated
        ended = meter.step(fit, done)
        ended_now = done & active
        fitness[ended_now] = ended[active[done]]
        for i in np.flatnonzero(active):
            steps_fitness[i].append(float(fit[i]))
        env_return[active] += out.env_reward[active]
        lengths[active] += 1
        terminated[ended_now] = out.terminated[ended_now]
        if job.record:
            for k, v in prev.items():
                record.setdefault("prev_" + k, []).append(v)
            for k, v in out.physics.items():
                record.setdefault("now_" + k, []).append(v)
            record.setdefault("actions", []).append(np.asarray(actions))
            record.setdefault("active", []).append(active.copy())
        active &= ~done
        obs, prev = out.obs, sim.physics()
        if not active.any():
            break
    # An episode still running after MAX_EPISODE_STEPS (no time limit, or a longer one) is cut here.
    fitness[active] = meter.current()[active]
    sim.close()
    if job.record:
        np.savez(job.record, **{k: np.stack(v) for k, v in record.items()}, dt=np.float64(dt))
    return AnalyzeResult(
        ok=True,
        episodes=[
            EpisodeStats(fitness=float(fitness[i]), length=int(lengths[i]), terminated=bool(terminated[i]),
                         env_return=float(env_return[i]), step_fitness=steps_fitness[i])
            for i in range(n)
        ],
    )


def run_reward_eval(job: RewardEvalJob, workdir: Path) -> RewardEvalResult:
    from .sim import make_vecsim

    sim = make_vecsim(job.env_id, 1, job.seed, job.env_kwargs)
    layout = sim.layout
    sim.close()
    data = dict(np.load(job.trajectories, allow_pickle=False))
    dt = float(data.pop("dt"))
    active, actions = data.pop("active"), data.pop("actions")
    steps, n = active.shape
    prev = {k[5:]: v for k, v in data.items() if k.startswith("prev_")}
    now = {k[4:]: v for k, v in data.items() if k.startswith("now_")}

    _confine()
    try:
        fn = prog.load_function(job.code, prog.ENTRY)
        step_reward = np.zeros((steps, n))
        comps: dict[str, np.ndarray] = {}
        for t in range(steps):
            state = state_pair({k: v[t] for k, v in prev.items()}, {k: v[t] for k, v in now.items()}, layout, dt)
            reward, components = check_output(fn(state, torch.as_tensor(actions[t])), n)
            step_reward[t] = reward.numpy()
            for k, v in components.items():
                comps.setdefault(k, np.zeros((steps, n)))[t] = v.numpy()
    except Exception as exc:  # noqa: BLE001
        return RewardEvalResult(ok=False, error=_error_text(exc))
    # Zeroed, as training zeroes them (and JSON has no NaN); the count goes to the designer.
    nonfinite = int((~np.isfinite(step_reward) & active).sum())
    step_reward = np.nan_to_num(step_reward, nan=0.0, posinf=0.0, neginf=0.0)
    comps = {k: np.nan_to_num(v, nan=0.0, posinf=0.0, neginf=0.0) for k, v in comps.items()}

    def per_episode_mean(x: np.ndarray) -> list[float]:
        return [float(x[active[:, i], i].mean()) for i in range(n)]

    def thirds(x: np.ndarray) -> list[float]:
        # How a term evolves: its mean over the first, middle and last third of each episode's steps,
        # pooled over the episodes' steps like the overall mean (the analyzer weighs each episode's
        # mean above by its length), so the overall mean lies between the thirds.
        sums, counts = np.zeros(3), np.zeros(3)
        for i in range(n):
            for j, chunk in enumerate(np.array_split(x[active[:, i], i], 3)):
                sums[j] += chunk.sum()
                counts[j] += chunk.size
        return [float(s / c) if c else 0.0 for s, c in zip(sums, counts)]

    return RewardEvalResult(
        ok=True,
        episode_reward=[float(step_reward[active[:, i], i].sum()) for i in range(n)],
        step_reward=[step_reward[active[:, i], i].tolist() for i in range(n)],
        components={k: per_episode_mean(v) for k, v in comps.items()},
        component_thirds={k: thirds(v) for k, v in comps.items()},
        nonfinite=nonfinite,
    )


KEPT_FRAMES = 64  # frames held for the stills: a long episode's every frame would not fit in memory


def run_render(job: RenderJob, workdir: Path) -> RenderResult:
    """Film a policy: deterministic actions, ``episodes`` episodes one after another, into one mp4.
    Nothing untrusted runs here (a policy is weights), so the frames are drawn before confinement:
    an EGL context needs more than the confined worker may do."""
    import gymnasium as gym
    import imageio.v2 as imageio

    from .algorithms import load_policy
    from .sim.gym_envs import is_mujoco

    env = gym.make(job.env_id, render_mode="rgb_array", **job.env_kwargs)
    if is_mujoco(env):  # a MuJoCo env's frame size is fixed when it is made
        env.close()
        env = gym.make(job.env_id, render_mode="rgb_array", width=job.width, height=job.height, **job.env_kwargs)
    policy = load_policy(job.policy)
    fps = float(env.metadata.get("render_fps") or 30)
    frames, stride, lengths, returns = 0, 1, [], []
    stills: list[np.ndarray] = []
    try:
        with imageio.get_writer(job.video, fps=fps, codec="libx264", pixelformat="yuv420p", quality=6,
                                macro_block_size=16, ffmpeg_log_level="error") as video:
            for episode in range(job.episodes):
                obs, _ = env.reset(seed=job.seed + episode)
                total, steps, done = 0.0, 0, False
                while True:
                    frame = env.render()
                    video.append_data(frame)
                    if frames % stride == 0:  # a thinning sample of every frame so far, for the stills
                        stills.append(frame)
                        if len(stills) > KEPT_FRAMES:
                            stills, stride = stills[::2], stride * 2
                    frames += 1
                    if done or steps == job.max_steps:
                        break
                    obs, reward, terminated, truncated, _ = env.step(policy.act(obs[None], deterministic=True)[0])
                    total, steps, done = total + float(reward), steps + 1, terminated or truncated
                lengths.append(steps)
                returns.append(total)
    except Exception as exc:  # noqa: BLE001 - no GL, no encoder: said, not a traceback
        return RenderResult(ok=False, error=f"{type(exc).__name__}: {exc}")
    finally:
        env.close()
    names = []
    for i, t in enumerate(np.linspace(0, len(stills) - 1, job.stills).round().astype(int) if job.stills else []):
        names.append(f"still_{i:02d}.jpg")
        imageio.imwrite(workdir / names[-1], stills[t], quality=80)
    _confine()  # as every job ends
    return RenderResult(ok=True, frames=frames, fps=fps, episode_lengths=lengths, env_returns=returns, stills=names)


RUNNERS = {"probe": run_probe, "train": run_train, "analyze": run_analyze, "reward_eval": run_reward_eval,
           "warm": run_warm, "render": run_render}


def main(argv: list[str]) -> int:
    job_file = Path(argv[0]).resolve()
    workdir = job_file.parent
    torch.set_num_threads(1)  # one thread per process is fastest on few cores (FACTS.md)
    envelope = JobEnvelope.model_validate_json(job_file.read_text())
    if envelope.cores:  # the executor's CPU budget: slabs and the learner's twin size to it
        os.sched_setaffinity(0, envelope.cores)
    job = envelope.job
    if isinstance(job, TrainJob) and job.fitness is not None:
        # The reward program runs in this process and could read its job file: not the hidden measure.
        hidden = job.fitness.model_copy(update={"code": "# (hidden from the reward program)"})
        job_file.write_text(envelope.model_copy(update={"job": job.model_copy(update={"fitness": hidden})})
                            .model_dump_json(indent=1))
    result = RUNNERS[job.kind](job, workdir)
    _write_result(workdir, result)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
