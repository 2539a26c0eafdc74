"""`ascend-run docker-run`: per-node `run-<node>.sh` scripts with the article's device mapping."""

from __future__ import annotations

from pathlib import Path

import click

from ascend_run import secrets
from ascend_run.cli.common import (
    deployment_option,
    echo_json,
    out_option,
    output_option,
    pick_nodes,
    renamed_option,
    subset_given,
    subset_options,
)
from ascend_run.inputs.deployment import load_deployment
from ascend_run.outputs import staged_output
from ascend_run.render.docker_run import render_script, script_name


@click.command("docker-run")
@deployment_option
@out_option("Write run-<node>.sh for every node (or -w/-x) here.", directory=True)
@renamed_option("--output-dir", "--out DIR")
@subset_options
@click.option("--node", "node_name", help="The node whose script to print (default: rank 0); the same as -w NODE.")
@output_option
@click.option("--dry-run", is_flag=True, help="Print the script of one node instead of writing files.")
def docker_run(deployment_file: str, out: str | None, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...],
               node_name: str | None, output_format: str, dry_run: bool) -> None:
    """Write the `docker run` script of every node (devices, driver mounts, env, hostname from the profile).

    Without --out (or with --dry-run) prints the script of one node (rank 0, or the one -w/--node names)
    to stdout; with -o json, {node, file, script} instead of the bare script.
    """
    dep = load_deployment(deployment_file)
    nodes = pick_nodes(dep, (*node_specs, *([node_name] if node_name else [])), exclude_specs)
    if out is None or dry_run:
        if len(nodes) > 1 and (subset_given(node_specs, exclude_specs) or node_name):
            raise click.UsageError(f"{len(nodes)} nodes chosen: a script is printed for one node; give --out DIR "
                                   "to write them all")
        node = nodes[0]
        secrets.values(dep)  # every secret can be read (one clear error otherwise); printed redacted
        script = render_script(dep, node)
        if output_format == "json":
            echo_json({"dry_run": dry_run, "node": node.name, "file": script_name(node), "script": script})
        else:
            click.echo(script, nl=False)
        return
    target = Path(out)
    written = []
    found = secrets.values(dep)
    with staged_output(target) as staged:
        for node in nodes:
            path = staged.add(target / script_name(node), render_script(dep, node, secret_values=found),
                              script_mode(dep))
            written.append({"node": node.name, "file": str(path)})
    if output_format == "json":
        echo_json({"out": out, "scripts": written})
    else:
        click.echo(f"wrote {len(nodes)} scripts to {target}/ (run-{nodes[0].name}.sh …)")


def script_mode(dep) -> int:
    """run-*.sh: 0700 when it holds secret values (`secrets:`), else executable by everyone."""
    return 0o700 if dep.spec.secrets else 0o755


commands = [docker_run]
