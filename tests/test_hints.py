"""Hints that run: every `ascend-run …` command the kit prints (a fix, a next step, a help text) parses with the
real command line. A removed spelling (`logs --collect DIR`) or an unknown option fails here, not in a user's
terminal.

The commands are collected from the package's string literals and f-strings (their {…} parts stand for a
value, here `X`), so a new hint is tested without being listed.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import click
import pytest

import ascend_run
from ascend_run.cli import COMMANDS, cli
from ascend_run.errors import ConfigError

PACKAGE = Path(ascend_run.__file__).parent
PLACEHOLDER = "VALUE"
# A hint ends at the end of its string, or at what ends a command in prose: a backtick, a closing parenthesis,
# a `;`, a `, ` or ` (` going on in prose, ` | ` (alternatives in a docstring, or a pipe), ` && `, ` > `, or two
# spaces. The examples of --help (cli/examples.py) are shell lines: tests/test_help.py parses those.
SHELL_LINES = {"cli/examples.py"}
END = re.compile(r"`|\)|;|, | \(| \| | && | > |  |\n|$")
START = re.compile(r"ascend-run ((?:-[-\w]+ \S+ )*)([a-z][a-z-]*)(?=[ `)]|$)")
# Strings that say `ascend-run` and a command word without being a command line (the simulated npu-smi's usage).
NOT_HINTS = {"ascend-run sim stand-in: only 'info' is simulated"}


def _text(node: ast.AST) -> str | None:
    """A string literal's text, or an f-string's with each {…} as PLACEHOLDER."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(v.value if isinstance(v, ast.Constant) else PLACEHOLDER for v in node.values)
    return None


def _module_docstring(tree: ast.Module) -> ast.AST | None:
    first = tree.body[0] if tree.body else None
    return first.value if isinstance(first, ast.Expr) else None


def printed_commands() -> list[tuple[str, str]]:
    """(where, command line) for every `ascend-run <command> …` in the package's strings. Module docstrings are
    left out (never printed); help texts (command docstrings) are in."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if str(path.relative_to(PACKAGE)) in SHELL_LINES:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        skip = _module_docstring(tree)
        inner = {id(v) for n in ast.walk(tree) if isinstance(n, ast.JoinedStr) for v in n.values}
        for node in ast.walk(tree):
            if node is skip or id(node) in inner:
                continue
            text = _text(node)
            if not text or "ascend-run " not in text:
                continue
            for match in START.finditer(text):
                if match.group(2) not in COMMANDS and not match.group(1):
                    continue  # prose: "ascend-run does not run …"
                rest = text[match.end():]
                line = match.group(0) + rest[:END.search(rest).start()]
                if line.strip() in NOT_HINTS:
                    continue
                found.append((f"{path.relative_to(PACKAGE.parent)}:{node.lineno}", line.strip()))
    return found


def parse(argv: list[str]) -> click.Context:
    """The real parser, down to the command, with every option's callback (renamed spellings refuse there);
    nothing runs."""
    command: click.Command = cli
    ctx = None
    name = "ascend-run"
    while True:
        ctx = command.make_context(name, argv, parent=ctx)
        if not isinstance(command, click.Group):
            return ctx
        rest = [*ctx._protected_args, *ctx.args]
        name, command, argv = command.resolve_command(ctx, rest)


def _names_a_command(argv: list[str]) -> bool:
    """`ascend-run config derive` in prose names a command; it is no command line to run, so its arguments may
    be missing (but the command must exist: resolving it checked that)."""
    return not any(token.startswith("-") for token in argv)


HINTS = printed_commands()


def test_the_collector_finds_the_hints():
    """The known hints are among those found (the collector is not silently finding nothing)."""
    lines = [line for _, line in HINTS]
    assert len(HINTS) >= 25, HINTS
    assert "ascend-run logs -f FILE --collect --out DIR" in lines
    assert any(line.startswith("ascend-run sim down --dir VALUE") for line in lines)


@pytest.mark.parametrize("where,line", HINTS, ids=[f"{w}:{text}" for w, text in HINTS])
def test_every_printed_command_parses(where, line, monkeypatch, tmp_path):
    import shlex

    monkeypatch.setenv("ASCEND_RUN_FILE", str(tmp_path / "job.yaml"))
    argv = shlex.split(line)[1:]
    try:
        parse(argv)
    except click.exceptions.Exit:
        pass  # a group shown with its help (`ascend-run sim`)
    except click.MissingParameter:
        if not _names_a_command(argv):
            raise
    except ConfigError as exc:
        if exc.key != "--job":  # `--job NAME` looks the job up as it parses: there is none here
            raise
    except click.BadParameter as exc:
        if PLACEHOLDER not in exc.format_message():  # a choice filled in by the code (`chart values {kind}`)
            pytest.fail(f"{where}: `{line}` does not parse: {exc.format_message()}")
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{line}` does not parse: {exc.format_message()}")


@pytest.mark.parametrize("line", [
    "ascend-run logs -f FILE --collect DIR",          # the removed spelling
    "ascend-run status -f FILE --no-such-option",      # an unknown option
    "ascend-run chart values train -f F -o values.yaml",  # -o is a format now
    "ascend-run sim up --nodes 3",                     # --nodes is a list of hosts
])
def test_a_bad_hint_fails_the_parse(line, monkeypatch, tmp_path):
    import shlex

    monkeypatch.setenv("ASCEND_RUN_FILE", str(tmp_path / "job.yaml"))
    with pytest.raises(click.ClickException):
        parse(shlex.split(line)[1:])


def documented_commands() -> list[tuple[str, str]]:
    """(where, command line) for each `ascend-run …` line in the README's and docs' shell blocks (one command per
    line; `&&` chains split; a trailing `# comment` dropped)."""
    root = PACKAGE.parent
    found = []
    for path in [root / "README.md", *sorted((root / "docs").glob("*.md"))]:
        block = False
        for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if raw.startswith("```"):
                block = not block and raw.strip() in ("```", "```sh", "```bash", "```console", "```shell")
                continue
            if not block:
                continue
            line = raw.split("  #")[0].strip().removeprefix("$ ")
            for part in line.split("&&"):
                part = part.strip()
                if part.startswith("ascend-run ") and " [-" not in part:  # not a synopsis ([--optional])
                    found.append((f"{path.name}:{number}", part))
    return found


DOCUMENTED = documented_commands() if (PACKAGE.parent / "README.md").exists() else []


@pytest.mark.parametrize("where,line", DOCUMENTED, ids=[f"{w}:{text}" for w, text in DOCUMENTED])
def test_every_documented_command_parses(where, line, monkeypatch, tmp_path):
    import shlex

    monkeypatch.setenv("ASCEND_RUN_FILE", str(tmp_path / "job.yaml"))
    monkeypatch.chdir(PACKAGE.parent)  # paths in the docs are the checkout's
    try:
        parse(shlex.split(line, comments=True)[1:])
    except click.exceptions.Exit:
        pass
    except ConfigError as exc:
        if exc.key != "--job":  # `--job NAME` looks the job up as it parses: there is none here
            raise
    except click.ClickException as exc:
        pytest.fail(f"{where}: `{line}` does not parse: {exc.format_message()}")
