"""`reward-designer report RUN`: the run as one HTML file, for a person to review.

Everything is rendered here, at build time: the code highlighted by pygments,
each program's diff against the one it refines, the training curves drawn by
matplotlib as inline SVG. The page has no script and loads nothing from the
network; the round-best videos are files beside it (``iter_XX/cand_YY/video.mp4``),
linked by relative paths, so the page stays small and opens from disk.

The run is read through ``RunFolder`` only. A worker wrote the training logs
and the rollouts' numbers, so they are read with the defensive readers
(``trainer.read_progress``), and every text lands in the page escaped.
"""

from __future__ import annotations

import difflib
import html
import io
import re
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Iterator

import jinja2
from markupsafe import Markup
from pydantic import BaseModel, ValidationError

from .critic import CriticReport
from .executor import LocalExecutor
from .judge import Judgement
from .records import AGAINST, Analysis, CandidateRecord, Feedback, RunRecord
from .render import RenderError, film_candidate
from .runfolder import RunFolder, write_atomic
from .selection import SELECTORS
from .trainer import read_progress, thin

MAX_CURVE_POINTS = 120  # per series: a curve drawn finer than the page shows is only bytes
MAX_PROMPT_CHARS = 60_000  # a round's prompt shown whole up to this (the env card is most of it)


@dataclass
class CandidateView:
    rec: CandidateRecord
    code: Markup | None = None
    diff: Markup | None = None
    diff_stats: str = ""
    critic: CriticReport | None = None
    analysis: Analysis | None = None
    judgement: Judgement | None = None
    curves: Markup | None = None
    video: str | None = None  # relative to the report
    best: bool = False
    round_best: bool = False
    hacking: list[str] = field(default_factory=list)  # why reward hacking is suspected, in words

    @property
    def anchor(self) -> str:
        return self.rec.name.replace("/", "-")


@dataclass
class RoundView:
    iteration: int
    candidates: list[CandidateView]
    best: CandidateView | None
    prompt: str = ""
    feedback: Feedback | None = None
    edit: Markup | None = None  # the person's edit, as a diff against the program it started from


def _read_model(model: type[BaseModel], path: Path):
    try:
        return model.model_validate_json(path.read_bytes()) if path.is_file() else None
    except (OSError, ValidationError):
        return None


@lru_cache(maxsize=1)
def _formatter():
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass="hl", wrapcode=True)


def highlight(code: str, lexer: str = "python") -> Markup:
    from pygments import highlight as pyg
    from pygments.lexers import DiffLexer, PythonLexer

    return Markup(pyg(code, PythonLexer() if lexer == "python" else DiffLexer(), _formatter()))


def diff(parent: str, code: str, parent_name: str, name: str) -> tuple[Markup, str] | None:
    """The unified diff of ``code`` against ``parent``, highlighted, and its +/- counts; None if equal."""
    lines = list(difflib.unified_diff(parent.splitlines(), code.splitlines(), parent_name, name, lineterm="", n=2))
    if not lines:
        return None
    added = sum(1 for x in lines[2:] if x.startswith("+"))
    removed = sum(1 for x in lines[2:] if x.startswith("-"))
    return highlight("\n".join(lines) + "\n", "diff"), f"+{added} -{removed}"


def _inline(svg: str, prefix: str) -> str:
    """matplotlib's SVG made fit to sit among others in one page: no prolog, no metadata, its ids
    prefixed (each figure names its tick marks alike), coordinates to 0.1 pt, whitespace folded."""
    svg = svg[svg.index("<svg"):]
    svg = re.sub(r"<metadata>.*?</metadata>", "", svg, flags=re.S)
    svg = re.sub(r'<g id="[^"]*"', "<g", svg)  # a group's id is never referred to
    svg = re.sub(r'(\bid="|xlink:href="#|url\(#)', lambda m: m.group(1) + prefix, svg)
    svg = re.sub(r'="[^"]*"', lambda m: re.sub(r"(\d\.\d)\d+", r"\1", m.group(0)), svg)  # attributes, not labels
    return re.sub(r"\s*\n\s*", " ", svg)


def curves(rows: list[dict], prefix: str = "c-") -> Markup | None:
    """The training log as an inline SVG (its ids start with ``prefix``): the task's fitness per episode
    (left) and the reward and each of its components per step (right), over env steps."""
    rows = thin([r for r in rows if "global_step" in r], MAX_CURVE_POINTS)
    if len(rows) < 2:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["global_step"] for r in rows]
    series = {"reward": "train_reward_mean", **{k[len("component/"):]: k for k in rows[-1] if k.startswith("component/")}}
    with plt.rc_context({"svg.fonttype": "none", "svg.hashsalt": "report", "font.size": 8, "path.simplify_threshold": 0.5,
                         "font.family": "sans-serif", "font.sans-serif": ["DejaVu Sans"],
                         "axes.spines.top": False, "axes.spines.right": False}):
        fig, (left, right) = plt.subplots(1, 2, figsize=(8.4, 2.5), layout="constrained")
        fit = [(s, r["fitness"]) for s, r in zip(steps, rows) if "fitness" in r]
        if fit:
            left.plot(*zip(*fit), color="#1f6f3f", lw=1.5)
        left.set_title("task fitness (hidden from the designer)", fontsize=8)
        left.set_xlabel("env steps")
        for name, key in series.items():
            points = [(s, r[key]) for s, r in zip(steps, rows) if key in r]
            if points:
                right.plot(*zip(*points), lw=2 if name == "reward" else 1, label=name,
                           color="black" if name == "reward" else None)
        right.set_title("reward and its components (per step)", fontsize=8)
        right.set_xlabel("env steps")
        if right.lines:
            right.legend(fontsize=7, frameon=False, loc="center left", bbox_to_anchor=(1.0, 0.5))
        buf = io.StringIO()
        fig.savefig(buf, format="svg", metadata={"Date": None, "Creator": None})
        plt.close(fig)
    return Markup(_inline(buf.getvalue(), prefix))


