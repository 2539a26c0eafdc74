"""`ascend-run preflight | launch | status | stop`: the multi-node job over SSH."""

from __future__ import annotations

import shlex

import click
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ascend_run.cli.common import (accept_new_option, connected, deployment_option, echo_json, err_console,
                                   output_option, parallel_option)
from ascend_run.errors import AscendRunError
from ascend_run.cli.common import console as make_console
from ascend_run.inputs.deployment import Deployment, load_deployment
from ascend_run.inputs.text import comment
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
            console.print(f"[red]✗[/] {check.node}: {check.check}: {escape(check.detail)}")


def print_config_report(report, console: Console) -> None:
    for issue in report.warnings:
        console.print(f"[yellow]config warning:[/] {escape(str(issue))}", highlight=False)
    if report.ok:
        summary = f" — {report.memory.summary()}" if report.memory else ""
        console.print(f"[green]config ok[/] {escape(f'{report.source}{summary}')}", highlight=False)


@click.command()
@deployment_option
@output_option
@accept_new_option
@parallel_option
def preflight(deployment_file: str, output_format: str, accept_new_host_keys: bool, parallel: int) -> None:
    """Check every node before a launch: SSH, Docker, image, NPUs, links, driver, disk, port, clocks.

    Exits 5 naming the node and the check when anything fails. With job.restarts > 0, also warns when a
    relaunch could not resume (no checkpoints, or not on storage every server and spare shares).
    """
    from ascend_run.launch.job import Reporter, require_preflight
    from ascend_run.launch.preflight import as_json

    dep = load_deployment(deployment_file)
    shown: list = []
    warnings: list[str] = []
    reporter = Reporter(checks=shown.extend if output_format == "json" else
                        (lambda checks: print_checks(checks, make_console())))
    try:
        with connected(dep, accept_new_host_keys, parallel) as cluster:
            checks = require_preflight(cluster, reporter)
            warnings = _resume_warnings(cluster, accept_new_host_keys)
    finally:
        if output_format == "json" and shown:
            echo_json({"ok": all(c.ok for c in shown), "checks": as_json(shown), "warnings": warnings})
    if output_format == "text":
        for warning in warnings:
            err_console().print("[yellow]warning:[/] ", warning, highlight=False)
        click.echo(f"preflight: {len(dep.nodes)} nodes, {len(checks)} checks passed")


def _resume_warnings(cluster, accept_new: bool) -> list[str]:
    """With job.restarts > 0: can a relaunch resume, can the spares see the checkpoints?"""
    job = cluster.dep.job
    if job is None or not job.restarts or len(cluster.dep.nodes) < 2:
        return []
    from ascend_run.launch.configcheck import read_job_config
    from ascend_run.supervise.readiness import resume_warnings

    found = read_job_config(cluster)
    spares = list(cluster.dep.spares)
    cluster.connect_more(spares)  # a spare that does not answer is left out of the probe
    reachable = [s for s in spares if s.name in cluster.transports]
    return resume_warnings(cluster.using(cluster.dep.with_nodes([*cluster.dep.nodes, *reachable])),
                           found[0] if found else None)


def supervisor_args(start: bool, replace: bool, skip_preflight: bool, skip_config_check: bool,
                    master_addr: str | None, accept_new: bool, parallel: int) -> list[str]:
    """The `supervise` flags for what `launch` (or `supervise --detach`) was asked."""
    flags = {"--start": start, "--replace": replace, "--skip-preflight": skip_preflight,
             "--skip-config-check": skip_config_check, "--accept-new-host-keys": accept_new}
    return [f for f, on in flags.items() if on] + (["--master-addr", master_addr] if master_addr else []) + \
        ["--parallel", str(parallel)]


