"""Filming a trained policy: a RenderJob in a sandboxed worker, its mp4 and stills copied out.

The worker loads the policy's weights and no reward program (as the analyzer's
rollouts do), makes the env with ``render_mode="rgb_array"`` and draws headless
(``MUJOCO_GL=egl``); the mp4 is encoded by imageio's bundled ffmpeg.

    result = film_candidate(cand, task, episodes=1, stills=8, executor=executor)   # -> cand.video
    frames = stills(cand.render, result.stills)                                     # JPEG bytes, for a judge
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Callable

from .executor import Executor, LocalExecutor
from .jobs import JobOutcome
from .runfolder import CandidateFolder
from .sandbox import Limits, copy_output, read_output
from .schemas import RenderJob, RenderResult, TaskSpec

VIDEO = "video.mp4"  # in the render worker's folder
MAX_STILL_BYTES = 4 << 20  # a still read back from the worker (a 480x320 JPEG is ~30 kB)


class RenderError(Exception):
    """The policy could not be filmed (one line, fit for a user)."""


def film(env_id: str, env_kwargs: dict, policy: Path, workdir: Path, *, episodes: int = 1, seed: int = 12345,
         stills: int = 0, max_steps: int = 1000, executor: Executor | None = None,
         poll: Callable[[], None] | None = None) -> JobOutcome:
    """Film ``policy`` in a worker confined to ``workdir``: ``workdir/video.mp4`` and ``stills`` frames
    (``RenderResult.stills``, beside it). ``seed``: the first episode's (episode i: seed + i); by
    default the analyzer's evaluation seed."""
    os.environ.setdefault("MUJOCO_GL", "egl")  # headless: a worker has no display (its env passes this on)
    workdir = Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    for old in workdir.glob("still_*.jpg"):  # an earlier film's, which this one may not overwrite
        old.unlink()
    copy_output(Path(policy), workdir / "policy.npz")  # the worker sees only its folder; a worker wrote it
    job = RenderJob(env_id=env_id, env_kwargs=env_kwargs, seed=seed, policy=str(workdir / "policy.npz"),
                    video=str(workdir / VIDEO), episodes=episodes, stills=stills, max_steps=max_steps)
    # Drawing on the CPU (llvmpipe) takes a few ms a frame; encoding as much again.
    limits = Limits(wall_s=120 + 0.2 * episodes * max_steps, cpu_s=600, memory_mb=4096)
    return (executor or LocalExecutor()).run(job, workdir, limits, poll=poll)


def film_candidate(cand: CandidateFolder, task: TaskSpec, *, out: Path | None = None, workdir: Path | None = None,
                   **kwargs) -> RenderResult:
    """Film a candidate's policy (``film``'s options) into ``out`` (default: its ``video.mp4``), the worker
    in ``workdir`` (default: its ``render/``). RenderError, saying why, when there is no video."""
    if not cand.policy.is_file():
        raise RenderError(f"{cand.path} has no trained policy")
    workdir = Path(workdir or cand.render)
    outcome = film(task.env_id, task.env_kwargs, cand.policy, workdir, **kwargs)
    if not outcome.ok:
        raise RenderError("rendering failed: " + (outcome.problem or outcome.result.error).strip().splitlines()[-1])
    out = Path(out or cand.video)
    out.parent.mkdir(parents=True, exist_ok=True)
    copy_output(workdir / VIDEO, out)
    return outcome.result


def stills(workdir: Path, names: list[str]) -> list[bytes]:
    """The JPEG stills a render worker wrote, read through the sandbox's safe reader (one that is not
    a plain file is left out)."""
    out = []
    for name in names:
        try:
            out.append(read_output(Path(workdir) / name, MAX_STILL_BYTES))
        except OSError:
            continue
    return out
