"""Task cards: the benchmark tasks in envs/*.yaml, and TaskSpecs built from flags."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import yaml
from pydantic import ValidationError

from .schemas import TaskSpec


class TaskError(ValueError):
    """A task card that is missing or malformed (one line, fit for a user)."""


def _cards() -> dict[str, resources.abc.Traversable]:
    root = resources.files("reward_designer.envs")
    return {p.name[: -len(".yaml")]: p for p in root.iterdir() if p.name.endswith(".yaml")}


def parse_card(text: str, where: str) -> TaskSpec:
    try:
        return TaskSpec.model_validate(yaml.safe_load(text))
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()
        raise TaskError(f"{where}: not a valid task card ({' '.join(first[:3])})") from None


def load_task(name_or_path: str) -> TaskSpec:
    """A task card by name (``halfcheetah-backflip``) or by path to a YAML file."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        return parse_card(path.read_text(), str(path))
    cards = _cards()
    if name_or_path not in cards:
        raise TaskError(f"no task card named {name_or_path!r}; `reward-designer tasks` lists them")
    return parse_card(cards[name_or_path].read_text(), name_or_path)


def list_tasks() -> list[TaskSpec]:
    return [load_task(name) for name in sorted(_cards())]
