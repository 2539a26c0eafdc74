"""`ascend-run weights`: put the model weights on the servers."""

from __future__ import annotations

import shlex
import time

import click

from ascend_run import secrets
from ascend_run.cli.common import (
    deployment_option,
    dry_run_option,
    echo_json,
    human_size,
    output_option,
    pick_nodes,
    refuse_subset,
    subset_options,
)
from ascend_run.cli.transfer import encrypt_by_default, encrypt_option, per_node_option
from ascend_run.inputs.text import comment, printable

ADMIN_NOISE = "running openMind Hub Client as an Admin user"


@click.group()
def weights() -> None:
    """Model weights on the servers."""


@weights.command()
@deployment_option
@click.option("--to", "directory", help="Weights directory on the servers (absolute). Default: weights.dir.")
@click.option("--repo", help="Hub repository. Default: weights.repo (MindSpore-Lab/DeepSeek-V3).")
@click.option("--revision", help="Branch, tag or commit. Default: weights.revision (main).")
@click.option("--node", help="The node that downloads (name, address or rank). Default: weights.node, else node 0.")
@click.option("--image", help="Image with openmind_hub to download in. Default: weights.image, else the file's image.")
@click.option("--workers", default=8, show_default=True, type=click.IntRange(1, 64), help="Files fetched at once.")
@click.option("--from-node", is_flag=True,
              help="Instead of downloading: spread node 0's copy to the other nodes (or -w/-x; sha256 checked, "
                   "identical files skipped).")
@subset_options
@encrypt_option
@per_node_option
@dry_run_option
@output_option
@click.option("--accept-new-host-keys", is_flag=True, help="Record host keys of nodes not yet in known_hosts.")
def fetch(deployment_file: str, directory: str | None, repo: str | None, revision: str | None, node: str | None,
          image: str | None, workers: int, from_node: bool, node_specs: tuple[str, ...],
          exclude_specs: tuple[str, ...], encrypt: bool | None, per_node: bool, dry_run: bool, output_format: str,
          accept_new_host_keys: bool) -> None:
    """Download the weights from the openMind hub once, or spread a copy to every node.

    Without --from-node: one container of the image (openmind_hub's snapshot_download, as the article does it)
    on one node writes DIR.partial, after checking the free space against the repository's size; DIR appears,
    with .ascend-run-complete.json in it, only when every file is there. An interrupted download resumes when
    run again; a complete one is not fetched again unless the hub has a newer commit.

    With --from-node: node 0's copy goes to every other node that lacks some of it, node to node down a
    chain (relays started over SSH, nothing through this machine), after a free-space check on every
    target; nothing is copied if one is short. Each file is renamed into place only once its sha256 equals
    node 0's. Files already identical are not written again, and nodes that see node 0's directory itself
    (shared storage) are skipped. Needs python3 on the nodes.
    """
    from ascend_run.inputs.deployment import load_deployment

    dep = load_deployment(deployment_file)
    if from_node:
        targets = [n for n in pick_nodes(dep, node_specs, exclude_specs) if n != dep.nodes[0]]
        encrypt = encrypt_by_default(encrypt, [dep.nodes[0], *targets])
        _spread(dep, directory or dep.spec.weights.dir, targets, accept_new_host_keys, dry_run, encrypt, per_node,
                output_format)
    else:
        refuse_subset(node_specs, exclude_specs, "the download runs on one node (--node); -w/-x choose the nodes "
                                                 "--from-node copies to")
        _download(dep, deployment_file, directory, repo, revision, node, image, workers, dry_run, output_format,
                  accept_new_host_keys)


