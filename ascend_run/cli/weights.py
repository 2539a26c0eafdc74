"""`ascend-run weights`: put the model weights on every server."""

from __future__ import annotations

import time

import click

from ascend_run.cli.common import deployment_option


@click.group()
def weights() -> None:
    """Model weights on the servers."""


@weights.command()
@deployment_option
@click.option("--to", "directory", required=True, help="Weights directory on the servers (absolute path).")
@click.option("--from-node", is_flag=True,
              help="Spread the copy already on node 0 to the other nodes (sha256 checked, identical files skipped).")
@click.option("--repo", default="MindSpore-Lab/DeepSeek-V3", show_default=True, help="Hub repository.")
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
def fetch(deployment_file: str, directory: str, from_node: bool, repo: str, accept_new_host_keys: bool) -> None:
    """Copy the weights to the servers.

    Only --from-node is implemented: node 0's copy goes to every other node in parallel (via a local
    temporary copy), after a free-space check on every target; nothing is copied if one is short.
    Downloading from the openMind hub is not implemented yet.
    """
    from ascend_run.cli.launch import connected
    from ascend_run.deployment import load_deployment
    from ascend_run.errors import AscendRunError
    from ascend_run.weights import spread_from_node

    if not from_node:
        raise AscendRunError(f"downloading {repo} from the hub is not implemented yet",
                             fix="put the weights on node 0 yourself, then run with --from-node")
    if not directory.startswith("/"):
        raise click.BadParameter("must be an absolute path on the servers", param_hint="--to")
    dep = load_deployment(deployment_file)
    started = time.monotonic()
    with connected(dep, accept_new_host_keys) as transports:
        copied = spread_from_node(dep, transports, directory, on_msg=lambda m: click.echo(m, err=True))
    click.echo(f"{sum(copied.values())} file copies in {time.monotonic() - started:.1f} s", err=True)


commands = [weights]
