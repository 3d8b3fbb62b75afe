"""The base of every error a user can act on: bad input, a task card, a run folder, an LLM that would not
answer. The command line shows one as a line on stderr with exit code 2. A module of its own, importing
nothing, so the CLI catches these without importing the modules that raise them (torch, MuJoCo)."""


class UserError(Exception):
    """An error whose first line is fit to show a user as is."""
