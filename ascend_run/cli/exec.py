"""`ascend-run exec`: one command on every node (or a subset), like `pdsh | dshbak -c`.

Connecting, running and disconnecting all happen inside the parallel part, one thread per node
(`transport.fanout.run_on_nodes`). Output is either grouped (nodes with identical output and exit code
are merged under one folded node list, unreachable nodes share one block) or prefixed per line with
`[node/rank]`. The exit status is
the worst of the nodes: 0 if every node succeeded, else the highest remote exit code, where an
unreachable node counts as 4 (the package's code for "node unreachable").
"""

from __future__ import annotations

import enum
import sys
import time

import click

from ascend_run.cli.common import (  # noqa: F401
    Seconds,
    deployment_option,
    echo_json,
    output_option,
    pick_nodes,
    split_node_specs,
    subset_options,
)
from ascend_run.errors import AscendRunError, TransportError
from ascend_run.inputs.text import terminal

UNREACHABLE_RC = TransportError.exit_code  # 4


class Layout(enum.Enum):
    GROUP = "group"
    PREFIX = "prefix"


class NodesFailed(AscendRunError):
    """Some nodes failed or were unreachable; the exit code is the worst of them (set per instance)."""

    def __init__(self, message: str, exit_code: int, fix: str | None = None) -> None:
        super().__init__(message, fix=fix)
        self.exit_code = exit_code


def node_rc(outcome) -> int:
    return outcome.value.rc if outcome.ok else UNREACHABLE_RC


def worst_rc(outcomes) -> int:
    return max((min(node_rc(o), 255) for o in outcomes), default=0)


def _error_text(error: AscendRunError) -> tuple[str, str | None]:
    """The error's message without the node prefix (the group header names the nodes), and its fix."""
    message = error.message
    host = getattr(error, "host", None)
    if host and message.startswith(f"{host}: "):
        message = message[len(host) + 2:]
    return message, error.fix


def group_outcomes(outcomes) -> list[tuple[list, tuple]]:
    """[(outcomes, (stdout, stderr, rc))] for reached nodes with identical results merged, in rank order."""
    groups: dict[tuple, list] = {}
    for outcome in outcomes:
        if outcome.ok:
            r = outcome.value
            groups.setdefault((r.stdout, r.stderr, r.rc), []).append(outcome)
    return [(members, key) for key, members in groups.items()]


def print_groups(outcomes, colour: bool) -> None:
    """dshbak -c style blocks; all unreachable nodes share one last block, one line each (their errors
    name addresses and fingerprints, so they never merge, and 128 blocks would bury the output)."""
    from ascend_run.cli.console import fold_names

    out = sys.stdout
    rule = "-" * 16

    def block(names: list[str], status: str, body: str, extra: str = "") -> None:
        header = fold_names(names) + status
        out.write(f"{rule}\n{click.style(header, fg='red') if colour and status else header}\n{rule}\n")
        for text, style in ((terminal(body), None), (terminal(extra), "yellow")):
            if text:
                out.write(click.style(text, fg=style) if colour and style else text)
                if not text.endswith("\n"):
                    out.write("\n")

    for members, (stdout, stderr, rc) in group_outcomes(outcomes):
        if rc == 0 and not stdout and not stderr:
            continue  # like dshbak: nodes that printed nothing and succeeded show only in the summary
        block([o.node.name for o in members], f"  exit {rc}" if rc else "", stdout, stderr)
    lost = [o for o in outcomes if not o.ok]
    if lost:
        block([o.node.name for o in lost], "  unreachable",
              "".join(f"{o.node.name}: {_error_text(o.error)[0]}\n" for o in lost))
    out.flush()


def summary(outcomes, seconds: float) -> tuple[str, str | None]:
    """One line for stderr, and the first distinct fix among unreachable nodes (printed once, not 128 times)."""
    from ascend_run.cli.console import fold_names

    failed = [o for o in outcomes if o.ok and o.value.rc != 0]
    lost = [o for o in outcomes if not o.ok]
    ok = len(outcomes) - len(failed) - len(lost)
    parts = [f"{ok} ok"]
    if failed:
        parts.append(f"{len(failed)} failed ({fold_names([o.node.name for o in failed])})")
    if lost:
        parts.append(f"{len(lost)} unreachable ({fold_names([o.node.name for o in lost])})")
    fixes = [o.error.fix for o in lost if o.error.fix]
    return f"exec: {', '.join(parts)} of {len(outcomes)} nodes in {seconds:.2f} s", (fixes[0] if fixes else None)


def as_json(argv: list[str], outcomes, seconds: float) -> dict:
    nodes = []
    for o in outcomes:
        entry = {"name": o.node.name, "rank": o.node.rank, "address": o.node.address, "rc": node_rc(o)}
        if o.ok:
            entry.update(stdout=o.value.stdout, stderr=o.value.stderr, error=None)
        else:
            message, fix = _error_text(o.error)
            entry.update(stdout="", stderr="", error=message, error_type=type(o.error).__name__, fix=fix)
        nodes.append(entry)
    return {"command": argv, "exit_code": worst_rc(outcomes), "seconds": round(seconds, 3), "nodes": nodes}