def _hacking(a: Analysis) -> list[str]:
    why = {"rose_alone": "over training the reward rose while the task's fitness did not",
           "against": f"over the evaluation steps the reward falls where the fitness rises "
                      f"(correlation {a.step_correlation_text}, below {AGAINST})"}
    return [why.get(h, h) for h in a.hacking]


def _candidate(folder: RunFolder, rec: CandidateRecord) -> CandidateView:
    cand = folder.named(rec.name)
    view = CandidateView(rec=rec, critic=_read_model(CriticReport, cand.critic_report),
                         analysis=_read_model(Analysis, cand.analysis), judgement=_read_model(Judgement, cand.judge))
    code = cand.code()
    if code is not None:
        view.code = highlight(code)
        parent = folder.named(rec.parent).code() if rec.parent else None
        if parent is not None and (d := diff(parent, code, rec.parent, rec.name)):
            view.diff, view.diff_stats = d
    if view.analysis is not None:
        view.hacking = _hacking(view.analysis)
    view.curves = curves(read_progress(cand.progress), prefix=f"{view.anchor}-")
    if cand.video.is_file():
        view.video = cand.video.relative_to(folder.path).as_posix()
    return view


def _usage_text(usage: dict) -> tuple[str, str]:
    tokens = f"{usage.get('prompt_tokens', 0):,} prompt + {usage.get('completion_tokens', 0):,} completion"
    cost, unknown = usage.get("cost_usd") or 0.0, usage.get("unknown_cost_calls") or 0
    cost_text = "unknown" if unknown and not cost else f"${cost:.4f}" + (f" + {unknown} calls of unknown cost" if unknown else "")
    return tokens, cost_text


def _rounds(folder: RunFolder, record: RunRecord, views: dict[str, CandidateView]) -> list[RoundView]:
    selector = SELECTORS[record.config.selector]()
    feedback = {f.round: f for f in record.feedback}
    last = max([record.config.iterations, *feedback, *(c.iteration for c in record.candidates)])
    rounds = []
    for it in range(1, last + 1):
        cands = sorted((v for v in views.values() if v.rec.iteration == it), key=lambda v: v.rec.index)
        best = selector.best([v.rec for v in cands])
        best_view = views[best.name] if best is not None else None
        if best_view is not None:
            best_view.round_best = True
        prompt = folder.prompt(it).read_text(errors="replace") if folder.prompt(it).is_file() else ""
        if len(prompt) > MAX_PROMPT_CHARS:
            prompt = prompt[:MAX_PROMPT_CHARS] + f"\n[... {len(prompt) - MAX_PROMPT_CHARS:,} more characters ...]"
        view = RoundView(it, cands, best_view, prompt, feedback.get(it))
        if view.feedback is not None and view.feedback.edit:
            edited, start = folder.named(view.feedback.edit).code(), view.feedback.from_
            original = folder.named(start).code() if start else None
            if edited is not None:
                d = diff(original, edited, start, view.feedback.edit) if original is not None else None
                view.edit = d[0] if d else highlight(edited)
        if cands or view.feedback or prompt:
            rounds.append(view)
    return rounds


def build(run: Path) -> Path:
    """Write ``RUN/report.html`` and return its path."""
    folder = RunFolder(run)
    record = folder.read_record()
    views = {c.name: _candidate(folder, c) for c in sorted(record.candidates, key=lambda c: c.key)}
    if record.best is not None and record.best.name in views:
        views[record.best.name].best = True
    tokens, cost = _usage_text(record.usage)
    envcard = folder.envcard.read_text() if folder.envcard.is_file() else None
    fitness = folder.fitness.read_text() if folder.fitness.is_file() else None
    page = _template().render(
        record=record, config=record.config, task=record.config.task, tokens=tokens, cost=cost,
        envcard=highlight(envcard) if envcard else None, fitness=highlight(fitness) if fitness else None,
        rounds=_rounds(folder, record, views), best=views.get(record.best.name) if record.best else None,
        css=Markup(_formatter().get_style_defs(".hl")),
    )
    write_atomic(folder.report, page)
    return folder.report


def film_round_bests(folder: RunFolder) -> Iterator[tuple[str, str]]:
    """Film each round's best policy that has no video yet, in a sandboxed worker: (name, why it could
    not be filmed, or "")."""
    record = folder.read_record()
    selector, executor = SELECTORS[record.config.selector](), LocalExecutor(1, record.config.require_sandbox)
    for it in sorted({c.iteration for c in record.candidates}):
        best = selector.best([c for c in record.candidates if c.iteration == it])
        if best is None or folder.named(best.name).video.is_file():
            continue
        try:
            film_candidate(folder.named(best.name), record.config.task, executor=executor)
        except RenderError as exc:
            yield best.name, str(exc)
        else:
            yield best.name, ""


@lru_cache(maxsize=1)
def _template() -> jinja2.Template:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("reward_designer.prompts"))),
        autoescape=True,  # every text from a run (an LLM's, a worker's) is escaped
        undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters["num"] = lambda x, fmt=".3f": "" if x is None else format(x, fmt)
    env.filters["para"] = lambda text: Markup("".join(f"<p>{html.escape(p)}</p>" for p in re.split(r"\n\s*\n", text.strip()) if p))
    return env.get_template("report.html.j2")
