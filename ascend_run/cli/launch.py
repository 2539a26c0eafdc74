"""`ascend-run preflight | launch | status | stop`: the multi-node job over SSH."""

from __future__ import annotations

import contextlib
import shlex
import time
from collections.abc import Iterator

import click
from rich.console import Console
from rich.table import Table

from ascend_run.cli.common import console as make_console
from ascend_run.cli.common import deployment_option, echo_json, output_option
from ascend_run.inputs.deployment import Deployment, load_deployment
from ascend_run.errors import AscendRunError, PreflightError
from ascend_run.launch.plan import launch_plan

accept_new_option = click.option(
    "--accept-new-host-keys", is_flag=True,
    help="Record host keys of nodes not yet in known_hosts (a changed key is still an error).")
parallel_option = click.option("--parallel", default=256, show_default=True, help="Nodes contacted at once.")


@contextlib.contextmanager
def connected(dep: Deployment, accept_new: bool = False, parallel: int = 256,
              nodes: list | None = None) -> Iterator[dict]:
    """One SSH connection per node (or per node of `nodes`), opened in parallel and closed at the end; raises
    for the first node that cannot be reached (naming the others), having closed the ones that could."""
    from ascend_run.transport.fanout import close_all, connect_all

    transports = connect_all(dep, accept_new=accept_new, parallelism=parallel, nodes=nodes)
    try:
        yield transports
    finally:
        close_all(transports)


def err_console() -> Console:
    return make_console(stderr=True)


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
            console.print(f"[red]✗[/] {check.node}: {check.check}: {check.detail}")


def preflight_or_raise(dep: Deployment, transports: dict, console: Console, output_format: str = "text"):
    from ascend_run.launch.preflight import as_json, run_preflight

    checks = run_preflight(dep, transports)
    if output_format == "json":
        echo_json({"ok": all(c.ok for c in checks), "checks": as_json(checks)})
    else:
        print_checks(checks, console)
    failed = [c for c in checks if not c.ok]
    if failed:
        first = failed[0]
        raise PreflightError(f"{len(failed)} preflight check(s) failed, first: {first.node}: {first.check}: "
                             f"{first.detail}", fix="fix the node(s) above; nothing was started")
    return checks


@click.command()
@deployment_option
@output_option
@accept_new_option
@parallel_option
def preflight(deployment_file: str, output_format: str, accept_new_host_keys: bool, parallel: int) -> None:
    """Check every node before a launch: SSH, Docker, image, NPUs, links, driver, disk, port, clocks.

    Exits 5 naming the node and the check when anything fails.
    """
    dep = load_deployment(deployment_file)
    with connected(dep, accept_new_host_keys, parallel) as transports:
        checks = preflight_or_raise(dep, transports, err_console() if output_format == "json" else make_console(),
                                    output_format)
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
           skip_config_check: bool, master_addr: str | None, all_lines: bool, accept_new_host_keys: bool, parallel: int) -> None:
    """Start the job on every node with its rank; stream logs; stop everything when any node fails.

    Node k gets rank k, master_ip is node 0's address. Attached, output is prefixed [node/rank]; when a
    node's job exits non-zero or its SSH connection is lost, the job is stopped on every node and the
    command exits with that code. Ctrl-C stops the job everywhere.
    """
    dep = load_deployment(deployment_file)
    if master_addr:
        dep = _with_master(dep, master_addr)
    if dry_run:
        for plan in launch_plan(dep):
            click.echo(f"# {plan.node.name} (rank {plan.node.rank}) via ssh "
                       f"{plan.node.ssh.describe()}")
            click.echo(shlex.join(plan.docker_argv))
        return
    with connected(dep, accept_new_host_keys, parallel) as transports:
        run_job(dep, transports, deployment_file, replace=replace, preflight=not skip_preflight,
                config_check=not skip_config_check, detach=detach, all_lines=all_lines)


def run_job(dep: Deployment, transports: dict, deployment_file: str, *, replace: bool, preflight: bool,
            config_check: bool, detach: bool, all_lines: bool) -> None:
    """The launch itself, over open connections: refuse a running job, check, start, watch."""
    from ascend_run.cli.console import PrefixPrinter, framework_noise
    from ascend_run.launch.launcher import Launcher, outcome_error

    console = err_console()
    printer = PrefixPrinter([n.name for n in dep.nodes], ranks={n.name: n.rank for n in dep.nodes},
                            hide=None if all_lines else framework_noise)
    launcher = Launcher(dep, transports, on_line=lambda node, line: printer.line(node.name, line),
                        notice=lambda text: console.print(f"[yellow]ascend-run:[/] {text}"))
    existing = launcher.running_elsewhere()
    if existing and not replace:
        where = "; ".join(f"{node}: {', '.join(c)}" for node, c in existing.items())
        raise AscendRunError(f"the job {dep.name!r} already has containers: {where}",
                             fix=f"stop it with `ascend-run stop -f {shlex.quote(deployment_file)}`, "
                                 "or launch with --replace")
    if existing:
        launcher.remove_existing()
    if preflight:
        preflight_or_raise(dep, transports, console)
    if config_check:
        config_check_or_raise(dep, transports, console)
    launcher.prepare_nodes()
    started = time.monotonic()
    try:
        launcher.start()
        console.print(f"[green]started[/] {dep.name} on {len(dep.nodes)} nodes, master {dep.master_address}:"
                      f"{dep.job.master_port}")
        if detach:
            click.echo(f"detached; follow with: ascend-run status -f {shlex.quote(deployment_file)}")
            return
        outcome = launcher.watch()
    except KeyboardInterrupt:
        launcher.stop_all("interrupted (Ctrl-C)")
        raise
    if not outcome.ok:
        raise outcome_error(outcome)
    console.print(f"[green]job {dep.name} finished on all {len(dep.nodes)} nodes[/] in "
                  f"{time.monotonic() - started:.1f} s")


def config_check_or_raise(dep: Deployment, transports: dict, console: Console) -> None:
    """Refuse a job whose MindFormers config fails `config check`; show its warnings."""
    from ascend_run.launch.configcheck import check_job_config

    report = check_job_config(dep, transports)
    if report is None:
        return
    for issue in report.warnings:
        console.print(f"[yellow]config warning:[/] {issue}", markup=True, highlight=False)
    report.raise_for_errors()
    console.print(f"[green]config ok[/] {dep.job.config}" + (f" — {report.memory.summary()}" if report.memory else ""))


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
    with connected(dep, accept_new_host_keys, parallel) as transports:
        rows = collect_status(dep, transports)
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
@click.option("--dry-run", is_flag=True, help="Print what would be removed on which node; remove nothing.")
def stop(deployment_file: str, accept_new_host_keys: bool, parallel: int, dry_run: bool) -> None:
    """Remove the job's containers on every node and wait until its processes are gone."""
    from ascend_run.launch.launcher import stop_job
    from ascend_run.render.docker_run import JOB_LABEL

    dep = load_deployment(deployment_file)
    if dry_run:
        listing = ["docker", "ps", "-a", "--filter", f"label={JOB_LABEL}={dep.name}", "--format", "{{json .}}"]
        for node in dep.nodes:
            click.echo(f"# {node.name} ({node.ssh.describe()}), until the listing is empty:")
            click.echo(f"{shlex.join(listing)}\ndocker rm -f <each container it lists>")
        return
    with connected(dep, accept_new_host_keys, parallel) as transports:
        problems = stop_job(dep, transports)
    if problems:
        raise AscendRunError("could not stop the job on: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    click.echo(f"stopped {dep.name} on {len(dep.nodes)} nodes")


commands = [preflight, launch, status, stop]
