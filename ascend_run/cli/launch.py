"""`ascend-run preflight | launch | status | stop`: the multi-node job over SSH."""

from __future__ import annotations

import contextlib
import json
import re
import shlex
import sys

import click
from rich.console import Console
from rich.table import Table

from ascend_run import secrets
from ascend_run.cli.common import (
    accept_new_option,
    connected,
    deployment_option,
    echo_json,
    err_console,
    job_option,
    load_chosen,
    no_server_reached,
    output_option,
    parallel_option,
    pick_nodes,
    refuse_subset,
    styled,
    subset_given,
    subset_options,
    wide_output_option,
)
from ascend_run.cli.common import console as make_console
from ascend_run.errors import AscendRunError
from ascend_run.inputs.deployment import Deployment, load_deployment
from ascend_run.inputs.text import comment, terminal, terminal_all
from ascend_run.launch.plan import launch_plan, shell_lines


def print_checks(checks, console: Console) -> None:
    nodes = list(dict.fromkeys(c.node for c in checks))
    names = list(dict.fromkeys(c.check for c in checks))
    table = Table("node", *names, box=None)
    for node in nodes:
        row = []
        for name in names:
            found = [c for c in checks if c.node == node and c.check == name]
            row.append("" if not found else (styled(("ok", "green")) if all(c.ok for c in found) else
                                             styled(("FAIL", "red"))))
        table.add_row(node, *row)
    console.print(table)
    for check in checks:
        if not check.ok:
            console.print(styled(("✗", "red"), terminal(f" {check.node}: {check.check}: {check.detail}")))


def print_config_report(report, console: Console) -> None:
    for issue in report.warnings:
        console.print(styled(("config warning:", "yellow"), terminal(f" {issue}")))
    if report.ok:
        summary = f" — {report.memory.summary()}" if report.memory else ""
        console.print(styled(("config ok", "green"), f" {report.source}{summary}"))


@click.command()
@deployment_option
@subset_options
@output_option
@accept_new_option
@parallel_option
def preflight(deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], output_format: str,
              accept_new_host_keys: bool, parallel: int) -> None:
    """Check every node (or -w/-x) before a launch: SSH, Docker, image, NPUs, links, driver, disk, port, clocks.

    Exits 5 naming the node and the check when anything fails. With job.restarts > 0, also warns when a
    relaunch could not resume (no checkpoints, or not on storage every server and spare shares); that
    check needs the whole job, so it is left out with -w/-x.
    """
    from ascend_run.launch.job import Reporter, require_preflight
    from ascend_run.launch.preflight import as_json

    dep = load_deployment(deployment_file)
    nodes = pick_nodes(dep, node_specs, exclude_specs)
    shown: list = []
    warnings: list[str] = []
    reporter = Reporter(checks=shown.extend if output_format == "json" else
                        (lambda checks: print_checks(checks, make_console())))
    try:
        with connected(dep, accept_new_host_keys, parallel, nodes=nodes) as cluster:
            checks = require_preflight(cluster, reporter)
            if not subset_given(node_specs, exclude_specs):
                warnings = _resume_warnings(cluster, accept_new_host_keys)
    finally:
        if output_format == "json" and shown:
            echo_json({"ok": all(c.ok for c in shown), "nodes": [n.name for n in nodes], "checks": as_json(shown),
                       "warnings": warnings})
    if output_format == "text":
        for warning in warnings:
            err_console().print(styled(("warning:", "yellow"), f" {warning}"))
        click.echo(f"preflight: {len(nodes)} nodes, {len(checks)} checks passed")


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
                    master_addr: str | None, accept_new: bool, parallel: int, all_lines: bool = False) -> list[str]:
    """The `supervise` flags for what `launch` (or `supervise --detach`) was asked."""
    flags = {"--start": start, "--replace": replace, "--skip-preflight": skip_preflight,
             "--skip-config-check": skip_config_check, "--accept-new-host-keys": accept_new,
             "--all-lines": all_lines}
    return [f for f, on in flags.items() if on] + (["--master-addr", master_addr] if master_addr else []) + \
        ["--parallel", str(parallel)]


