"""`ascend-run preflight | launch | status | stop`: the multi-node job over SSH."""

from __future__ import annotations

import shlex
import time

import click
from rich.console import Console
from rich.table import Table

from ascend_run.cli.common import (accept_new_option, connected, deployment_option, echo_json, err_console,
                                   output_option, parallel_option)
from ascend_run.cli.common import console as make_console
from ascend_run.inputs.deployment import Deployment, load_deployment
from ascend_run.launch.plan import launch_plan


def print_checks(checks, console: Console) -> None:
    nodes = list(dict.fromkeys(c.node for c in checks))
    names = list(dict.fromkeys(c.check for c in checks))
    table = Table("node", *names, box=None)
    for node in nodes:
        row = []
        for name in names:
            found = [c for c in checks if c.node == node and c.check == name]
            row.append("" if not found else ("[green]ok[/]" if all(c.ok for c in found) else "[red]FAIL[/]"))
        table.add_row(node, *row)
    console.print(table)
    for check in checks:
        if not check.ok:
            console.print(f"[red]✗[/] {check.node}: {check.check}: ", check.detail, markup=True, highlight=False)


def print_config_report(report, console: Console) -> None:
    for issue in report.warnings:
        console.print("[yellow]config warning:[/] ", str(issue), markup=True, highlight=False)
    if report.ok:
        summary = f" — {report.memory.summary()}" if report.memory else ""
        console.print("[green]config ok[/] ", f"{report.source}{summary}", markup=True, highlight=False)


@click.command()
@deployment_option
@output_option
@accept_new_option
@parallel_option
def preflight(deployment_file: str, output_format: str, accept_new_host_keys: bool, parallel: int) -> None:
    """Check every node before a launch: SSH, Docker, image, NPUs, links, driver, disk, port, clocks.

    Exits 5 naming the node and the check when anything fails.
    """
    from ascend_run.launch.job import Reporter, require_preflight
    from ascend_run.launch.preflight import as_json

    dep = load_deployment(deployment_file)
    shown: list = []
    reporter = Reporter(checks=shown.extend if output_format == "json" else
                        (lambda checks: print_checks(checks, make_console())))
    try:
        with connected(dep, accept_new_host_keys, parallel) as cluster:
            checks = require_preflight(cluster, reporter)
    finally:
        if output_format == "json" and shown:
            echo_json({"ok": all(c.ok for c in shown), "checks": as_json(shown)})
    if output_format == "text":
        click.echo(f"preflight: {len(dep.nodes)} nodes, {len(checks)} checks passed")


