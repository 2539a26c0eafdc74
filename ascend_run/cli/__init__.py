"""The `ascend-run` command line: a thin layer over the package.

Each command group lives in its own module, named in COMMANDS here and imported when it runs. Commands raise
`AscendRunError`s; `main` turns them into a red message and the error's exit code.
Exit codes (the README's table): 0 ok, 1 generic failure, 2 bad input (a bad file, or a usage error: click's
own code), 3 Docker engine, 4 node unreachable/remote command failed, 5 preflight failed, 6 job failed, 7
simulated cluster, 8 a step around the job (weights download, data conversion) failed, 130 interrupted.
With -o json|yaml a failure also prints {"error", "fix", "exit_code"} on stdout (unless a report was printed).
"""

from __future__ import annotations

import importlib
import sys

import click

from ascend_run import __version__
from ascend_run.cli import colour, common
from ascend_run.cli.common import FILE_ENV, refuse_options_as_values
from ascend_run.errors import AscendRunError

# Every command, and the module under ascend_run.cli that defines it (in its `commands` list). A module
# is imported only when one of its commands runs (or for --help), so `ascend-run exec` does not pay for
# the chart renderer or the config checker; tests check this table against the modules.
COMMANDS = {
    "init": "init",
    "validate": "validate",
    "config": "config",
    "image": "image",
    "docker-run": "docker_run",
    "preflight": "launch",
    "launch": "launch",
    "status": "launch",
    "stop": "launch",
    "supervise": "supervise",
    "events": "supervise",
    "jobs": "supervise",
    "logs": "logs",
    "exec": "exec",
    "push": "push",
    "chart": "chart",
    "ranktable": "ranktable",
    "weights": "weights",
    "data": "data",
    "ask": "ask",
    "sim": "sim",
    "demo": "demo",
    "completion": "help",
    "man": "help",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        module = COMMANDS.get(name)
        if module is None:
            return None
        commands = importlib.import_module(f"ascend_run.cli.{module}").commands
        return refuse_options_as_values(next(c for c in commands if c.name == name))


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="ascend-run")
@click.option("-f", "--file", "deployment_file", envvar=FILE_ENV, type=click.Path(dir_okay=False), metavar="FILE",
              help=f"The deployment file, for every command that reads one (default: ${FILE_ENV}). A -f after "
                   "the command wins; commands that read no deployment file ignore this one.")
@colour.colour_option()
def cli(deployment_file: str | None) -> None:
    """Train and serve DeepSeek-V3 with MindSpore on Ascend servers, from one deployment file.

    Every report takes -o/--output text|json|yaml; files and directories a command writes go to --out PATH;
    -w/--nodes and -x/--exclude choose nodes; --dry-run prints exactly what would run.
    """


refuse_options_as_values(cli, "")


def _error(text: str) -> None:
    """An error line on stderr, red only where the colour policy allows."""
    from ascend_run.inputs.text import terminal

    click.echo(colour.style(terminal(text), sys.stderr, fg="red"), err=True, color=colour.enabled(sys.stderr))


def requested_format(argv: list[str]) -> str:
    """The -o/--output the command line asks for (text when none), read from the words themselves: a usage error
    stops click before it has parsed them. Words after `--` are exec's command, not options."""
    words = argv[:argv.index("--")] if "--" in argv else argv
    found = "text"
    for i, word in enumerate(words):
        if word in ("-o", "--output") and i + 1 < len(words):
            found = words[i + 1]
        elif word.startswith("--output="):
            found = word.split("=", 1)[1]
        elif word.startswith("-o") and not word.startswith("--") and len(word) > 2:
            found = word[2:]
    return found if found in ("json", "yaml") else "text"


def _fail(message: str, fix: str | None, exit_code: int, fmt: str, show) -> None:
    """A failure: the message for people (stderr), and with -o json|yaml an error object on stdout
    ({"error", "fix", "exit_code"}) unless the command printed its own report already."""
    show()
    if fmt != "text" and not common.REPORTED["done"]:
        common.echo_json({"error": message, "fix": fix, "exit_code": exit_code}, yaml=fmt == "yaml")
    sys.exit(exit_code)


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the CLI and maps package errors to exit codes."""
    colour.set_choice("auto")  # no --color of an earlier in-process run leaks into this one
    from ascend_run import secrets

    secrets.forget()  # nor the secret values it read
    common.REPORTED["done"] = False
    words = list(sys.argv[1:] if argv is None else argv)
    fmt = requested_format(words)
    try:
        cli.main(args=words, prog_name="ascend-run", standalone_mode=False)
    except click.exceptions.Abort:
        _fail("interrupted", None, 130, fmt, lambda: _error("interrupted"))
    except click.ClickException as exc:
        _fail(exc.format_message(), "see --help" if exc.exit_code == 2 else None, exc.exit_code, fmt, exc.show)
    except AscendRunError as exc:
        text = f"error: {exc}"
        _fail(exc.message, exc.fix, exc.exit_code, fmt, lambda: _error(text))
    except KeyboardInterrupt:
        _fail("interrupted", None, 130, fmt, lambda: _error("interrupted"))
    sys.exit(0)
