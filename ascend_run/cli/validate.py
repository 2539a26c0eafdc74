"""`ascend-run validate`: check a deployment file and show what it resolves to."""

from __future__ import annotations

import click
from rich.table import Table

from ascend_run.cli.common import console as make_console
from ascend_run.cli.common import deployment_option, echo_json, output_option, styled
from ascend_run.inputs.deployment import load_deployment
from ascend_run.inputs.text import printable


def summary(dep) -> dict:
    return {
        "file": str(dep.path),
        "name": dep.name,
        "profile": dep.profile.name,
        "image": dep.image,
        "container": dep.container_name,
        "nodes": [{"rank": n.rank, "name": n.name, "address": n.address, "npus": list(n.npus),
                   "ssh": n.ssh.describe()} for n in dep.nodes],
        "total_npus": dep.total_npus,
        "master_address": dep.master_address,
        "master_port": dep.job.master_port if dep.job else None,
    }


@click.command()
@deployment_option
@output_option
def validate(deployment_file: str, output_format: str) -> None:
    """Check a deployment file: keys, addresses, node ranges, NPU indices, profile.

    Exits 0 when valid, 2 with every problem (file:line: key: what is wrong) otherwise.
    """
    dep = load_deployment(deployment_file)
    dep.check_sync_sources()
    if output_format == "json":
        echo_json(summary(dep))
        return
    # Values and the file name are text, never markup (the console has none): `[/red]` in a file name is a name.
    console = make_console()
    console.print(styled(("ok", "green"), f" {printable(str(dep.path))}: job ", (dep.name, "bold"),
                         f" on {len(dep.nodes)} × {dep.profile.name}, {dep.total_npus} NPUs, image {dep.image}"))
    table = Table("rank", "name", "address", "NPUs", box=None)
    shown = dep.nodes if len(dep.nodes) <= 12 else dep.nodes[:6] + dep.nodes[-3:]
    for node in shown:
        npus = "all" if len(node.npus) == dep.profile.npu_count else ",".join(map(str, node.npus))
        table.add_row(str(node.rank), node.name, node.address, npus)
    console.print(table)
    if len(dep.nodes) > 12:
        console.print(f"  … {len(dep.nodes) - 9} more nodes")
    console.print(f"master: {dep.master_address}:{dep.job.master_port if dep.job else None}")


commands = [validate]
