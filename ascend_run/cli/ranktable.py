"""`ascend-run ranktable`: write (or check) the HCCL rank table of the cluster from the live NPU addresses."""

from __future__ import annotations

import shlex

import click

from ascend_run.cli.common import (
    accept_new_option,
    deployment_option,
    dry_run_option,
    echo_json,
    not_option_like,
    out_option,
    output_option,
    refuse_subset,
    subset_options,
)
from ascend_run.inputs.yamlio import read_text
from ascend_run.outputs import staged_output


@click.command()
@deployment_option
@out_option("Write hccl.json here (default: stdout).")
@output_option
@click.option("--check", "check_file", type=click.Path(dir_okay=False, exists=True), callback=not_option_like,
              help="Validate this existing table against the deployment and the live cluster instead.")
@subset_options
@dry_run_option
@accept_new_option
def ranktable(deployment_file: str, out: str | None, output_format: str, check_file: str | None,
              node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], dry_run: bool,
              accept_new_host_keys: bool) -> None:
    """The rank table (hccl.json, RANK_TABLE_FILE) from every NPU's address, read over SSH.

    Addresses come from `hccn_tool -i N -ip -g` (falling back to /etc/hccn.conf); servers are in deployment
    order and ranks contiguous per server. A missing or duplicate address, or a link that is not UP, is an
    error naming the node and the device. Without --out the table is printed (it is JSON whatever -o says);
    with --out, -o is the format of the report. The table covers every server, so -w/-x are refused.
    """
    from ascend_run.cli.common import connected
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.npu.ranktable import load_rank_table, rank_table_json
    from ascend_run.steps.ranktable import check_rank_table, rank_table_from_cluster

    refuse_subset(node_specs, exclude_specs, "a rank table lists every server of the job, ranks contiguous over "
                                             "all of them")
    dep = load_deployment(deployment_file)
    if dry_run:
        print_plan(dep, output_format)
        return
    check_text = read_text(check_file, "a rank table", fix="check the path given with --check") if check_file else None
    with connected(dep, accept_new_host_keys) as cluster:
        if check_file:
            table = load_rank_table(check_text, source=check_file)
            check_rank_table(cluster, table, check_file)
            if output_format == "json":
                echo_json({"file": check_file, "ok": True, "servers": len(dep.nodes)})
            else:
                click.echo(f"{check_file}: matches the {len(dep.nodes)} nodes of {deployment_file}")
            return
        table = rank_table_from_cluster(cluster)
    text = rank_table_json(table)
    if not out:
        click.echo(text, nl=False)
        return
    with staged_output() as staged:
        staged.add(out, text)
    ranks = sum(len(s["device"]) for s in table["server_list"])
    if output_format == "json":
        echo_json({"out": out, "servers": table["server_count"], "ranks": ranks})
    else:
        click.echo(f"wrote {out}: {table['server_count']} servers, {ranks} ranks", err=True)


def read_commands(dep, node) -> tuple[list[list[str]], list[str]]:
    """The commands `ranktable` runs on `node` when hccn_tool answers (recorded from the real reader), and the
    one it adds for devices where it does not (the node's hccn.conf, read once)."""
    from types import SimpleNamespace

    from ascend_run.npu.ranktable import collect_device_ips

    calls: list[list[str]] = []

    def record(argv: list[str]):
        calls.append(list(argv))
        return SimpleNamespace(rc=0, stdout="ipaddr:192.0.2.1\nnetmask:255.255.255.0\nlink status: UP\n", stderr="")

    tools = dep.profile.tools
    collect_device_ips(record, node.npus, tools.hccn_tool, tools.hccn_conf)
    return calls, ["cat", tools.hccn_conf]


def print_plan(dep, output_format: str) -> None:
    """`ranktable --dry-run`: per node, the read-only commands whose answers make the table."""
    plans = [(node, *read_commands(dep, node)) for node in dep.nodes]
    if output_format == "json":
        echo_json({"dry_run": True, "nodes": [{"node": n.name, "ssh": n.ssh.describe(), "commands": calls,
                                               "fallback": fallback} for n, calls, fallback in plans]})
        return
    for node, calls, fallback in plans:
        click.echo(f"# {node.name} ({node.ssh.describe()})")
        for argv in calls:
            click.echo(shlex.join(argv))
        click.echo(f"{shlex.join(fallback)}  # only if hccn_tool gives no address for some device")


commands = [ranktable]
