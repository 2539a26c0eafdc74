"""Options and output helpers shared by the command modules.

One meaning per option, on every command:
  -f/--file PATH     the deployment file; also before the command (`ascend-run -f job.yaml status`), default
                     $ASCEND_RUN_FILE. Precedence: after the command, before it, the environment.
  -o/--output FMT    the report's format, text or json; never a path.
  --out PATH         where a command writes the files or directory it makes (charts, scripts, configs, logs).
  -w/--nodes HOSTS   only these nodes (names, addresses, ranks, pdsh ranges); -x/--exclude HOSTS: not these.
  --dry-run          print exactly what would run, run nothing.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
from collections.abc import Iterator
from typing import Any

import click
from click.core import ParameterSource

from ascend_run.errors import ConfigError

FILE_ENV = "ASCEND_RUN_FILE"
FORMATS = ("text", "json")


# --- option values that look like options ----------------------------------------------------------------

def not_option_like(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    """A path option's callback: `--out -o` took `-o` as the path (click does); that is a mistake, said with
    both names, not a file named `-o`. A path that really starts with '-' is written ./-o."""
    values = value if isinstance(value, tuple) else (value,)
    for item in values:
        if isinstance(item, str) and item.startswith("-") and item != "-":
            name = param.opts[-1] if param is not None and param.opts else "the option"
            raise click.UsageError(f"{name} was given {item!r}, which is an option, as its value: {name} needs a "
                                   f"path (for a file named {item!r} write ./{item})", ctx)
    return value


# --- -f/--file ---------------------------------------------------------------------------------------------

def _resolve_file(required: bool):
    """The option's callback: its own value, else the one given before the command, else $ASCEND_RUN_FILE.
    Records where the value came from (ctx.meta) for commands where another option competes with it."""

    def callback(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
        source = "option"
        if value is None:
            root = ctx.find_root()
            value = root.params.get("deployment_file") if root is not ctx else None
            source = "global"
            if root is not ctx and root.get_parameter_source("deployment_file") == \
                    ParameterSource.ENVIRONMENT:
                source = "env"
        if value is None and os.environ.get(FILE_ENV):
            value, source = os.environ[FILE_ENV], "env"
        if value is None:
            if required:
                raise click.UsageError(f"no deployment file: give -f FILE (before or after the command), or set "
                                       f"{FILE_ENV}", ctx)
            return None
        ctx.meta["ascend_run.file_source"] = source
        if source != "env":
            not_option_like(ctx, param, value)
        return value

    return callback


def file_option(required: bool = True, help: str = "The deployment file (YAML) describing the cluster and the job."):
    """-f/--file; `required` ones fail with one message naming the three ways to give it."""
    return click.option("-f", "--file", "deployment_file", type=click.Path(dir_okay=False), default=None,
                        callback=_resolve_file(required), metavar="FILE",
                        help=f"{help} Default: the -f given before the command, else ${FILE_ENV}.")


deployment_option = file_option()


def file_from_environment(ctx: click.Context | None = None) -> bool:
    """Whether the deployment file of this command came from $ASCEND_RUN_FILE (not typed on this command line)."""
    ctx = ctx or click.get_current_context()
    return ctx.meta.get("ascend_run.file_source") == "env"


# --- -o/--output: the format; --out: the path -----------------------------------------------------------------

class ReportFormat(click.Choice):
    """text|json, and for anything else the message that -o is no longer a path (it used to be on some
    commands), with the spelling that writes there now."""

    def __init__(self) -> None:
        super().__init__(FORMATS)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value in FORMATS:
            return value
        writes = ctx is not None and any(p.name == "out" for p in ctx.command.params)
        hint = (f"; to write {value} use --out {shlex.quote(str(value))}" if writes else
                "; this command writes no file")
        self.fail(f"{value!r} is not a report format: -o/--output is the format, text or json, on every command "
                  f"(it no longer names a file or directory){hint}", param, ctx)


output_option = click.option(
    "-o", "--output", "output_format", type=ReportFormat(), default="text", show_default=True, metavar="text|json",
    help="Report format; json is for scripts.")


def out_option(what: str, required: bool = False, directory: bool = False):
    """--out PATH: the one name, on every command, for the file or directory a command writes."""
    kind = click.Path(file_okay=False) if directory else click.Path(dir_okay=False)
    return click.option("--out", "out", type=kind, required=required, metavar="DIR" if directory else "FILE",
                        help=what, callback=not_option_like)


def renamed_option(old: str, new: str, takes_value: bool = True):
    """A hidden option for a spelling that changed meaning or name: using it fails, saying the new spelling."""

    def refuse(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        if value not in (None, False, ()):
            raise click.UsageError(f"{old} is now {new}", ctx)

    return click.option(old, f"renamed_{old.strip('-').replace('-', '_')}", hidden=True, expose_value=False,
                        is_flag=not takes_value, default=None if takes_value else False, callback=refuse)


class Seconds(click.ParamType):
    """A duration option: a finite number of seconds in [low, high] (low excluded when `low_open`); `nan`,
    `inf` and 1e308 are refused with the range, as they are in the deployment file."""

    name = "seconds"

    def __init__(self, low: float, high: float, low_open: bool = False) -> None:
        self.low, self.high, self.low_open = low, high, low_open

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        else:
            try:
                number = float(str(value).strip())
            except ValueError:
                self.fail(f"{value!r} is not a number of seconds", param, ctx)
        from ascend_run.inputs.common import seconds

        try:
            return seconds(number, param.opts[0] if param is not None else "the value", self.low, self.high,
                           self.low_open)
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


dry_run_option = click.option(
    "--dry-run", is_flag=True, help="Print exactly what would run, and run nothing.")

accept_new_option = click.option(
    "--accept-new-host-keys", is_flag=True,
    help="Record host keys of nodes not yet in known_hosts (a changed key is still an error).")

parallel_option = click.option(
    "--parallel", default=256, show_default=True, type=click.IntRange(min=1),
    help="Nodes contacted at once (connections and remote commands).")


# --- -w/--nodes and -x/--exclude ----------------------------------------------------------------------------

nodes_option = click.option(
    "-w", "--nodes", "node_specs", multiple=True, metavar="HOSTS",
    help="Only these nodes: names, addresses or ranks, comma-separated, pdsh ranges allowed "
         "(n[0-3,7],10.0.0.[9-12]). Repeatable.")
exclude_option = click.option(
    "-x", "--exclude", "exclude_specs", multiple=True, metavar="HOSTS",
    help="Not these nodes (same syntax as -w; names not in the file are ignored, as pdsh does). Repeatable.")


def subset_options(func):
    """-w/--nodes and -x/--exclude."""
    return nodes_option(exclude_option(func))


def split_node_specs(specs: tuple[str, ...] | list[str]) -> list[str]:
    """`--nodes n[0-3,7],n9 --nodes 12` → ["n[0-3,7]", "n9", "12"]: commas inside brackets are ranges."""
    tokens: list[str] = []
    for spec in specs:
        depth, current = 0, ""
        for char in spec:
            depth += {"[": 1, "]": -1}.get(char, 0)
            if char == "," and depth == 0:
                tokens.append(current)
                current = ""
            else:
                current += char
        tokens.append(current)
    return [t.strip() for t in tokens if t.strip()]


def pick_nodes(dep, node_specs=(), exclude_specs=(), pool=None) -> list:
    """The nodes -w/-x choose among `pool` (default: the file's nodes), in the file's order.

    -w names must exist (a typo is an error naming it); -x patterns are expanded with the same host-range
    syntax and may name nodes that are not there. Leaving no node at all is an error.
    """
    from ascend_run.inputs import hostrange

    among = dep if pool is None else dep.with_nodes(pool)
    wanted = split_node_specs(node_specs)
    if node_specs and not wanted:  # `-w "$EMPTY"` must not mean every node
        raise ConfigError(f"{shown_specs(node_specs)} names no node", key="-w/--nodes",
                          fix="give names, addresses, ranks or ranges (n[0-3]); leave -w out for every node")
    chosen = among.select(wanted if node_specs else None)
    if exclude_specs:
        tokens = split_node_specs(exclude_specs)
        if not tokens:
            raise ConfigError(f"{shown_specs(exclude_specs)} names no node", key="-x/--exclude",
                              fix="give names, addresses, ranks or ranges (n[0-3]); leave -x out to exclude none")
        try:  # matched, never expanded: -x n[0-99999999999] costs what -x n7 costs
            matchers = [hostrange.Matcher(token) for token in dict.fromkeys(tokens)]
        except ValueError as exc:
            raise ConfigError(str(exc), key="-x/--exclude",
                              fix="write a name, an address, a rank or a range such as node[001-004]") from None
        keys = {key: None for n in chosen for key in (n.name, n.address, str(n.rank))}
        if hostrange.selection_work(matchers, len(keys)) > hostrange.MAX_SELECTION_WORK:
            raise ConfigError(f"{len(matchers):,} patterns over {len(keys):,} names are more than "
                              f"{hostrange.MAX_SELECTION_WORK:,} names to look at", key="-x/--exclude",
                              fix="exclude with fewer, wider ranges")
        excluded = {key for match in matchers for key in hostrange.names_in(match, keys)}
        chosen = [n for n in chosen if not ({n.name, n.address, str(n.rank)} & excluded)]
        if not chosen:
            raise ConfigError("-w/-x leave no node to act on", file=str(dep.path), key="nodes",
                              fix="exclude fewer nodes")
    return chosen


def shown_specs(specs) -> str:
    """The -w/-x values as given, for a message (control characters escaped)."""
    from ascend_run.inputs.text import shown

    return ", ".join(shown(spec) for spec in specs)


def subset_given(node_specs, exclude_specs) -> bool:
    return bool(node_specs or exclude_specs)


def refuse_subset(node_specs, exclude_specs, why: str) -> None:
    """For commands that act on the whole job: -w/-x are accepted by the parser (one vocabulary everywhere)
    but refused with the reason."""
    if subset_given(node_specs, exclude_specs):
        raise click.UsageError(f"-w/--nodes and -x/--exclude do not apply here: {why}")


# --- connections and output ---------------------------------------------------------------------------------

@contextlib.contextmanager
def connected(dep, accept_new: bool = False, parallel: int = 256, nodes: list | None = None) -> Iterator:
    """A `transport.cluster.Cluster` of every node (or `nodes`), closed at the end; raises for the first node
    that cannot be reached, naming the others."""
    from ascend_run.transport.cluster import connect

    with connect(dep, accept_new=accept_new, parallelism=parallel, nodes=nodes) as cluster:
        yield cluster


@contextlib.contextmanager
def writing(path: str, option: str = "--out") -> Iterator[None]:
    """Where the command writes its output (`--out`): an OSError there (/proc/…, a read-only disk, a file where
    a directory should be) is a bad argument, exit 2, naming the path, not a traceback."""
    try:
        yield
    except OSError as exc:
        where = str(exc.filename) if exc.filename else path
        raise ConfigError(f"cannot write there: {exc.strerror or exc}", file=where, key=option,
                          fix=f"give {option} a place you can write to") from None


def human_size(size: int) -> str:
    """Bytes for people: 180 bytes, 50.0 MB, 1400.00 GB."""
    if size < 100_000:
        return f"{size} bytes"
    return f"{size / 1e6:.1f} MB" if size < 1e8 else f"{size / 1e9:.2f} GB"


def echo_json(data: Any) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False, default=str))


def console(stderr: bool = False):
    """A rich console under the colour policy (cli/colour.py): no highlighting, no markup, so values print as
    they are; tables are not squeezed to 80 columns when output is not a terminal."""
    from ascend_run.cli import colour

    return colour.console(stderr=stderr)


def err_console():
    """The console for progress, notices and warnings: stderr, so stdout stays the command's result."""
    return console(stderr=True)


def styled(*parts):
    """A rich Text from (text, style) pairs and plain strings: styling without markup, so no value is parsed."""
    from rich.text import Text

    return Text.assemble(*parts)