WHOLE_JOB = ("a launch starts the whole job, rank k on node k, sized by the file's nodes (the MindFormers "
             "parallelism depends on them); to run on other servers, list them in the file (or `extends:` it)")


@click.command()
@deployment_option
@subset_options
@output_option
@click.option("--dry-run", is_flag=True,
              help="Print, per node (all, or -w/-x), exactly the container each would start; run nothing.")
@click.option("--detach", is_flag=True, help="Return once the job is started; follow it with status/logs/events/stop.")
@click.option("--replace", is_flag=True, help="Remove the job's containers if they already exist.")
@click.option("--skip-preflight", is_flag=True, help="Start without the preflight checks.")
@click.option("--skip-config-check", is_flag=True, help="Start without checking job.config (the MindFormers YAML).")
@click.option("--master-addr", help="Override master_ip (default: node 0's cluster-facing address).")
@click.option("--all-lines", is_flag=True, help="Also show (and record) MindSpore's own [WARNING]/[INFO] log lines "
              "and every rank's step lines (by default they stay in the ranks' logs on the servers).")
@accept_new_option
@parallel_option
def launch(deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], output_format: str,
           dry_run: bool, detach: bool, replace: bool, skip_preflight: bool, skip_config_check: bool,
           master_addr: str | None, all_lines: bool, accept_new_host_keys: bool, parallel: int) -> None:
    """Start the job on every node with its rank, under a supervisor that outlives this command.

    Node k gets rank k, master_ip is node 0's address. The supervisor (docs/supervisor.md) stops the job on
    every node when any part fails, finds hangs and lost servers, and with job.restarts relaunches it from
    the newest checkpoint every rank has, spares taking failed servers' places. Attached, its events and the
    job's output (prefixed [node/rank]) show here, and the command exits with the job's result; Ctrl-C stops
    the job everywhere. With --detach it returns once the job has started (or with the error, nothing left
    running); `status`, `logs --follow`, `events` and `stop` work from any shell on this machine.

    With -o json the job's output goes to stderr and stdout gets one JSON document at the end: the
    supervisor's events and how the job ended. -w/-x only choose which nodes a --dry-run shows.
    """
    from ascend_run.cli.console import PrefixPrinter, framework_noise
    from ascend_run.supervise.client import Follower, ending_error, request_stop, spawn
    from ascend_run.supervise.state import StateStore, SupervisorBusy

    dep = load_deployment(deployment_file)
    if master_addr:
        dep = dep.with_master_address(master_addr)
    if dry_run:
        shown = {n.name for n in pick_nodes(dep, node_specs, exclude_specs)}
        print_launch_plan(dep, [n for n in dep.nodes if n.name in shown], output_format)
        return
    refuse_subset(node_specs, exclude_specs, WHOLE_JOB + " (with --dry-run they choose which nodes are shown)")
    dep.check_sync_sources()  # before a supervisor starts: one clear error here, not a failed run
    if dep.spec.secrets:
        secrets.values(dep)
    json_out = output_format == "json"
    store = StateStore.for_deployment(dep)
    if store.owner_alive():
        raise SupervisorBusy(f"the job {dep.name!r} is already running under a supervisor (pid {store.owner_pid()})",
                             fix=f"follow it with `ascend-run logs --follow -f {shlex.quote(deployment_file)}`, or "
                                 f"stop it with `ascend-run stop -f {shlex.quote(deployment_file)}`")
    console = err_console()
    printer = PrefixPrinter([n.name for n in (*dep.nodes, *dep.spares)], ranks={n.name: n.rank for n in dep.nodes},
                            hide=None if all_lines else framework_noise, stream=sys.stderr if json_out else None)
    events: list[dict] = []

    def on_event(record: dict) -> None:
        events.append(record)
        if not json_out:
            show_event(record, console)

    follower = Follower(store, on_event=on_event, on_line=lambda record: show_line(record, printer, dep),
                        lines=not detach)
    store.new_run()
    args = supervisor_args(True, replace, skip_preflight, skip_config_check, master_addr, accept_new_host_keys,
                           parallel, all_lines)
    proc = spawn(dep, args, store)
    try:
        record = follower.run(alive=lambda: proc.poll() is None, until=("started",) if detach else ())
    except KeyboardInterrupt:
        console.print(styled(("ascend-run:", "yellow"), " stopping the job on every node (Ctrl-C)"))
        request_stop(store)
        follower.poll()
        raise
    error = ending_error(record, store)
    if error is None and not detach and record.get("kind") == "stopped":
        error = AscendRunError(record.get("detail") or "the job was stopped",
                               fix=f"see what happened: ascend-run events -f {shlex.quote(deployment_file)}")
    if json_out:
        echo_json({"job": dep.name, "detached": detach, "supervisor_pid": proc.pid,
                   "result": (record or {}).get("kind"), "detail": (record or {}).get("detail"),
                   "error": None if error is None else {"message": error.message, "fix": error.fix,
                                                        "exit_code": error.exit_code},
                   "events": events})
    if error is not None:
        raise error
    if detach and not json_out:
        quoted = shlex.quote(deployment_file)
        click.echo(f"detached (supervisor pid {proc.pid}); follow with: ascend-run logs --follow -f {quoted}  "
                   f"(also status, events, stop)")


