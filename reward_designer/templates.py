"""Rendering the jinja2 templates in prompts/ (shipped as the package reward_designer.prompts)."""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import jinja2


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    root = resources.files("reward_designer.prompts")
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=True,
    )


def render(name: str, **context) -> str:
    return _env().get_template(name).render(**context).strip() + "\n"


def messages(template: str, system: bool = True, **context) -> list[dict]:
    """A chat: the designer's system message (the reward contract, unless ``system`` is False),
    then the rendered template as the user's turn."""
    user = [{"role": "user", "content": render(template, **context)}]
    return ([{"role": "system", "content": render("system.j2")}] if system else []) + user
