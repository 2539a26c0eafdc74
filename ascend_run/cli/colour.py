"""One colour policy for everything the command line prints: errors, node prefixes, tables, progress.

`--color always|never` (a global option) wins. Under `auto` (the default): `NO_COLOR` (any non-empty value,
no-color.org) turns colour off; else `FORCE_COLOR` turns it on (`FORCE_COLOR=0` off); else `TERM=dumb` turns it
off; else a stream is coloured when it is a terminal. Colour off means no escape sequence at all: no colour,
no bold, no cursor movement (progress bars then draw nothing until their final line). Data is never
highlighted and never read as markup: rich consoles come from here with highlighting and markup off.
"""

from __future__ import annotations

import os
import sys

CHOICES = ("auto", "always", "never")
_choice = "auto"


def set_choice(choice: str) -> None:
    """The `--color` of this run (main sets it for every invocation, so a previous one never leaks)."""
    global _choice
    _choice = choice if choice in CHOICES else "auto"


def forced() -> bool | None:
    """True/False when the option or the environment decides for every stream, None when each stream's
    being a terminal decides."""
    if _choice != "auto":
        return _choice == "always"
    if os.environ.get("NO_COLOR"):
        return False
    force = os.environ.get("FORCE_COLOR")
    if force:
        return force.strip().lower() not in ("0", "false", "no")
    if os.environ.get("TERM") == "dumb":
        return False
    return None


def enabled(stream=None) -> bool:
    """Whether to colour what goes to `stream` (default stdout)."""
    decided = forced()
    if decided is not None:
        return decided
    stream = sys.stdout if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # a closed or foreign stream
        return False


def style(text: str, stream=None, **styles) -> str:
    """click.style(text, **styles) when `stream` gets colour, else the text unchanged."""
    import click

    return click.style(text, **styles) if enabled(stream) else text


def console(stderr: bool = False, width: int | None = None):
    """A rich console under the policy: highlight and markup off (a value is text, `[red]` in it included);
    with colour off, no styles and no live redrawing (force_terminal=False), so nothing but text is written."""
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    on = enabled(stream)
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    if width is None:  # a terminal's own width even when rich is told it is no terminal; else no 80-column squeeze
        import shutil

        width = shutil.get_terminal_size((200, 24)).columns if tty else 200
    return Console(stderr=stderr, soft_wrap=True, width=width, highlight=False, markup=False, emoji=False,
                   force_terminal=on, no_color=not on, color_system="auto" if on else None)


def _set_choice_now(ctx, param, value: str | None) -> str | None:
    """--color takes effect at once: for this run's click output (ctx.color) and every rich console. After the
    command (`ascend-run status --color never`) it wins over the one before it; not given there, it changes
    nothing."""
    if value is None:
        return value
    set_choice(value)
    ctx.color = forced()
    if ctx.parent is not None:
        ctx.find_root().color = ctx.color
    return value


def colour_option(after_command: bool = False):
    """--color/--colour: a global option, and the same one on every command (kubectl and git habits put it
    after the command)."""
    import click

    return click.option("--color", "--colour", "color", type=click.Choice(CHOICES),
                        default=None if after_command else "auto", show_default=not after_command,
                        is_eager=True, callback=_set_choice_now, expose_value=False,
                        help="Colour in everything printed. auto: off under NO_COLOR or TERM=dumb, on under "
                             "FORCE_COLOR, else on for a terminal." + (" Also accepted before the command."
                                                                      if after_command else ""))