class Progress:
    """`exec: 37/128 nodes` on a terminal's stderr, rewritten in place with a carriage return (no escape
    sequence: the colour policy's "nothing but text" holds for it too); silent otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self.width = 0

    def __call__(self, outcome, done: int, total: int) -> None:
        if self.enabled:
            text = f"exec: {done}/{total} nodes"
            self.width = max(self.width, len(text))
            sys.stderr.write(f"\r{text}")
            sys.stderr.flush()

    def clear(self) -> None:
        if self.enabled and self.width:
            sys.stderr.write("\r" + " " * self.width + "\r")
            sys.stderr.flush()


# Options end at the first word of CMD (or at `--`): an unknown option before it is an error, never part of CMD.
@click.command("exec", context_settings={"allow_interspersed_args": False})
@deployment_option
@subset_options
@click.option("--parallel", default=256, show_default=True, type=click.IntRange(min=1),
              help="Nodes contacted at once.")
@click.option("--group", "layout", flag_value=Layout.GROUP.value, default=True,
              help="Merge nodes with identical output under one node list (like dshbak -c). The default.")
@click.option("--prefix", "layout", flag_value=Layout.PREFIX.value,
              help="Print every line with a [node/rank] prefix as it arrives (stdout to stdout, stderr to stderr).")
@click.option("--accept-new-host-keys", is_flag=True,
              help="Record host keys of nodes not yet in known_hosts (a changed key is still an error).")
@click.option("--timeout", type=Seconds(0, 7 * 86400, low_open=True), metavar="S",
              help="Stop the command on a node after S seconds (exit 124 there).")
@output_option
@click.option("--dry-run", is_flag=True, help="Print, per node, the exact command line that would run; run nothing.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED, metavar="-- CMD...")
def exec_command(deployment_file: str, node_specs: tuple[str, ...], exclude_specs: tuple[str, ...], parallel: int,
                 layout: str,
                 accept_new_host_keys: bool, timeout: float | None, output_format: str, dry_run: bool,
                 command: tuple[str, ...]) -> None:
    """Run CMD on every node of the deployment (or -w/-x) and show what each printed.

    CMD runs word for word, with no remote shell parsing; for pipes, globs or `;` use
    `-- sh -c 'CMD | ...'`. Options go before CMD (an unknown one is an error, not part of CMD).
    Exit status: 0 if every node succeeded, else the worst node's exit code (an unreachable node
    counts as 4).
    """
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.transport.fanout import run_on_nodes

    dep = load_deployment(deployment_file)
    nodes = pick_nodes(dep, node_specs, exclude_specs)
    argv = list(command)
    if dry_run:
        from ascend_run.transport.ssh import remote_command_line

        line = remote_command_line(argv, timeout=timeout)
        if output_format == "json":
            echo_json({"dry_run": True, "command": argv, "nodes": [
                {"name": n.name, "rank": n.rank, "ssh": n.ssh.describe(), "line": line} for n in nodes]})
            return
        for node in nodes:
            click.echo(f"{node.ssh.describe()} ({node.name}): {line}")
        return
    from ascend_run.cli import colour

    mode = Layout(layout)
    text = output_format == "text"
    progress = Progress(text and mode is Layout.GROUP and sys.stderr.isatty())
    printer = None
    splitters: dict = {}
    output_to = None
    if text and mode is Layout.PREFIX:
        from ascend_run.cli.console import LineSplitter, PrefixPrinter

        printer = PrefixPrinter([n.name for n in nodes], ranks={n.name: n.rank for n in nodes})

        def output_to(node):  # each line printed as it arrives, with its node's prefix
            out = LineSplitter(lambda line: printer.line(node.name, line))
            err = LineSplitter(lambda line: printer.line(node.name, line, stream=sys.stderr))
            splitters[node.name] = (out, err)
            return out.feed, err.feed

    def on_done(outcome, done: int, total: int) -> None:
        progress(outcome, done, total)
        if printer is not None:
            for splitter in splitters.get(outcome.node.name, ()):
                splitter.close()  # a last line without a newline
            if outcome.ok:
                printer.lines(outcome.node.name, outcome.value.stderr, stream=sys.stderr)
            else:
                printer.line(outcome.node.name, f"unreachable: {_error_text(outcome.error)[0]}", stream=sys.stderr)

    started = time.monotonic()
    try:
        outcomes = run_on_nodes(nodes, argv, timeout=timeout, accept_new=accept_new_host_keys,
                                parallelism=parallel, on_done=on_done, output_to=output_to)
    finally:
        progress.clear()
    seconds = time.monotonic() - started

    if not text:
        echo_json(as_json(argv, outcomes, seconds))
    elif mode is Layout.GROUP:
        print_groups(outcomes, colour=colour.enabled(sys.stdout))
    line, fix = summary(outcomes, seconds)
    code = worst_rc(outcomes)
    if code:
        raise NodesFailed(line.removeprefix("exec: "), code, fix=fix)
    if text:
        click.echo(terminal(line), err=True)


commands = [exec_command]
