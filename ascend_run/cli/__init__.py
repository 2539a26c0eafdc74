"""The `ascend-run` command line: a thin layer over the package.

Each command group lives in its own module, named in COMMANDS here and imported when it runs. Commands raise
`AscendRunError`s; `main` turns them into a red message and the error's exit code.
Exit codes: 0 ok, 1 generic failure, 2 bad input file, 3 Docker engine, 4 node unreachable/remote
command failed, 5 preflight failed, 6 job failed, 7 simulated cluster, 8 a step around the job (weights
download, data conversion) failed, 130 interrupted.
"""

from __future__ import annotations

import importlib
import sys

import click

from ascend_run import __version__
from ascend_run.cli import colour
from ascend_run.cli.common import FILE_ENV
from ascend_run.errors import AscendRunError

# Every command, and the module under ascend_run.cli that defines it (in its `commands` list). A module
# is imported only when one of its commands runs (or for --help), so `ascend-run exec` does not pay for
# the chart renderer or the config checker; tests check this table against the modules.
COMMANDS = {
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
    "logs": "logs",
    "exec": "exec",
    "chart": "chart",
    "ranktable": "ranktable",
    "weights": "weights",
    "data": "data",
    "ask": "ask",
    "sim": "sim",
    "demo": "demo",
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
        return next(c for c in commands if c.name == name)


def _set_colour(ctx: click.Context, param: click.Parameter, value: str) -> str:
    """--color takes effect at once: for this run's click output (ctx.color) and every rich console."""
    colour.set_choice(value)
    ctx.color = colour.forced()
    return value


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, "-V", "--version", prog_name="ascend-run")
@click.option("-f", "--file", "deployment_file", envvar=FILE_ENV, type=click.Path(dir_okay=False), metavar="FILE",
              help=f"The deployment file, for every command that reads one (default: ${FILE_ENV}). A -f after "
                   "the command wins; commands that read no deployment file ignore this one.")
@click.option("--color", "--colour", "color", type=click.Choice(colour.CHOICES), default="auto", show_default=True,
              is_eager=True, callback=_set_colour, expose_value=False,
              help="Colour in everything printed. auto: off under NO_COLOR or TERM=dumb, on under FORCE_COLOR, "
                   "else on for a terminal.")
def cli(deployment_file: str | None) -> None:
    """Train and serve DeepSeek-V3 with MindSpore on Ascend servers, from one deployment file.

    Every report takes -o/--output text|json; files and directories a command writes go to --out PATH;
    -w/--nodes and -x/--exclude choose nodes; --dry-run prints exactly what would run.
    """


def _error(text: str) -> None:
    """An error line on stderr, red only where the colour policy allows."""
    from ascend_run.inputs.text import terminal

    click.echo(colour.style(terminal(text), sys.stderr, fg="red"), err=True, color=colour.enabled(sys.stderr))


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the CLI and maps package errors to exit codes."""
    colour.set_choice("auto")  # no --color of an earlier in-process run leaks into this one
    from ascend_run import secrets

    secrets.forget()  # nor the secret values it read
    try:
        cli.main(args=argv, prog_name="ascend-run", standalone_mode=False)
    except click.exceptions.Abort:
        _error("interrupted")
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AscendRunError as exc:
        _error(f"error: {exc}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        _error("interrupted")
        sys.exit(130)
    sys.exit(0)