@click.command()
@deployment_option
@click.option("--dry-run", is_flag=True, help="Print, per node, exactly what would run; run nothing.")
@click.option("--detach", is_flag=True, help="Return once the job is started; follow it with status/logs/events/stop.")
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
    """Start the job on every node with its rank, under a supervisor that outlives this command.

    Node k gets rank k, master_ip is node 0's address. The supervisor (docs/supervisor.md) stops the job on
    every node when any part fails, finds hangs and lost servers, and with job.restarts relaunches it from
    the newest checkpoint every rank has, spares taking failed servers' places. Attached, its events and the
    job's output (prefixed [node/rank]) show here, and the command exits with the job's result; Ctrl-C stops
    the job everywhere. With --detach it returns once the job has started (or with the error, nothing left
    running); `status`, `logs --follow`, `events` and `stop` work from any shell on this machine.
    """
    from ascend_run.cli.console import PrefixPrinter, framework_noise
    from ascend_run.supervise.client import Follower, ending_error, request_stop, spawn
    from ascend_run.supervise.state import StateStore, SupervisorBusy

    dep = load_deployment(deployment_file)
    if master_addr:
        dep = dep.with_master_address(master_addr)
    if dry_run:
        lines = []
        for plan in launch_plan(dep):  # written in blocks: one echo per line was a third of 50,000 nodes' time
            lines += (comment(f"{plan.node.name} (rank {plan.node.rank}) via ssh {plan.node.ssh.describe()}"),
                      plan.shell_line())
            if len(lines) >= 2048:
                click.echo("\n".join(lines))
                lines.clear()
        if lines:
            click.echo("\n".join(lines))
        return
    store = StateStore.for_deployment(dep)
    if store.owner_alive():
        raise SupervisorBusy(f"the job {dep.name!r} is already running under a supervisor (pid {store.owner_pid()})",
                             fix=f"follow it with `ascend-run logs --follow -f {shlex.quote(deployment_file)}`, or "
                                 f"stop it with `ascend-run stop -f {shlex.quote(deployment_file)}`")
    console = err_console()
    printer = PrefixPrinter([n.name for n in (*dep.nodes, *dep.spares)], ranks={n.name: n.rank for n in dep.nodes},
                            hide=None if all_lines else framework_noise)
    follower = Follower(store, on_event=lambda record: show_event(record, console),
                        on_line=lambda record: show_line(record, printer, dep), lines=not detach)
    store.new_run()
    args = supervisor_args(True, replace, skip_preflight, skip_config_check, master_addr, accept_new_host_keys,
                           parallel)
    proc = spawn(dep, args, store)
    try:
        record = follower.run(alive=lambda: proc.poll() is None, until=("started",) if detach else ())
    except KeyboardInterrupt:
        console.print("[yellow]ascend-run:[/] stopping the job on every node (Ctrl-C)", highlight=False)
        request_stop(store)
        follower.poll()
        raise
    error = ending_error(record, store)
    if error is not None:
        raise error
    if detach:
        quoted = shlex.quote(deployment_file)
        click.echo(f"detached (supervisor pid {proc.pid}); follow with: ascend-run logs --follow -f {quoted}  "
                   f"(also status, events, stop)")
        return
    if record.get("kind") == "stopped":
        raise AscendRunError(record.get("detail") or "the job was stopped",
                             fix=f"see what happened: ascend-run events -f {shlex.quote(deployment_file)}")


def show_event(record: dict, console: Console) -> None:
    """An event of the supervisor, for people: preflight and config results as `launch` always showed them."""
    kind, detail = record.get("kind"), record.get("detail", "")
    if kind == "preflight" and "checks" in record:
        from ascend_run.launch.preflight import Check

        print_checks([Check(**c) for c in record["checks"]], console)
    elif kind == "config":
        for warning in record.get("warnings", []):
            console.print(f"[yellow]config warning:[/] {escape(str(warning))}", highlight=False)
        if record.get("ok"):
            summary = f" — {record['summary']}" if record.get("summary") else ""
            console.print(f"[green]config ok[/] {escape(detail.rsplit(': ', 1)[0] + summary)}", highlight=False)
    elif kind == "started":
        console.print(f"[green]started[/] {escape(detail)}", highlight=False)
    elif kind == "succeeded":
        console.print(detail, style="green", markup=False, highlight=False)
    elif kind in ("launch", "failed"):
        return  # the command line says these itself (the failure as its error)
    else:
        console.print(f"[yellow]ascend-run:[/] {escape(detail)}", highlight=False)


