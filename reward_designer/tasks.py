"""Task cards: the benchmark tasks in envs/*.yaml, and TaskSpecs built from flags."""

from __future__ import annotations

import difflib
from importlib import resources
from collections.abc import Iterable
from pathlib import Path

import yaml
from pydantic import ValidationError

from .errors import UserError
from .schemas import IMPLICIT_SUITE, TaskSpec

# A card is a few lines of YAML and a fitness function. The caps come before anything expands it:
# a card of nested aliases (nine lists of nine) is 9**9 values once validated or printed.
MAX_CARD_BYTES = 1_000_000
MAX_CARD_VALUES = 100_000
MAX_ERRORS_SHOWN = 10
MAX_ERROR_CHARS = 200
SMOKE_SUITE = "smoke"  # tiny budgets, for CI: outside the standard suite
EXPERT_ENV = "env"  # a card's expert: the env's own reward


class TaskError(UserError, ValueError):
    """A task card that is missing or malformed (one line, fit for a user)."""


def _cards() -> dict[str, resources.abc.Traversable]:
    root = resources.files("reward_designer.envs")
    return {p.name[: -len(".yaml")]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def did_you_mean(word: str, choices, what: str) -> str:
    """``' (did you mean X?)'`` for the closest of ``choices``, compared case-insensitively, else ''."""
    by_fold = {}
    for c in choices:
        by_fold.setdefault(c.casefold(), c)
    close = difflib.get_close_matches(word.casefold(), list(by_fold), n=1, cutoff=0.6)
    return f" (did you mean {what}{by_fold[close[0]]}?)" if close else ""


def _short(text: str, limit: int = MAX_ERROR_CHARS) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def expanded_size(value, limit: int = MAX_CARD_VALUES) -> int:
    """How many values ``value`` holds once every alias is written out, counted without writing it out
    (each shared list or dict once, by id). Stops counting past ``limit``; a list holding itself is over it."""
    sizes: dict[int, int] = {}

    def count(v) -> int:
        if not isinstance(v, (list, dict)):
            return 1
        if id(v) in sizes:
            if sizes[id(v)] < 0:  # still being counted: an alias to one of its own parents
                return limit + 1
            return sizes[id(v)]
        sizes[id(v)] = -1
        total = 1
        for item in (v.values() if isinstance(v, dict) else v):  # YAML keys are scalars once hashable
            total += count(item)
            if total > limit:
                break
        sizes[id(v)] = total
        return total

    return count(value)


def _yaml_error(exc: yaml.YAMLError) -> str:
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    if mark is None:
        return _short(problem)
    return f"line {mark.line + 1}, column {mark.column + 1}: {_short(problem)}"


def _message(error: dict) -> str:
    msg = _short(error["msg"].removeprefix("Value error, "))
    if error["type"] == "extra_forbidden" and len(error["loc"]) == 1:  # a misspelt field of the card
        msg += did_you_mean(str(error["loc"][0]), TaskSpec.model_fields, "")
    return msg


def _field_errors(exc: ValidationError) -> str:
    errors = exc.errors(include_url=False, include_input=False, include_context=False)
    shown = [f"{'.'.join(str(p) for p in e['loc']) or 'the card'}: {_message(e)}" for e in errors[:MAX_ERRORS_SHOWN]]
    more = f"; and {len(errors) - MAX_ERRORS_SHOWN} more" if len(errors) > MAX_ERRORS_SHOWN else ""
    return "; ".join(shown) + more


def parse_card(text: str | bytes, where: str) -> TaskSpec:
    """A card's text -> TaskSpec, or TaskError on one line: the YAML position of a syntax error,
    every field error (bounded), and no input echoed back at its full size."""
    if len(text) > MAX_CARD_BYTES:
        raise TaskError(f"{where}: larger than a task card can be ({MAX_CARD_BYTES:,} bytes)")
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TaskError(f"{where}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise TaskError(f"{where}: not valid YAML ({_yaml_error(exc)})") from None
    if expanded_size(data) > MAX_CARD_VALUES:
        raise TaskError(f"{where}: more than {MAX_CARD_VALUES:,} values once its YAML aliases are expanded; "
                        "a task card needs far fewer")
    try:
        return TaskSpec.model_validate(data)
    except ValidationError as exc:
        raise TaskError(f"{where}: not a valid task card ({_field_errors(exc)})") from None


def card_file(name_or_path: str) -> Path | resources.abc.Traversable:
    """Where a card is: a path to a YAML file, or a shipped card's name (``halfcheetah-backflip``)."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return path
    cards = _cards()
    if name_or_path not in cards:
        hint = did_you_mean(name_or_path, cards, "")
        raise TaskError(f"no task card named {name_or_path!r}{hint}; `reward-designer tasks` lists them")
    return cards[name_or_path]


def load_task(name_or_path: str) -> TaskSpec:
    """A task card by name (``halfcheetah-backflip``) or by path to a YAML file."""
    with card_file(name_or_path).open("rb") as f:  # no more than the cap is read, whatever the file's size
        return parse_card(f.read(MAX_CARD_BYTES + 1), name_or_path)


def task_from_flags(name: str, env_id: str, description: str) -> TaskSpec:
    """The TaskSpec of ``--env`` and ``--task``, or TaskError naming what is wrong with them."""
    try:
        return TaskSpec(name=name, env_id=env_id, description=description)
    except ValidationError as exc:
        fields = {"env_id": "--env", "description": "--task"}
        raise TaskError("; ".join(f"{fields.get(str(e['loc'][0]), e['loc'][0])}: {_message(e)}"
                                  for e in exc.errors(include_url=False, include_input=False))) from None


def list_tasks() -> list[TaskSpec]:
    return [load_task(name) for name in sorted(_cards())]


# ------------------------------------------------------------------ suites and experts
def card_suites(card: TaskSpec) -> list[str]:
    """The suites a card is in: its own, and ``standard`` unless it is a ``smoke`` card."""
    return [*card.suites, *([] if SMOKE_SUITE in card.suites else [IMPLICIT_SUITE])]


def list_suites() -> dict[str, list[str]]:
    """Each suite's shipped card names, sorted; ``standard`` holds every card outside ``smoke``."""
    suites: dict[str, list[str]] = {IMPLICIT_SUITE: []}
    for name in sorted(_cards()):
        for suite in card_suites(load_task(name)):
            suites.setdefault(suite, []).append(name)
    return dict(sorted(suites.items()))


def suite_cards(name: str) -> list[str]:
    """The card names of suite ``name``, or TaskError naming the suites there are."""
    suites = list_suites()
    if name not in suites:
        raise TaskError(f"no suite named {name!r}{did_you_mean(name, suites, '')}; the suites: {', '.join(suites)}")
    return suites[name]


def resolve_cards(refs: str | Iterable[str]) -> list[str]:
    """A user's own list of cards, names or paths to YAML files (one string: comma-separated), each checked
    to load; TaskError for one that does not, or for two cards of the same name (results are kept by name)."""
    items = [r.strip() for r in (refs.split(",") if isinstance(refs, str) else refs)]
    items = [r for r in items if r]
    if not items:
        raise TaskError("no task cards given")
    seen: dict[str, str] = {}
    for ref in items:
        name = load_task(ref).name
        if name in seen:
            raise TaskError(f"{seen[name]} and {ref} are both cards named {name!r}")
        seen[name] = ref
    return items


def expert_code(name_or_path: str) -> str | None:
    """The card's expert reward program, read from the file beside the card (shipped cards: from the installed
    package); None where the expert is the env's own reward. TaskError when the card names none or it is missing."""
    card = load_task(name_or_path)
    if card.expert is None:
        raise TaskError(f"{name_or_path}: the card names no expert reward (expert: env, or a program beside it)")
    if card.expert == EXPERT_ENV:
        return None
    source = card_file(name_or_path)
    program = (source.parent if isinstance(source, Path) else resources.files("reward_designer.envs")) / card.expert
    if not program.is_file():
        raise TaskError(f"{name_or_path}: its expert reward {card.expert} is not beside the card")
    with program.open("rb") as f:
        text = f.read(MAX_CARD_BYTES + 1)
    if len(text) > MAX_CARD_BYTES:
        raise TaskError(f"{name_or_path}: its expert reward {card.expert} is larger than {MAX_CARD_BYTES:,} bytes")
    try:
        return text.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TaskError(f"{name_or_path}: its expert reward {card.expert} is not UTF-8 text (byte {exc.start})") from None
