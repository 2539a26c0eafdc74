"""`ascend-run docker-run`: per-node `run-<node>.sh` scripts with the article's device mapping."""

from __future__ import annotations

import stat
from pathlib import Path

import click

from ascend_run.cli.common import deployment_option
from ascend_run.inputs.deployment import load_deployment
from ascend_run.render.docker_run import render_script, script_name


@click.command("docker-run")
@deployment_option
@click.option("-o", "--output-dir", type=click.Path(file_okay=False), help="Write run-<node>.sh for every node here.")
@click.option("--node", "node_name", help="With no -o: the node whose script to print (default: rank 0).")
@click.option("--dry-run", is_flag=True, help="Print one node's script instead of writing files.")
def docker_run(deployment_file: str, output_dir: str | None, node_name: str | None, dry_run: bool) -> None:
    """Write the `docker run` script of every node (devices, driver mounts, env, hostname from the profile).

    Without -o (or with --dry-run) prints the script of one node to stdout.
    """
    dep = load_deployment(deployment_file)
    if output_dir is None or dry_run:
        node = dep.select([node_name])[0] if node_name else dep.nodes[0]
        click.echo(render_script(dep, node), nl=False)
        return
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    for node in dep.nodes:
        path = out / script_name(node)
        path.write_text(render_script(dep, node), encoding="utf-8")
        path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    click.echo(f"wrote {len(dep.nodes)} scripts to {out}/ (run-{dep.nodes[0].name}.sh …)")


commands = [docker_run]
