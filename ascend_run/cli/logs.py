"""`ascend-run logs`: read a job's msrun worker logs; `--loss` extracts and plots the training loss.

The command is split into small steps (where the logs come from, what to show) so collection from the
nodes (`--collect --out DIR`) and the live mode (`--follow`) are further sources and views, not rewrites.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import click

from ascend_run.cli.common import (
    echo_json,
    echo_record,
    file_option,
    job_option,
    load_chosen,
    not_option_like,
    out_option,
    output_option,
    pick_nodes,
    subset_given,
    subset_options,
    writing,
)
from ascend_run.errors import JobFailed
from ascend_run.launch.losslog import LossReport, loss_report, plot_loss
from ascend_run.outputs import staged_output


def collect_from_nodes(deployment_file: str, dest: Path, accept_new: bool = False, node_specs=(),
                       exclude_specs=()) -> dict[str, list[str]]:
    """Copy every node's (or -w/-x's) msrun logs into DEST/<node>/ over SSH (all nodes at once)."""
    from ascend_run.cli.common import connected
    from ascend_run.launch.collect import collect_logs
    from ascend_run.supervise.state import StateStore, servers_in_use

    dep = load_chosen(deployment_file)
    dep = servers_in_use(dep, StateStore.for_deployment(dep).read())  # a supervised job's servers, spares in place
    nodes = pick_nodes(dep, node_specs, exclude_specs)
    with connected(dep, accept_new, nodes=nodes) as cluster:
        return collect_logs(cluster, dest)


def _log_source(deployment_file: str | None, from_dir: str | None, scratch: Path, node_specs=(),
                exclude_specs=()) -> Path:
    """Where the logs to read are: a local directory, or (with -f) a fresh copy from the nodes."""
    if from_dir:
        return Path(from_dir)
    if deployment_file:
        collect_from_nodes(deployment_file, scratch, node_specs=node_specs, exclude_specs=exclude_specs)
        return scratch
    raise click.UsageError("give --from DIR (a directory of worker_N.log files, or DIR/<node>/worker_N.log), "
                           "or -f FILE to read the nodes' logs")


def _refuse_collect_dir(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    """The old spelling `--collect DIR` is refused by the parser itself (so a hint that prints it fails its test)."""
    if value:
        raise click.UsageError(f"--collect takes no directory now: --collect --out {value}", ctx)
    return value


def _fmt(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def print_loss_table(report: LossReport) -> None:
    """Which rank was read and why, the other ranks in one line each kind, then step by step."""
    chosen = report.chosen
    others = [r for r in report.ranks_with_loss if r != chosen.rank]
    click.echo(f"loss from rank {chosen.rank} ({chosen.path}): {len(chosen.points)} steps"
               + (f"; also printed by rank(s) {', '.join(map(str, others))}" if others else ""))
    by_status: dict[str, list[int]] = {}
    for rank, scan in report.scans.items():
        if rank != chosen.rank and not scan.has_loss:
            by_status.setdefault(scan.state, []).append(rank)  # a crash is said once, as the command's error
    for status, ranks in by_status.items():
        click.echo(f"  rank(s) {', '.join(map(str, ranks))}: {status}")
    if chosen.restarts:
        click.echo(f"  (the log holds {chosen.restarts + 1} runs; showing the last)")
    click.echo(f"{'step':>7} {'epoch':>5} {'loss':>12} {'lr':>11} {'ms/step':>9} {'TFLOPS':>7} {'norm':>10}")
    for p in report.points:
        norm = p.grad_norm if p.grad_norm is not None else p.global_norm
        click.echo(f"{p.step:>7} {_fmt(p.epoch, 'd'):>5} {_fmt(p.loss, '.6f'):>12} {_fmt(p.lr, '.3e'):>11} "
                   f"{_fmt(p.per_step_time_ms, '.0f'):>9} {_fmt(p.throughput, '.3f'):>7} {_fmt(norm, '.4f'):>10}")


def show_loss(source: Path, rank: int | None, plot: str | None, output_format: str) -> None:
    """The loss table (or JSON) and the plot; then, if a rank crashed, the crash as the error (exit 6), once."""
    report = loss_report(source, rank)
    written = None
    if plot:
        title = f"training loss, rank {report.chosen.rank} ({Path(report.chosen.path).name})"
        with staged_output(option="--plot") as staged:
            written = staged.stage_with(plot, lambda tmp: plot_loss(report.points, tmp, title))
    if output_format == "json":
        echo_json({**report.as_json(), "plot": str(written) if written else None})
    else:
        print_loss_table(report)
        if written:
            click.echo(f"plot: {written}")
    crashed = report.crashed
    if crashed:
        what = "; ".join(f"rank {r} crashed: {failure}" for r, failure in crashed.items())
        raise JobFailed(what, fix="the steps above are those logged before the crash; read the rank's log "
                                  f"({report.scans[next(iter(crashed))].path})")


@click.command()
@job_option
@file_option(required=False, help="The deployment file: follow, collect or read the logs of its nodes.")
@click.option("--from", "from_dir", type=click.Path(exists=True),
              help="Read logs collected here: DIR/worker_N.log or DIR/<node>/worker_N.log (or one log file).")
@click.option("--collect", "collect", is_flag=False, flag_value="", default=None, metavar="",
              callback=_refuse_collect_dir,
              help="Copy output/msrun_log/* of every node (scheduler.log from the master) into --out DIR/<node>/.")
@out_option("With --collect: the local directory the logs go to.", directory=True)
@subset_options
@click.option("--loss", is_flag=True, help="Extract the training loss, step by step.")
@click.option("--rank", type=click.IntRange(min=0),
              help="Read this rank's log (default: the highest rank that printed real loss values).")
@click.option("--plot", type=click.Path(dir_okay=False), callback=not_option_like,
              help="Also write the loss curve to this PNG (implies --loss).")
@click.option("--follow", is_flag=True,
              help="Follow the job's output with [node/rank] prefixes from any shell, until the job ends.")
@click.option("--tail", "tail_lines", type=click.IntRange(min=0),
              help="The job's last N lines (as kubectl logs --tail); with --follow: begin with them.")
@click.option("--all-lines", is_flag=True, help="With --follow: also MindSpore's own [WARNING]/[INFO] lines.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
@output_option
def logs(deployment_file: str | None, from_dir: str | None, collect: str | None, out: str | None,
         node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], loss: bool, rank: int | None,
         plot: str | None, follow: bool, tail_lines: int | None, all_lines: bool, accept_new_host_keys: bool,
         output_format: str) -> None:
    """Follow the job's output, collect its worker logs, or read them; with --loss, the training loss and its curve.

    With pipeline parallelism only the last stage prints the loss (the others print N/A or 0): the rank
    is picked automatically unless --rank is given. Logs of earlier attempts of a supervised job (in
    attempt-K/ beside each server's logs) are read first: each step once, from the attempt that resumed it.
    A rank that crashed makes --loss exit 6 (after the table), naming the rank and its exception.
    -w/-x choose the nodes to follow or collect from.
    """
    if out and collect is None:
        raise click.UsageError("--out goes with --collect (where the collected logs go)")
    if follow:
        if not deployment_file:
            raise click.UsageError("--follow needs -f FILE (the job to follow)")
        follow_job(deployment_file, tail_lines, all_lines, accept_new_host_keys, node_specs, exclude_specs,
                   json_lines=output_format == "json")
        return
    if tail_lines is not None and collect is None and not (loss or plot):
        if not deployment_file:
            raise click.UsageError("--tail needs -f FILE (the job whose last lines to show)")
        show_tail(deployment_file, tail_lines, all_lines, node_specs, exclude_specs,
                  json_lines=output_format == "json")
        return
    if tail_lines is not None:
        raise click.UsageError("--tail goes with --follow, or alone (the last N lines)")
    if collect is not None:
        if not deployment_file:
            raise click.UsageError("--collect needs -f FILE (the nodes to collect from)")
        if not out:
            raise click.UsageError("--collect needs --out DIR (where the logs go)")
        with writing(out):
            copied = collect_from_nodes(deployment_file, Path(out), accept_new_host_keys, node_specs, exclude_specs)
        total = sum(len(v) for v in copied.values())
        if not (loss or plot):
            if output_format == "json":
                echo_json({"out": out, "files": total, "nodes": copied})
            else:
                click.echo(f"collected {total} log files from {len(copied)} nodes into {out}/", err=True)
            return
        click.echo(f"collected {total} log files from {len(copied)} nodes into {out}/", err=True)
        from_dir = out
    if not (loss or plot):
        raise click.UsageError("say what to do: --follow, --collect --out DIR, or --loss (and --plot FILE.png)")
    if subset_given(node_specs, exclude_specs) and (from_dir or not deployment_file):
        raise click.UsageError("-w/-x choose the nodes logs are read from with -f; --from DIR is read whole")
    with tempfile.TemporaryDirectory(prefix="ascend-run-logs-") as scratch:
        show_loss(_log_source(deployment_file, from_dir, Path(scratch), node_specs, exclude_specs), rank, plot,
                  output_format)


def _line_view(dep, all_lines: bool, node_specs, exclude_specs, json_lines: bool):
    """The function that prints one output record as --follow does: [node/rank] prefixed, or one JSON object."""
    from ascend_run.cli.console import PrefixPrinter, framework_noise
    from ascend_run.cli.launch import show_line

    printer = PrefixPrinter([n.name for n in (*dep.nodes, *dep.spares)], ranks={n.name: n.rank for n in dep.nodes},
                            hide=None if all_lines else framework_noise)
    shown = None
    if subset_given(node_specs, exclude_specs):
        shown = {n.name for n in pick_nodes(dep, node_specs, exclude_specs, pool=[*dep.nodes, *dep.spares])}

    def on_line(record: dict) -> None:
        if shown is not None and record.get("node") not in shown:
            return
        if json_lines:
            if all_lines or not framework_noise(record.get("line", "")):
                echo_record({k: record.get(k) for k in ("node", "rank", "line")})
        else:
            show_line(record, printer, dep)

    return on_line


def show_tail(deployment_file: str, tail: int, all_lines: bool, node_specs=(), exclude_specs=(),
              json_lines: bool = False) -> None:
    """`logs -f FILE --tail N`: the last N lines of the job's output (this run's, from the supervisor's record),
    then return, as `kubectl logs --tail N` does; --follow keeps going."""
    from ascend_run.errors import AscendRunError
    from ascend_run.supervise.state import StateStore, read_records

    dep = load_chosen(deployment_file)
    store = StateStore.for_deployment(dep)
    if not store.output_file.exists():
        raise AscendRunError(f"no output of {dep.name} recorded on this machine ({store.dir})",
                             fix="launch it (ascend-run launch -f FILE), or follow a job started elsewhere: "
                                 "ascend-run logs -f FILE --follow")
    on_line = _line_view(dep, all_lines, node_specs, exclude_specs, json_lines)
    records = read_records(store.output_file, 0)[0]
    for record in records[len(records) - tail:] if tail else []:
        on_line(record)


def follow_job(deployment_file: str, tail: int | None, all_lines: bool, accept_new: bool, node_specs=(),
               exclude_specs=(), json_lines: bool = False) -> None:
    """`--follow`: the job's lines (those of -w/-x's nodes), with [node/rank] prefixes, until the job ends; with
    -o json, one JSON object per line instead ({"node", "rank", "line"}: JSON Lines, for scripts)."""
    from ascend_run.cli.common import err_console
    from ascend_run.cli.launch import show_event
    from ascend_run.supervise.client import ending_error, follow_output
    from ascend_run.supervise.state import StateStore

    dep = load_chosen(deployment_file)
    console = err_console()
    on_line = _line_view(dep, all_lines, node_specs, exclude_specs, json_lines)
    record = follow_output(dep, on_line, lambda r: show_event(r, console), tail, accept_new)
    if record is not None:
        error = ending_error(record, StateStore.for_deployment(dep))
        if error is not None:
            raise error


commands = [logs]