@click.command()
@deployment_option
@click.option("--dry-run", is_flag=True, help="Print, per node, exactly what would run; run nothing.")
@click.option("--detach", is_flag=True, help="Start the job and return; follow it with status/logs/stop.")
@click.option("--replace", is_flag=True, help="Remove the job's containers if they already exist.")
@click.option("--skip-preflight", is_flag=True, help="Start without the preflight checks.")
@click.option("--skip-config-check", is_flag=True, help="Start without checking job.config (the MindFormers YAML).")
@click.option("--master-addr", help="Override master_ip (default: node 0's cluster-facing address).")
@click.option("--all-lines", is_flag=True, help="Also show MindSpore's own [WARNING]/[INFO] log lines.")
@accept_new_option
@parallel_option
def launch(deployment_file: str, dry_run: bool, detach: bool, replace: bool, skip_preflight: bool,
           skip_config_check: bool, master_addr: str | None, all_lines: bool, accept_new_host_keys: bool,
           parallel: int) -> None:
    """Start the job on every node with its rank; stream logs; stop everything when any node fails.

    Node k gets rank k, master_ip is node 0's address. Attached, output is prefixed [node/rank]; when a
    node's job exits non-zero or its SSH connection is lost, the job is stopped on every node and the
    command exits with that code. Ctrl-C stops the job everywhere.
    """
    from ascend_run.cli.console import PrefixPrinter, framework_noise
    from ascend_run.launch.job import LaunchOptions, Reporter, start_job, watch_or_raise

    dep = load_deployment(deployment_file)
    if master_addr:
        dep = _with_master(dep, master_addr)
    if dry_run:
        for plan in launch_plan(dep):
            click.echo(f"# {plan.node.name} (rank {plan.node.rank}) via ssh "
                       f"{plan.node.ssh.user}@{plan.node.address}:{plan.node.ssh.port}")
            click.echo(shlex.join(plan.docker_argv))
        return
    console = err_console()
    printer = PrefixPrinter([n.name for n in dep.nodes], ranks={n.name: n.rank for n in dep.nodes},
                            hide=None if all_lines else framework_noise)
    reporter = Reporter(line=lambda node, line: printer.line(node.name, line),
                        notice=lambda text: console.print("[yellow]ascend-run:[/] ", text, highlight=False),
                        checks=lambda checks: print_checks(checks, console),
                        config=lambda report: print_config_report(report, console))
    options = LaunchOptions(replace=replace, preflight=not skip_preflight, config_check=not skip_config_check)
    with connected(dep, accept_new_host_keys, parallel) as cluster:
        launcher = start_job(cluster, options, reporter)
        started = time.monotonic()
        console.print(f"[green]started[/] {dep.name} on {len(dep.nodes)} nodes, master {dep.master_address}:"
                      f"{dep.job.master_port}", highlight=False)
        if detach:
            click.echo(f"detached; follow with: ascend-run status -f {shlex.quote(deployment_file)}")
            return
        watch_or_raise(launcher)
    console.print(f"[green]job {dep.name} finished on all {len(dep.nodes)} nodes[/] in "
                  f"{time.monotonic() - started:.1f} s", highlight=False)


def _with_master(dep: Deployment, address: str) -> Deployment:
    from dataclasses import replace as dc_replace

    from ascend_run.inputs.deployment import check_address

    job = dep.spec.job.model_copy(update={"master_address": check_address(address)})
    return dc_replace(dep, spec=dep.spec.model_copy(update={"job": job}))


@click.command()
@deployment_option
@output_option
@accept_new_option
@parallel_option
def status(deployment_file: str, output_format: str, accept_new_host_keys: bool, parallel: int) -> None:
    """Per node: the job's container state and uptime, the last log line and the last loss, and the
    one-off steps (weights download, data conversion) running there."""
    from ascend_run.launch.status import collect_status

    dep = load_deployment(deployment_file)
    with connected(dep, accept_new_host_keys, parallel) as cluster:
        rows = collect_status(cluster)
    if output_format == "json":
        echo_json(rows)
        return
    steps = any(row["steps"] for row in rows)
    table = Table("node", "rank", "container", "status", "last loss", "last line", *(["steps"] if steps else []),
                  box=None)
    for row in rows:
        table.add_row(row["node"], str(row["rank"]), row["state"], row["status"], row["last_loss"] or "",
                      (row["last_line"] or "")[:80], *([", ".join(row["steps"])] if steps else []))
    make_console().print(table)


@click.command()
@deployment_option
@accept_new_option
@parallel_option
@click.option("--dry-run", is_flag=True, help="Print the commands that would run on each node; run nothing.")
def stop(deployment_file: str, accept_new_host_keys: bool, parallel: int, dry_run: bool) -> None:
    """Remove the job's containers on every node and wait until its processes are gone."""
    from ascend_run.errors import AscendRunError
    from ascend_run.launch import nodeops
    from ascend_run.launch.launcher import stop_job

    dep = load_deployment(deployment_file)
    if dry_run:
        for node in dep.nodes:
            click.echo(f"# {node.name} ({node.ssh.user}@{node.address}), until the listing is empty:")
            click.echo(shlex.join(nodeops.list_argv(dep.name)))
            click.echo(shlex.join(nodeops.remove_argv(["CONTAINER..."])) + "  # the names it lists")
        return
    with connected(dep, accept_new_host_keys, parallel) as cluster:
        problems = stop_job(cluster)
    if problems:
        raise AscendRunError("could not stop the job on: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    click.echo(f"stopped {dep.name} on {len(dep.nodes)} nodes")


commands = [preflight, launch, status, stop]