def print_launch_plan(dep: Deployment, nodes: list, output_format: str) -> None:
    """`launch --dry-run`: per node, the docker command line it would run (over SSH, as printed)."""
    dep.check_sync_sources()  # what the launch would refuse, the dry run refuses
    if dep.spec.secrets:
        secrets.values(dep)  # each can be read now, as the launch will (one clear error otherwise)
    if output_format == "json":
        chosen = {n.name for n in nodes}
        echo_json({"dry_run": True, "job": dep.name, "nodes": [
            {"node": p.node.name, "rank": p.node.rank, "ssh": p.node.ssh.describe(), "argv": p.docker_argv,
             "line": p.shell_line(), "sync": [list(pair) for pair in p.sync_dirs]}
            for p in launch_plan(dep) if p.node.name in chosen]})
        return
    lines: list[str] = []
    if dep.spec.secrets:
        lines.append(comment(f"secrets {', '.join(dep.spec.secrets)}: values read here, sent over ssh into "
                             f"{secrets.env_file_path(dep)} (0600) on each server before its docker run, removed "
                             "after the start; never shown, never in an argv"))
    for node, line in shell_lines(dep, nodes):  # in blocks: one echo per line was a third of 50,000 nodes' time
        lines += (comment(f"{node.name} (rank {node.rank}) via ssh {node.ssh.describe()}"), line)
        if len(lines) >= 2048:
            click.echo("\n".join(lines))
            lines.clear()
    if lines:
        click.echo("\n".join(lines))


def show_event(record: dict, console: Console) -> None:
    """An event of the supervisor, for people: preflight and config results as `launch` always showed them."""
    record = terminal_all(record)
    kind, detail = record.get("kind"), record.get("detail", "")
    if kind == "preflight" and "checks" in record:
        from ascend_run.launch.preflight import Check

        print_checks([Check(**c) for c in record["checks"]], console)
    elif kind == "config":
        for warning in record.get("warnings", []):
            console.print(styled(("config warning:", "yellow"), f" {warning}"))
        if record.get("ok"):
            summary = f" — {record['summary']}" if record.get("summary") else ""
            console.print(styled(("config ok", "green"), f" {detail.rsplit(': ', 1)[0]}{summary}"))
    elif kind == "started":
        console.print(styled(("started", "green"), f" {detail}"))
    elif kind == "succeeded":
        console.print(styled((str(detail), "green")))
    elif kind in ("launch", "failed"):
        return  # the command line says these itself (the failure as its error)
    else:
        console.print(styled(("ascend-run:", "yellow"), f" {detail}"))


