"""The `ascend-run` command line: a thin layer over the package.

Each command group lives in its own module and is registered here explicitly. Commands raise
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

# Modules under ascend_run.cli that each define `commands: list[click.Command]`.
COMMAND_MODULES = [
    "validate",
    "config",
    "image",
    "docker_run",
    "launch",
    "chart",
    "logs",
    "ask",
    "sim",
    "exec",
    "demo",
    "ranktable",
    "weights",
    "data",
]


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ascend-run")
def cli() -> None:
    """Train and serve DeepSeek-V3 with MindSpore on Ascend servers, from one deployment file."""


def _register() -> None:
    for name in COMMAND_MODULES:
        module = importlib.import_module(f"ascend_run.cli.{name}")
        for command in module.commands:
            cli.add_command(command)


_register()


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
