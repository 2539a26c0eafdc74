"""`ascend-run supervise | events`: the process that keeps a job alive, and what it did."""

from __future__ import annotations

import shlex
import sys

import click

from ascend_run.cli.common import (
    accept_new_option,
    deployment_option,
    echo_json,
    echo_record,
    job_option,
    load_chosen,
    output_option,
    parallel_option,
    refuse_subset,
    subset_options,
    wide_output_option,
)
from ascend_run.inputs.deployment import load_deployment
from ascend_run.inputs.text import terminal


@click.command()
@deployment_option
@click.option("--start", "start_job", is_flag=True,
              help="Launch the job (as `launch` does) and supervise it; without it, take over the running job.")
@click.option("--detach", is_flag=True, help="Run in the background; return once the job is started or taken over.")
@click.option("--replace", is_flag=True, help="With --start: remove the job's containers if they already exist.")
@click.option("--skip-preflight", is_flag=True, help="With --start: start without the preflight checks.")
@click.option("--skip-config-check", is_flag=True, help="With --start: start without checking job.config.")
@click.option("--master-addr", help="Override master_ip (default: node 0's cluster-facing address).")
@click.option("--all-lines", is_flag=True, help="Also record MindSpore's own [WARNING]/[INFO] lines and every "
              "rank's step lines of the job's output (by default they stay in the ranks' logs on the servers).")
@subset_options
@accept_new_option
@parallel_option
def supervise(deployment_file: str, start_job: bool, detach: bool, replace: bool, skip_preflight: bool,
              skip_config_check: bool, master_addr: str | None, all_lines: bool, node_specs: tuple[str, ...],
              exclude_specs: tuple[str, ...], accept_new_host_keys: bool, parallel: int) -> None:
    """Own a job until it ends: stop it everywhere when any part fails, find hangs and lost servers, relaunch
    it from the newest checkpoint every rank has (job.restarts), with spares in failed servers' places.

    `launch` starts one for you. Run it yourself to take over a running job whose supervisor died (nothing
    is restarted), or under systemd (docs/supervisor.md). In the foreground it logs its events to stderr;
    state, events and the job's output are in its state directory (`ascend-run status` shows where).
    """
    from ascend_run.cli.launch import WHOLE_JOB
    from ascend_run.supervise.supervisor import StartOptions, run_supervisor

    refuse_subset(node_specs, exclude_specs, "a supervisor owns the whole job: " + WHOLE_JOB)
    dep = load_deployment(deployment_file)
    if master_addr:
        dep = dep.with_master_address(master_addr)
    if detach:
        from ascend_run.cli.launch import supervisor_args
        from ascend_run.supervise.client import Follower, ending_error, spawn
        from ascend_run.supervise.state import StateStore, SupervisorBusy

        store = StateStore.for_deployment(dep)
        if store.owner_alive():
            raise SupervisorBusy(f"the job {dep.name} is already supervised (pid {store.owner_pid()})",
                                 fix=f"stop it first: ascend-run stop -f {shlex.quote(deployment_file)}")
        follower = Follower(store, lines=False,
                            on_event=lambda r: click.echo(terminal(f"ascend-run: {r['detail']}"), err=True))
        if start_job:
            store.new_run()
        else:
            follower.skip_to_end(store.events_file)
        args = supervisor_args(start_job, replace, skip_preflight, skip_config_check, master_addr,
                               accept_new_host_keys, parallel, all_lines)
        proc = spawn(dep, args, store)
        record = follower.run(alive=lambda: proc.poll() is None, until=("started", "adopt"))
        error = ending_error(record, store)
        if error is not None:
            raise error
        click.echo(f"supervisor pid {proc.pid} owns {dep.name}; follow with: ascend-run logs --follow -f "
                   f"{deployment_file}")
        return
    options = StartOptions(replace, not skip_preflight, not skip_config_check) if start_job else None
    sys.exit(run_supervisor(dep, options, accept_new=accept_new_host_keys, parallelism=parallel,
                            quiet=not all_lines))