def show_line(record: dict, printer, dep: Deployment) -> None:
    """A line of the job's output with its [node/rank] prefix (a spare shows the rank it took)."""
    node, rank = record.get("node", "?"), record.get("rank")
    usual = next((n.rank for n in dep.nodes if n.name == node), None)
    printer.line(node if rank == usual else f"{node}/{rank}", record.get("line", ""))



@click.command()
@deployment_option
@output_option
@accept_new_option
@parallel_option
def status(deployment_file: str, output_format: str, accept_new_host_keys: bool, parallel: int) -> None:
    """The supervisor's view (state, attempt k of N, servers and spares in use, last step and loss per
    pipeline stage, step time, seconds since the last progress, last checkpoint step), then per server:
    the job's container, its last log line and loss, and the one-off steps running there."""
    from ascend_run.supervise.client import job_status

    dep = load_deployment(deployment_file)
    report = job_status(dep, accept_new_host_keys, parallel)
    if output_format == "json":
        echo_json(report)
        return
    console = make_console()
    view = report["supervisor"]
    if view is not None:
        print_supervisor(dep.name, view, console)
    rows = report["nodes"]
    steps = any(row["steps"] for row in rows)
    table = Table("node", "rank", "container", "status", "last loss", "last line", *(["steps"] if steps else []),
                  box=None)
    for row in rows:
        table.add_row(row["node"], str(row["rank"]), row["state"], row["status"], row["last_loss"] or "",
                      (row["last_line"] or "")[:80], *([", ".join(row["steps"])] if steps else []))
    console.print(table)


def print_supervisor(name: str, view: dict, console: Console) -> None:
    pid = f", supervisor pid {view['supervisor_pid']}" if view["supervisor_pid"] else ""
    console.print(f"job {name}: [bold]{view['state']}[/], attempt {view['attempt']} of {view['attempts']}{pid}",
                  highlight=False)
    console.print(f"servers: {', '.join(view['servers'])}; spares free: {', '.join(view['spares_free']) or 'none'}",
                  highlight=False)
    for stage in view["stages"]:
        loss = f", loss {stage['loss']:.6g}" if stage.get("loss") is not None else ""
        console.print(f"stage {stage['stage']} (ranks {stage['ranks']}): step {stage['step'] or '-'}{loss}",
                      highlight=False)
    parts = []
    if view["step_ms"] is not None:
        parts.append(f"step time {view['step_ms']:.0f} ms")
    if view["seconds_since_progress"] is not None:
        parts.append(f"last progress {view['seconds_since_progress']:.1f} s ago")
    parts.append(f"last checkpoint (every rank): step {view['last_checkpoint_step'] or '-'}")
    console.print("; ".join(parts), highlight=False)
    if view.get("error"):
        console.print(f"[red]{view['error']['message']}[/]", highlight=False)


@click.command()
@deployment_option
@accept_new_option
@parallel_option
@click.option("--dry-run", is_flag=True, help="Print the commands that would run on each node; run nothing.")
def stop(deployment_file: str, accept_new_host_keys: bool, parallel: int, dry_run: bool) -> None:
    """Stop the job's supervisor, then remove the job's containers on every server it may be on (nodes in
    use, the file's nodes and spares) and wait until its processes are gone. Works from any shell, with or
    without a live supervisor."""
    from ascend_run.launch import nodeops
    from ascend_run.supervise.client import stop_everywhere

    dep = load_deployment(deployment_file)
    if dry_run:
        for node in dep.nodes:
            click.echo(f"# {node.name} ({node.ssh.describe()}), until the listing is empty:")
            click.echo(shlex.join(nodeops.list_argv(dep.name)))
            click.echo(shlex.join(nodeops.remove_argv(["CONTAINER..."])) + "  # the names it lists")
        return
    servers, problems = stop_everywhere(dep, accept_new_host_keys, parallel)
    if problems:
        raise AscendRunError("could not stop the job on: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    click.echo(f"stopped {dep.name} on {len(servers)} servers")


commands = [preflight, launch, status, stop]
