"""`ascend-run ranktable`: write (or check) the HCCL rank table of the cluster from the live NPU addresses."""

from __future__ import annotations

from pathlib import Path

import click

from ascend_run.cli.common import deployment_option


@click.command()
@deployment_option
@click.option("-o", "--output", "output", type=click.Path(dir_okay=False), help="Write hccl.json here (default: stdout).")
@click.option("--check", "check_file", type=click.Path(dir_okay=False, exists=True),
              help="Validate this existing table against the deployment and the live cluster instead.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
def ranktable(deployment_file: str, output: str | None, check_file: str | None, accept_new_host_keys: bool) -> None:
    """The rank table (hccl.json, RANK_TABLE_FILE) from every NPU's address, read over SSH.

    Addresses come from `hccn_tool -i N -ip -g` (falling back to /etc/hccn.conf); servers are in deployment
    order and ranks contiguous per server. A missing or duplicate address, or a link that is not UP, is an
    error naming the node and the device.
    """
    from ascend_run.cli.common import connected
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps.ranktable import check_rank_table, rank_table_from_cluster
    from ascend_run.npu.ranktable import load_rank_table, rank_table_json

    dep = load_deployment(deployment_file)
    with connected(dep, accept_new_host_keys) as cluster:
        if check_file:
            table = load_rank_table(Path(check_file).read_text(encoding="utf-8"), source=check_file)
            check_rank_table(cluster, table, check_file)
            click.echo(f"{check_file}: matches the {len(dep.nodes)} nodes of {deployment_file}")
            return
        table = rank_table_from_cluster(cluster)
    text = rank_table_json(table)
    if output:
        Path(output).write_text(text, encoding="utf-8")
        ranks = sum(len(s["device"]) for s in table["server_list"])
        click.echo(f"wrote {output}: {table['server_count']} servers, {ranks} ranks", err=True)
    else:
        click.echo(text, nl=False)


commands = [ranktable]