def show_line(record: dict, printer, dep: Deployment) -> None:
    """A line of the job's output with its [node/rank] prefix (a spare shows the rank it took)."""
    node, rank = record.get("node", "?"), record.get("rank")
    usual = next((n.rank for n in dep.nodes if n.name == node), None)
    printer.line(node if rank == usual else f"{node}/{rank}", record.get("line", ""))



@click.command()
@job_option
@deployment_option
@subset_options
@wide_output_option
@accept_new_option
@parallel_option
@click.option("--watch", is_flag=True,
              help="Keep watching until Ctrl-C: on a terminal the view is redrawn every --interval; otherwise (and "
                   "with -o json: one JSON document per line) it is printed again each time it changes.")
@click.option("--interval", type=click.FloatRange(min=0.1), default=2.0, show_default=True, metavar="SECONDS",
              help="With --watch: how often to look.")
def status(deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], output_format: str,
           accept_new_host_keys: bool, parallel: int, watch: bool, interval: float) -> None:
    """The supervisor's view (state, attempt k of N, servers and spares in use, last step and loss per
    pipeline stage, step time, seconds since the last progress, last checkpoint step), then per server
    (all in use, or -w/-x among them): the job's container, its last log line and loss, and the one-off
    steps running there."""
    from ascend_run.supervise.client import job_status

    dep = load_chosen(deployment_file)
    select = (lambda in_use: pick_nodes(in_use, node_specs, exclude_specs)) \
        if subset_given(node_specs, exclude_specs) else None
    with contextlib.suppress(AscendRunError):  # known values are redacted from what the servers say
        secrets.values(dep)

    def read() -> dict:
        return secrets.redact_all(job_status(dep, accept_new_host_keys, parallel, select=select))

    if watch:
        watch_status(read, dep, output_format, interval)
        return
    report = read()
    reached = [row for row in report["nodes"] if row["state"] != "unreachable"]
    if output_format == "json":
        echo_json(report)
    else:
        print_status(dep, report, make_console(), wide=output_format == "wide")
    if report["nodes"] and not reached:
        raise no_server_reached([row["node"] for row in report["nodes"]], f"status of {dep.name}")


_DURATION = re.compile(r"\b(about )?(an?|\d+) (second|minute|hour|day|week)s?\b|\b\d+(\.\d+)? s ago\b")


def _what_changed_means(report: dict) -> str:
    """The report without what changes by itself as time passes (seconds since progress, `Up 5 minutes`): a
    watch prints again when the job moved, not when the clock did."""
    view = dict(report)
    if view.get("supervisor"):
        view["supervisor"] = {k: v for k, v in view["supervisor"].items() if k != "seconds_since_progress"}
    return _DURATION.sub("", json.dumps(view, sort_keys=True, default=str))