@click.command()
@job_option
@deployment_option
@output_option
@click.option("--previous", is_flag=True, help="The run before the last launch instead.")
@click.option("--follow", is_flag=True,
              help="Then print each new event as the supervisor writes it, until the run ends (with -o json: one "
                   "JSON object per line).")
def events(deployment_file: str, output_format: str, previous: bool, follow: bool) -> None:
    """What the supervisor did and why, in order: launch, preflight, started, failure, stop, spare, resume …"""
    from ascend_run.supervise.state import StateStore, read_records

    dep = load_chosen(deployment_file)
    store = StateStore.for_deployment(dep)
    if follow:
        if previous:
            raise click.UsageError("--previous is a run that ended: there is nothing to follow")
        follow_events(store, output_format)
        return
    path = store.events_file.with_suffix(".jsonl.prev") if previous else store.events_file
    records = read_records(path, 0)[0]
    if output_format == "json":
        echo_json(records)
        return
    if not records:
        click.echo(f"no events for {dep.name} ({path})", err=True)
    for record in records:
        click.echo(event_line(record))


def event_line(record: dict) -> str:
    """One event for a person's screen: its control characters escaped (text.terminal)."""
    return terminal(f"{str(record.get('time', ''))[11:]} {str(record.get('kind', '?')):<12} "
                    f"{record.get('detail', '')}")


def follow_events(store, output_format: str) -> None:
    """`events --follow`: this run's events so far, then each as it comes, until the run's ending event (or the
    supervisor is gone); an ended run prints and returns at once."""
    from ascend_run.supervise.client import Follower

    def show(record: dict) -> None:
        if output_format == "json":
            echo_record(record)
        else:
            click.echo(event_line(record))
            sys.stdout.flush()

    Follower(store, on_event=show, lines=False).run(alive=store.owner_alive)


def human_age(seconds: float | None) -> str:
    """kubectl's ages: 45s, 12m, 3h, 2d."""
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{int(seconds // size)}{unit}"
    return f"{int(seconds)}s"


@click.command()
@wide_output_option
@click.option("--all", "show_all", is_flag=True, help="Also the jobs that ended (default: those a supervisor owns, "
                                                        "or that it left running, and the last ended one per name).")
def jobs(output_format: str, show_all: bool) -> None:
    """Every job the supervisors of this machine own or owned: name, state, attempt, step, servers, age, file.

    Read from the state folder ($ASCEND_RUN_STATE_DIR, else ~/.local/state/ascend-run): a team that shares one
    folder sees each other's jobs, and names them with `--job NAME` on status, stop, events and logs (the key
    tells apart two files naming one job; a job whose file moved is still found).
    """
    import time

    from ascend_run.supervise.joblist import list_jobs
    from ascend_run.supervise.state import state_root

    now = time.time()
    entries = list_jobs()
    if not show_all:
        seen: set[str] = set()
        kept = []
        for entry in entries:  # newest first: the live ones, and each name's latest
            if entry.supervisor_pid or entry.name not in seen:
                kept.append(entry)
            seen.add(entry.name)
        entries = kept
    if output_format == "json":
        echo_json({"state_dir": str(state_root()), "jobs": [e.as_json(now) for e in entries]})
        return
    from rich.table import Table

    from ascend_run.cli.colour import console

    wide = output_format == "wide"
    table = Table("NAME", "STATE", "ATTEMPT", "STEP", "SERVERS", "AGE", "DEPLOYMENT",
                  *(["KEY", "SUPERVISOR", "STATE DIR"] if wide else []), box=None)
    for e in entries:
        servers = ", ".join(e.servers) if wide or len(e.servers) <= 3 else f"{len(e.servers)} ({e.servers[0]}, …)"
        table.add_row(e.name, e.state, f"{e.attempt}/{e.attempts}", "-" if e.step is None else str(e.step), servers,
                      human_age(e.age_s(now)), e.deployment + ("" if e.file_exists else " (moved)"),
                      *([e.key, str(e.supervisor_pid or "-"), str(e.dir)] if wide else []))
    if not entries:
        click.echo(f"no jobs in {state_root()}", err=True)
        return
    console(width=None if sys.stdout.isatty() else 10_000).print(table)  # a pipe gets whole paths


commands = [supervise, events, jobs]
