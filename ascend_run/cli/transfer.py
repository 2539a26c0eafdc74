"""Progress of a broadcast (`image ship`, `weights fetch --from-node`, `data prepare --spread`) for people:
one bar for the whole transfer, and every server's state on demand (`--per-node`, or `kill -USR1 PID` while
it runs, as with dd)."""

from __future__ import annotations

import signal
import threading

import click

from ascend_run.cli.common import human_size

encrypt_option = click.option(
    "--encrypt/--no-encrypt", default=None,
    help="Encrypt the server-to-server hops (TLS, a key made for this transfer), or not. Default: on when a "
         "server's cluster address is a public (globally routable) IP, off on a private cluster network, where "
         "the job's own traffic is not encrypted either. Every copy is sha256-verified either way, and relays "
         "serve only peers that hold this transfer's secret; without TLS the payload is readable on the wire.")


def encrypt_by_default(encrypt: bool | None, nodes) -> bool:
    """--encrypt/--no-encrypt as given; unset: on when any server's cluster address is a global IP (the link
    is not a private cluster network, docs/broadcast.md), off otherwise (RFC 1918, ULA, link-local, names)."""
    if encrypt is not None:
        return encrypt
    import ipaddress

    for node in nodes:
        try:
            if ipaddress.ip_address(node.cluster_address.split("%")[0]).is_global:
                return True
        except ValueError:
            continue  # a host name: its network is not known here
    return False
per_node_option = click.option(
    "--per-node", is_flag=True,
    help="Show every server's state under the bar (also printed once on SIGUSR1 while it runs).")


class TransferProgress:
    """A context manager whose `update(progress)` is the broadcast's `on_progress`."""

    def __init__(self, console, description: str, per_node: bool = False) -> None:
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TransferSpeedColumn,
        )

        self.console, self.per_node = console, per_node
        self.bar = Progress(TextColumn("{task.description}", style="bold", markup=False), BarColumn(), DownloadColumn(),
                            TransferSpeedColumn(), TimeElapsedColumn(), console=console, transient=True)
        self.task = self.bar.add_task(description, total=None)
        self.live = None
        self.last = None
        self._asked = threading.Event()
        self._previous = None

    def __enter__(self) -> TransferProgress:
        from rich.live import Live

        self.live = Live(self._renderable(), console=self.console, transient=True, refresh_per_second=4)
        self.live.__enter__()
        if threading.current_thread() is threading.main_thread() and hasattr(signal, "SIGUSR1"):
            self._previous = signal.signal(signal.SIGUSR1, lambda *_: self._asked.set())
        return self

    def __exit__(self, *exc) -> None:
        if self._previous is not None:
            signal.signal(signal.SIGUSR1, self._previous)
        self.live.__exit__(*exc)
        if self.per_node and self.last is not None:
            self.console.print(node_table(self.last))

    def update(self, progress) -> None:
        self.last = progress
        total = progress.size * len(progress.nodes) if progress.size else None
        self.bar.update(self.task, completed=progress.done_bytes, total=total)
        if self._asked.is_set():
            self._asked.clear()
            self.live.console.print(node_table(progress))
        self.live.update(self._renderable())

    def _renderable(self):
        from rich.console import Group

        if self.per_node and self.last is not None:
            return Group(self.bar, node_table(self.last))
        return self.bar


def node_table(progress):
    """One row per server: state, bytes, where its data comes from, and why it failed."""
    from rich.table import Table
    from rich.text import Text

    table = Table("server", "state", "received", "from", "", box=None, title=" → ".join(progress.chain)
                  if len(progress.chain) <= 8 else f"{progress.chain[0]} → {len(progress.chain) - 1} servers")
    colours = {"done": "green", "failed": "red", "receiving": "cyan"}
    for node in progress.nodes:
        share = f" ({100 * node.bytes / progress.size:.0f}%)" if progress.size else ""
        table.add_row(node.name, Text(node.phase, style=colours.get(node.phase, "")),
                      human_size(node.bytes) + share, node.upstream or "", node.error or "")
    return table
