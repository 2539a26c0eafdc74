"""`ascend-run sim up | status | down`: a simulated Ascend cluster on this machine (needs root)."""

from __future__ import annotations

import contextlib
import shlex
import time

import click
from rich.table import Table

from ascend_run.cli.common import console as make_console
from ascend_run.cli.common import echo_json, output_option, renamed_option, styled
from ascend_run.inputs.profiles import builtin_profile_names

dir_option = click.option("--dir", "directory", default=".sim", show_default=True,
                          type=click.Path(file_okay=False), help="Cluster directory (state, keys, cluster.yaml).")


@click.group()
def sim() -> None:
    """A simulated Atlas cluster: each server a network namespace with sshd, dockerd, /dev/davinci*, npu-smi."""


@sim.command()
@click.option("-n", "--servers", "nodes", default=2, show_default=True, type=click.IntRange(1, 245),
              help="Number of servers.")
@renamed_option("--nodes", "-n/--servers N (--nodes is a list of hosts, on the commands that take one)")
@click.option("--profile", default="atlas-800t-a2", show_default=True, type=click.Choice(builtin_profile_names()),
              help="Hardware profile: device nodes, tool paths and driver version of each server.")
@click.option("--spares", default=0, show_default=True, type=click.IntRange(0, 244),
              help="Of the servers, how many (the last ones) cluster.yaml lists as spares: (standby servers).")
@click.option("--no-docker", is_flag=True, help="Only sshd (fast; for fan-out benchmarks).")
@click.option("--image", help="Also load this image from the local engine into every node.")
@click.option("--base-image", is_flag=True,
              help="Also load the local Debian base image (ascend-run/debian-base:bookworm; built once, cached).")
@click.option("--bastion", is_flag=True,
              help="Put the servers behind a login node: reachable only through it (DIR/ssh_config has the ProxyJump).")
@click.option("--link-rate", metavar="RATE",
              help="Give every server, and this machine, a network link of RATE both ways (tc), e.g. 200mbit, "
                   "1gbit: transfers then measure the topology, not memory copies.")
@click.option("--kubernetes", is_flag=True,
              help="Also run Kubernetes on the servers: the control plane here, a kubelet, containerd and the "
                   "Ascend device plugin on each (built from Go modules into a cache the first time); writes "
                   "DIR/kubeconfig.")
@dir_option
@output_option
def up(nodes: int, profile: str, spares: int, no_docker: bool, image: str | None, base_image: bool, bastion: bool,
       link_rate: str | None, kubernetes: bool, directory: str, output_format: str) -> None:
    """Bring up N simulated servers (-n) and write DIR/cluster.yaml for every other command.

    Each server is a network namespace on a private bridge (10.233.X.0/24, X from a hash of DIR) with its
    own hostname, /dev/davinci* stand-ins, driver tree, hccn.conf, npu-smi, sshd and (unless --no-docker)
    dockerd. Needs root. `ascend-run sim down --dir DIR` removes every trace. With --bastion the servers sit
    on a second bridge this machine has no route to, behind one more server (sim-bastion) with a leg on each.
    """
    from ascend_run.sim.cluster import SimCluster

    if (image or base_image or kubernetes) and no_docker:
        raise click.UsageError("--image/--base-image/--kubernetes need the nodes' runtimes (drop --no-docker)")
    cluster = SimCluster(directory)
    started = time.monotonic()
    err = make_console(stderr=True)
    with contextlib.ExitStack() as stack:
        engine = None
        if image or base_image:  # the images come from the engine `image build` and `demo` use
            from ascend_run.engine.local import engine_client

            engine, client = stack.enter_context(engine_client())
            if base_image:
                from ascend_run.sim.base_image import ensure_base_image

                image = ensure_base_image(client)
        with err.status(f"starting {nodes} simulated {profile} servers") as status:
            def progress(message: str) -> None:
                err.print(f"  {message}")
                status.update(message)

            cluster.up(nodes, profile, docker=not no_docker, image=image, progress=progress, bastion=bastion,
                       link_rate=link_rate, spares=spares, kubernetes=kubernetes,
                       image_engine=engine.base_url if engine else None)
    seconds = time.monotonic() - started
    if output_format == "json":
        echo_json({"dir": str(directory), "nodes": nodes, "seconds": round(seconds, 1),
                   "deployment_file": str(cluster.deployment_file),
                   "ssh_config": str(cluster.ssh_config) if bastion else None,
                   "kubeconfig": str(cluster.kubeconfig) if kubernetes else None})
        return
    click.echo(f"{nodes} nodes up in {seconds:.1f} s; deployment file: {cluster.deployment_file}")
    if bastion:
        click.echo(f"the nodes are reachable only through sim-bastion: see {cluster.ssh_config}")
    try_argv = ["ascend-run", "exec", "-f", str(cluster.deployment_file), "--", "npu-smi", "info"]
    click.echo(f"try: {shlex.join(try_argv)}")
    if kubernetes:
        click.echo(f"     {shlex.join(['kubectl', '--kubeconfig', str(cluster.kubeconfig), 'get', 'nodes'])}")


@sim.command()
@dir_option
@output_option
def status(directory: str, output_format: str) -> None:
    """Show the simulated servers, whether their sshd and dockerd answer, and (with --kubernetes) whether
    each is a Ready Kubernetes node and how many NPUs it offers."""
    from ascend_run.sim.cluster import SimCluster

    rows = SimCluster(directory).status()
    if output_format == "json":
        echo_json(rows)
        return
    kube = any("node_ready" in row for row in rows)
    table = Table("name", "address", "sshd", "dockerd", *(["node", "npus"] if kube else []), box=None)
    for row in rows:
        cells = [row["name"], row["address"], "up" if row["sshd"] else styled(("down", "red")),
                 "up" if row["docker"] else "-"]
        if kube:
            ready = row.get("node_ready")
            cells += ["Ready" if ready else styled(("NotReady" if ready is False else "absent", "red")),
                      str(row.get("npus", "-"))]
        table.add_row(*cells)
    make_console().print(table)


@sim.command()
@dir_option
@output_option
def down(directory: str, output_format: str) -> None:
    """Stop every simulated server and remove every namespace, link and process it made."""
    from ascend_run.sim.cluster import SimCluster

    SimCluster(directory).down()
    if output_format == "json":
        echo_json({"dir": str(directory), "down": True})
    else:
        click.echo(f"simulated cluster in {directory} is down")


commands = [sim]