def _spread(dep, directory: str | None, targets: list, accept_new_host_keys: bool, dry_run: bool, encrypt: bool,
            per_node: bool, output_format: str) -> None:
    from ascend_run.cli.common import connected, err_console
    from ascend_run.cli.transfer import TransferProgress
    from ascend_run.steps.spread import spread_from_node
    from ascend_run.transport.chain import describe

    if not directory or not directory.startswith("/") or printable(directory) != directory:
        raise click.BadParameter("an absolute path on the servers is needed (or weights.dir), on one line",
                                 param_hint="--to")
    source = dep.nodes[0]
    if dry_run:
        chain = [source.name, *(n.name for n in targets)]
        line = comment(f"sha256 of every file under {directory} on {source.name} and on "
                       f"{', '.join(n.name for n in targets) or 'no other node'}; copy the ones that differ, "
                       f"node to node: {describe(chain)} (nodes that need nothing drop out)")
        if output_format == "json":
            echo_json({"dry_run": True, "directory": directory, "source": source.name,
                       "targets": [n.name for n in targets], "chain": chain, "lines": [line]})
        else:
            click.echo(line)
        return
    started = time.monotonic()
    console = err_console()
    with connected(dep, accept_new_host_keys, nodes=[source, *targets]) as cluster, \
            TransferProgress(console, f"spreading {directory}", per_node) as progress:
        copied = spread_from_node(cluster, directory, encrypt=encrypt, on_progress=progress.update,
                                  on_msg=lambda m: console.print(m))
    seconds = time.monotonic() - started
    if output_format == "json":
        echo_json({"directory": directory, "source": source.name, "copied": copied, "seconds": round(seconds, 3)})
    else:
        click.echo(f"{sum(copied.values())} file copies in {seconds:.1f} s", err=True)


def _download(dep, deployment_file: str, directory, repo, revision, node_choice, image, workers, dry_run,
              output_format, accept_new_host_keys) -> None:
    from ascend_run.cli.common import connected, err_console
    from ascend_run.steps import weights_download
    from ascend_run.steps.task import dry_run_lines

    req = weights_download.hub_fetch(dep, repo=repo, dest=directory, revision=revision, image=image, workers=workers)
    node = weights_download.download_node(dep, node_choice)
    if dry_run:
        # the proxy's password (registered when the file was read) shows as REDACTED-…
        lines = [secrets.redact(line) for line in dry_run_lines(node, weights_download.commands(dep, node, req))]
        if output_format == "json":
            echo_json({"dry_run": True, "node": node.name, "lines": lines})
        else:
            click.echo("\n".join(lines))
        return
    console = err_console()
    with connected(dep, accept_new_host_keys, nodes=[node]) as cluster, _FetchProgress(console, node.name) as bar:
        def on_log(line: str) -> None:
            if line.strip() and ADMIN_NOISE not in line:
                console.print(f"{node.name}: {line}", style="dim")
        done = weights_download.run_fetch(cluster.transport(node), dep, node, req, bar.on_event, on_log)
    if output_format == "json":
        echo_json({"node": node.name, **done})
        return
    what = f"{req.repo}@{str(done.get('commit', ''))[:12]}"
    if done.get("up_to_date"):
        click.echo(f"{node.name}: {req.dest} already holds {what} ({done['files']} files); nothing downloaded")
    else:
        click.echo(f"{node.name}: {req.dest} complete: {what}, {done['files']} files, "
                   f"{human_size(done['bytes'])}, "
                   f"{done['fetched']} fetched in {done.get('seconds', 0)} s")
    if len(dep.nodes) > 1:
        click.echo("next, to put it on every node (nodes that share the storage are found and skipped): "
                   + shlex.join(["ascend-run", "weights", "fetch", "-f", deployment_file, "--to", req.dest,
                                 "--from-node"]), err=True)


class _FetchProgress:
    """A files bar driven by the download script's events (plan, progress, done)."""

    def __init__(self, console, node: str) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.node = node
        self.console = console
        self.progress = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = None

    def __enter__(self) -> _FetchProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def on_event(self, event: dict) -> None:
        if event["event"] == "plan":
            self.console.print(f"{self.node}: {event['files']} files, {human_size(event['bytes'])} at commit "
                               f"{event['commit'][:12]}; {event['todo_files']} to fetch "
                               f"({human_size(event['todo_bytes'])}), {human_size(event['free'])} free")
            self.task = self.progress.add_task(f"{self.node} files", total=event["todo_files"])
        elif event["event"] == "progress" and self.task is not None:
            self.progress.update(self.task, completed=event["done"])


commands = [weights]
