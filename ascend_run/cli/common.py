"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from typing import Any

import click

deployment_option = click.option(
    "-f", "--file", "deployment_file", required=True, type=click.Path(dir_okay=False),
    help="The deployment file (YAML) describing the cluster and the job.")

output_option = click.option(
    "--output", "output_format", type=click.Choice(["text", "json"]), default="text", show_default=True,
    help="Output format; json is for scripts.")

dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print exactly what would run, and run nothing.")

accept_new_option = click.option(
    "--accept-new-host-keys", is_flag=True,
    help="Record host keys of nodes not yet in known_hosts (a changed key is still an error).")

parallel_option = click.option(
    "--parallel", default=256, show_default=True, type=click.IntRange(min=1),
    help="Nodes contacted at once (connections and remote commands).")


@contextlib.contextmanager
def connected(dep, accept_new: bool = False, parallel: int = 256, nodes: list | None = None) -> Iterator:
    """A `transport.cluster.Cluster` of every node (or `nodes`), closed at the end; raises for the first node
    that cannot be reached, naming the others."""
    from ascend_run.transport.cluster import connect

    with connect(dep, accept_new=accept_new, parallelism=parallel, nodes=nodes) as cluster:
        yield cluster


def human_size(size: int) -> str:
    """Bytes for people: 180 bytes, 50.0 MB, 1400.00 GB."""
    if size < 100_000:
        return f"{size} bytes"
    return f"{size / 1e6:.1f} MB" if size < 1e8 else f"{size / 1e9:.2f} GB"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def console(stderr: bool = False):
    """A rich console that does not squeeze tables to 80 columns when output is not a terminal."""
    import sys

    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, soft_wrap=True, width=None if stream.isatty() else 200)


def err_console():
    """The console for progress, notices and warnings: stderr, so stdout stays the command's result."""
    return console(stderr=True)
