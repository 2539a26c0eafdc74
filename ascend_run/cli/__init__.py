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


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ascend-run")
def cli() -> None:
    """Train and serve DeepSeek-V3 with MindSpore on Ascend servers, from one deployment file."""


def main(argv: list[str] | None = None) -> None:
    """Entry point of the console script: runs the CLI and maps package errors to exit codes."""
    try:
        cli.main(args=argv, prog_name="ascend-run", standalone_mode=False)
    except click.exceptions.Abort:
        click.secho("interrupted", fg="red", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except AscendRunError as exc:
        click.secho(f"error: {exc}", fg="red", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.secho("interrupted", fg="red", err=True)
        sys.exit(130)
    sys.exit(0)