def watch_status(read, dep: Deployment, output_format: str, interval: float) -> None:
    """`status --watch`: `read()` every `interval` s. A terminal gets the view redrawn in place; a pipe gets it
    again (after a time line) each time it changes; -o json one compact document per line per change (-o yaml:
    one YAML document each). Ends with Ctrl-C."""
    import time

    from ascend_run.cli.common import to_yaml, yaml_asked

    console = make_console()
    redraw = output_format != "json" and sys.stdout.isatty()
    last = None
    while True:
        report = read()
        seen = _what_changed_means(report)
        if redraw:
            console.clear()
            console.print(f"every {interval:g} s: ascend-run status  {time.strftime('%H:%M:%S')}  (Ctrl-C ends)")
            print_status(dep, report, console, wide=output_format == "wide")
        elif seen != last:
            if output_format == "json":
                click.echo("---\n" + to_yaml(report) if yaml_asked() else
                           json.dumps(report, ensure_ascii=False, default=str), nl=not yaml_asked())
            else:
                click.echo(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')}")
                print_status(dep, report, console, wide=output_format == "wide")
            sys.stdout.flush()
        last = seen
        time.sleep(interval)


def print_status(dep: Deployment, report: dict, console: Console, wide: bool = False) -> None:
    """The supervisor's view, then a row per server; wide: the server's address and whole last line too."""
    report = terminal_all(report)  # servers' last lines and the supervisor's error, as text for a screen
    view = report["supervisor"]
    if view is not None:
        print_supervisor(dep.name, view, console)
    rows = report["nodes"]
    steps = wide or any(row["steps"] for row in rows)
    addresses = {n.name: n.address for n in (*dep.nodes, *dep.spares)}
    table = Table("node", *(["address"] if wide else []), "rank", "container", "status", "last loss", "last line",
                  *(["steps"] if steps else []), box=None)
    for row in rows:
        line = row["last_line"] or ""
        table.add_row(row["node"], *([addresses.get(row["node"], "")] if wide else []), str(row["rank"]),
                      row["state"], row["status"], row["last_loss"] or "", line if wide else line[:80],
                      *([", ".join(row["steps"])] if steps else []))
    console.print(table)


def print_supervisor(name: str, view: dict, console: Console) -> None:
    pid = f", supervisor pid {view['supervisor_pid']}" if view["supervisor_pid"] else ""
    console.print(styled(f"job {name}: ", (str(view["state"]), "bold"),
                         f", attempt {view['attempt']} of {view['attempts']}{pid}"))
    console.print(f"servers: {', '.join(view['servers'])}; spares free: {', '.join(view['spares_free']) or 'none'}")
    for stage in view["stages"]:
        loss = f", loss {stage['loss']:.6g}" if stage.get("loss") is not None else ""
        console.print(f"stage {stage['stage']} (ranks {stage['ranks']}): step {stage['step'] or '-'}{loss}")
    parts = []
    if view["step_ms"] is not None:
        parts.append(f"step time {view['step_ms']:.0f} ms")
    if view["seconds_since_progress"] is not None:
        parts.append(f"last progress {view['seconds_since_progress']:.1f} s ago")
    parts.append(f"last checkpoint (every rank): step {view['last_checkpoint_step'] or '-'}")
    console.print("; ".join(parts))
    if view.get("error"):
        console.print(styled((str(view["error"]["message"]), "red")))


@click.command()
@job_option
@deployment_option
@subset_options
@output_option
@accept_new_option
@parallel_option
@click.option("--dry-run", is_flag=True,
              help="List the job's containers on each server and print the exact commands that would remove them; "
                   "remove nothing.")
def stop(deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], output_format: str,
         accept_new_host_keys: bool, parallel: int, dry_run: bool) -> None:
    """Stop the job's supervisor, then remove the job's containers on every server it may be on (nodes in
    use, the file's nodes and spares) and wait until its processes are gone. Works from any shell, with or
    without a live supervisor.

    With -w/-x: only remove the job's containers on those servers (leftovers of a job nobody supervises);
    refused while a supervisor owns the job, which would take it as a failure.
    """
    from ascend_run.supervise.state import StateStore, servers_in_use

    dep = load_chosen(deployment_file)
    store = StateStore.for_deployment(dep)
    pool = list({n.name: n for n in (*servers_in_use(dep, store.read()).nodes, *dep.nodes, *dep.spares)}.values())
    subset = subset_given(node_specs, exclude_specs)
    servers = pick_nodes(dep, node_specs, exclude_specs, pool=pool) if subset else pool
    if subset and store.owner_alive():
        raise click.UsageError(f"the job {dep.name!r} is supervised (pid {store.owner_pid()}): removing part of it "
                               "would be taken as a failure; stop the whole job (drop -w/-x)")
    if dry_run:
        print_stop_plan(dep, store, servers, None if subset else store.owner_pid(), output_format,
                        accept_new_host_keys, parallel)
        return
    if subset:
        servers_done, problems = _stop_on(dep, pool, servers, accept_new_host_keys, parallel)
    else:
        from ascend_run.supervise.client import stop_everywhere

        servers_done, problems = stop_everywhere(dep, accept_new_host_keys, parallel)
    if output_format == "json":
        echo_json({"job": dep.name, "stopped_on": servers_done, "problems": problems, "ok": not problems})
    if not servers_done:
        raise no_server_reached(sorted(problems) or [n.name for n in servers], f"stop {dep.name}")
    if problems:
        raise AscendRunError("could not stop the job on: " + "; ".join(f"{k}: {v}" for k, v in problems.items()))
    if output_format == "text":
        click.echo(f"stopped {dep.name} on {len(servers_done)} servers")


