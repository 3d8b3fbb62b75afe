"""Rendering the jinja2 templates in prompts/ (shipped as the package reward_designer.prompts).

Every ``{{ value }}`` a template writes is bounded here, whatever it holds (an LLM's program, a
traceback, the analyzer's text): a 2 MB reply sent back whole in a fixer prompt is a request no
provider takes, and a run that resends it can never finish. Past the bound the middle is cut,
with a marker saying how much; a template may bound a value tighter with ``| bound(n)``.
"""

from __future__ import annotations

from functools import lru_cache
from importlib import resources

import jinja2

# What one {{ value }} may put into a prompt: more than any program the lint accepts (20,000
# characters) or an env card, far less than a model's context.
MAX_VALUE_CHARS = 24_000


def bound(value, limit: int = MAX_VALUE_CHARS):
    """``value`` as text with its middle cut to ``limit`` characters, marked ``[... cut N characters ...]``;
    the beginning and the end are kept (a program's head, a traceback's last line)."""
    text = value if isinstance(value, str) else str(value)
    if len(text) <= limit:
        return value
    head, tail = limit // 2, limit - limit // 2
    return f"{text[:head]}\n[... cut {len(text) - head - tail:,} characters ...]\n{text[len(text) - tail:]}"


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    root = resources.files("reward_designer.prompts")
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,  # a missing variable is a bug, not an empty string
        keep_trailing_newline=True,
        finalize=bound,  # applied to every {{ expression }}
    )
    env.filters["bound"] = bound
    return env


def render(name: str, **context) -> str:
    return _env().get_template(name).render(**context).strip() + "\n"


def messages(template: str, system: bool = True, **context) -> list[dict]:
    """A chat: the designer's system message (the reward contract, unless ``system`` is False),
    then the rendered template as the user's turn."""
    user = [{"role": "user", "content": render(template, **context)}]
    return ([{"role": "system", "content": render("system.j2")}] if system else []) + user
