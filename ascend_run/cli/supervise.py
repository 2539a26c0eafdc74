"""`ascend-run supervise | events`: the process that keeps a job alive, and what it did."""

from __future__ import annotations

import shlex
import sys

import click

from ascend_run.cli.common import (
    accept_new_option,
    deployment_option,
    echo_json,
    output_option,
    parallel_option,
    refuse_subset,
    subset_options,
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
@subset_options
@accept_new_option
@parallel_option
def supervise(deployment_file: str, start_job: bool, detach: bool, replace: bool, skip_preflight: bool,
              skip_config_check: bool, master_addr: str | None, node_specs: tuple[str, ...],
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
                               accept_new_host_keys, parallel)
        proc = spawn(dep, args, store)
        record = follower.run(alive=lambda: proc.poll() is None, until=("started", "adopt"))
        error = ending_error(record, store)
        if error is not None:
            raise error
        click.echo(f"supervisor pid {proc.pid} owns {dep.name}; follow with: ascend-run logs --follow -f "
                   f"{deployment_file}")
        return
    options = StartOptions(replace, not skip_preflight, not skip_config_check) if start_job else None
    sys.exit(run_supervisor(dep, options, accept_new=accept_new_host_keys, parallelism=parallel))


@click.command()
@deployment_option
@output_option
@click.option("--previous", is_flag=True, help="The run before the last launch instead.")
def events(deployment_file: str, output_format: str, previous: bool) -> None:
    """What the supervisor did and why, in order: launch, preflight, started, failure, stop, spare, resume …"""
    from ascend_run.supervise.state import StateStore, read_records

    dep = load_deployment(deployment_file)
    store = StateStore.for_deployment(dep)
    path = store.events_file.with_suffix(".jsonl.prev") if previous else store.events_file
    records = read_records(path, 0)[0]
    if output_format == "json":
        echo_json(records)
        return
    if not records:
        click.echo(f"no events for {dep.name} ({path})", err=True)
    for record in records:
        click.echo(terminal(f"{str(record.get('time', ''))[11:]} {str(record.get('kind', '?')):<12} "
                            f"{record.get('detail', '')}"))


commands = [supervise, events]