def _stop_on(dep, pool, servers, accept_new: bool, parallel: int) -> tuple[list[str], dict[str, str]]:
    """The job's containers removed on `servers` only (no supervisor involved)."""
    from ascend_run.launch.launcher import stop_job

    with connected(dep.with_nodes(pool), accept_new, parallel, nodes=servers) as cluster:
        problems = stop_job(cluster)
    return sorted(n.name for n in servers), problems


def stop_commands(dep, names: list[str]) -> list[list[str]]:
    """What `stop` runs on a server that holds `names` (launch/launcher.stop_job): list, remove, list again."""
    from ascend_run.launch import nodeops

    listing = nodeops.list_argv(dep.name)
    return [listing, *([nodeops.remove_argv(names)] if names else []), *([listing] if names else [])]


def print_stop_plan(dep, store, servers, pid: int | None, output_format: str, accept_new: bool,
                    parallel: int) -> None:
    """`stop --dry-run`: the supervisor it would signal, and per server the real commands with the real container
    names, read now with the same (read-only) listing `stop` starts with."""
    from ascend_run.launch import nodeops
    from ascend_run.supervise.client import STOP_WAIT_S
    from ascend_run.transport.fanout import close_all, connect_each

    results = connect_each(dep, accept_new=accept_new, parallelism=parallel, nodes=servers)
    if servers and all(isinstance(t, BaseException) for t in results.values()):
        unreached = no_server_reached([n.name for n in servers], f"stop --dry-run {dep.name}")
    else:
        unreached = None
    entries = []
    try:
        for node in servers:
            t = results[node.name]
            entry = {"node": node.name, "ssh": node.ssh.describe(), "containers": [], "commands": [], "error": None}
            try:
                if isinstance(t, BaseException):
                    raise t
                entry["containers"] = [c.name for c in nodeops.job_containers(t, dep.name)]
                entry["commands"] = stop_commands(dep, entry["containers"])
            except Exception as exc:  # noqa: BLE001 - shown per server, as stop would meet it
                entry["error"] = str(exc)
            entries.append(entry)
    finally:
        close_all([t for t in results.values() if not isinstance(t, BaseException)])
    if output_format == "json":
        echo_json({"dry_run": True, "job": dep.name, "supervisor_pid": pid,
                   "signals": ["TERM", "KILL"] if pid else [], "servers": entries})
        if unreached is not None:
            raise unreached
        return
    if pid:
        click.echo(f"kill -TERM {pid}  # the supervisor; kill -KILL {pid} if it is alive after {STOP_WAIT_S:.0f} s")
    else:
        click.echo("# no live supervisor to signal")
    for entry in entries:
        if entry["error"]:
            click.echo(comment(f"{entry['node']} ({entry['ssh']}): cannot list its containers: {entry['error']}"))
            continue
        held = ", ".join(entry["containers"]) or "none"
        click.echo(comment(f"{entry['node']} ({entry['ssh']}): containers of the job: {held}"))
        for i, argv in enumerate(entry["commands"]):
            again = "  # again, until it lists nothing (up to 3 tries)" if i == 2 else ""
            click.echo(shlex.join(argv) + again)
    if unreached is not None:
        raise unreached


commands = [preflight, launch, status, stop]
