"""`ascend-run push`: a file or folder of this machine onto every server (or -w/-x), like pdcp / clush --copy,
through the pipelined broadcast (steps/push.py)."""

from __future__ import annotations

import shlex

import click

from ascend_run.cli.common import (
    accept_new_option,
    connected,
    deployment_option,
    dry_run_option,
    echo_json,
    err_console,
    human_size,
    output_option,
    parallel_option,
    pick_nodes,
    subset_options,
)
from ascend_run.cli.transfer import TransferProgress, encrypt_option, per_node_option


@click.command()
@deployment_option
@subset_options
@encrypt_option
@per_node_option
@dry_run_option
@output_option
@accept_new_option
@parallel_option
@click.argument("src", type=click.Path())
@click.argument("dest")
def push(deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], encrypt: bool,
         per_node: bool, dry_run: bool, output_format: str, accept_new_host_keys: bool, parallel: int, src: str,
         dest: str) -> None:
    """Copy SRC (a file or a folder of this machine) to DEST on every server (or -w/-x), sha256-verified.

    This machine sends the bytes once, down a chain of the servers (each feeds the next while it receives),
    so 8 servers take about the time of one. Files a server already holds with the same sha256 are skipped;
    nothing there is deleted. SRC a file: DEST is its path on the servers (ending with /: the directory it goes
    into). SRC a folder: its files go under DEST with their relative paths (as rsync SRC/ DEST).
    """
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps import push as steps

    dep = load_deployment(deployment_file)
    nodes = pick_nodes(dep, node_specs, exclude_specs)
    directory, files = steps.local_files(src, dest)
    total = sum(f.size for f in files)
    with connected(dep, accept_new_host_keys, parallel, nodes=nodes) as cluster:
        plan = steps.plan(cluster, nodes, directory, files)
        if dry_run:
            show_plan(plan, nodes, steps.describe_chain(cluster, nodes, plan), output_format)
            return
        console = err_console()
        if output_format == "text":
            console.print(f"push {len(files)} file(s), {human_size(total)}, to {directory} on {len(nodes)} "
                          f"server(s): {steps.describe_chain(cluster, nodes, plan)}")
            with TransferProgress(console, "push", per_node) as bar:
                results = steps.push(cluster, nodes, plan, encrypt=encrypt, on_progress=bar.update)
        else:
            results = steps.push(cluster, nodes, plan, encrypt=encrypt)
    if output_format == "json":
        echo_json({"src": src, "dest": directory, "files": len(files), "bytes": total,
                   "sha256": {f.name: f.sha256 for f in files} if len(files) <= 64 else None,
                   "servers": [r.as_json() for r in results]})
        return
    for r in results:
        when = "" if r.seconds is None else f" in {r.seconds:.2f} s"
        if r.written:
            click.echo(f"{r.node}: {r.written} file(s), {human_size(r.bytes)}{when}, sha256 verified"
                       + (f"; {r.skipped} unchanged" if r.skipped else ""))
        else:
            click.echo(f"{r.node}: all {r.skipped} file(s) already there, unchanged")


def show_plan(plan, nodes, chain: str, output_format: str) -> None:
    """`push --dry-run`: per server the files it would get (read now: the servers' sha256 of them), and the chain."""
    if output_format == "json":
        echo_json({"dry_run": True, "dest": plan.directory, "chain": chain,
                   "servers": [{"node": n.name, "send": plan.todo[n.name], "bytes": plan.bytes_for(n.name),
                                "unchanged": len(plan.files) - len(plan.todo[n.name])} for n in nodes]})
        return
    click.echo(f"# chain: {chain}")
    for node in nodes:
        todo = plan.todo[node.name]
        click.echo(f"# {node.name}: {len(todo)} file(s), {human_size(plan.bytes_for(node.name))} to write under "
                   f"{shlex.quote(plan.directory)}; {len(plan.files) - len(todo)} unchanged")
        for name in todo[:20]:
            click.echo(f"#   {name}")
        if len(todo) > 20:
            click.echo(f"#   … and {len(todo) - 20} more")


commands = [push]
