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
JOB_META = "ascend_run.job"  # ctx.meta: the job --job NAME chose (a supervise.joblist.JobEntry)
FORMATS = ("text", "json", "yaml")
YAML_META = "ascend_run.yaml"  # ctx.meta: -o yaml was asked (the command builds its JSON report; echo_json writes YAML)
REPORTED = {"done": False}     # a structured report went to stdout in this run (main then prints no error object)


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
        job = ctx.meta.get(JOB_META)
        if job is not None:
            if value is not None:
                raise click.UsageError("give the job by -f FILE or by --job NAME, not both", ctx)
            ctx.meta["ascend_run.file_source"] = "job"
            return job.deployment
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


def _choose_job(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is not None:
        from ascend_run.supervise.joblist import find_job

        ctx.meta[JOB_META] = find_job(value)
    return value


job_option = click.option(
    "--job", "job_name", metavar="NAME", is_eager=True, expose_value=False, callback=_choose_job,
    help="The job by its name (or its key, as `ascend-run jobs` lists them) instead of -f: for a job launched "
         "from another folder, by a teammate sharing ASCEND_RUN_STATE_DIR, or whose file has moved.")


def load_chosen(deployment_file: str):
    """The deployment of -f FILE, or of --job NAME (its file, or the copy taken at launch if the file moved)."""
    from ascend_run.inputs.deployment import load_deployment

    ctx = click.get_current_context(silent=True)
    job = ctx.meta.get(JOB_META) if ctx is not None else None
    if job is not None:
        from ascend_run.supervise.joblist import deployment_of

        return deployment_of(job)
    return load_deployment(deployment_file)


def file_from_environment(ctx: click.Context | None = None) -> bool:
    """Whether the deployment file of this command came from $ASCEND_RUN_FILE (not typed on this command line)."""
    ctx = ctx or click.get_current_context()
    return ctx.meta.get("ascend_run.file_source") == "env"


# --- -o/--output: the format; --out: the path -----------------------------------------------------------------

class ReportFormat(click.Choice):
    """text|json|yaml (and wide where a table has more columns to show), and for anything else the message that
    -o is no longer a path (it used to be on some commands), with the spelling that writes there now.

    yaml is json for the command (it builds the same report) and YAML for the printer (echo_json)."""

    def __init__(self, wide: bool = False) -> None:
        super().__init__((*FORMATS, "wide") if wide else FORMATS)
        self.wide = wide

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        if value == "yaml":
            if ctx is not None:
                ctx.meta[YAML_META] = True
            return "json"
        if value in self.choices:
            return value
        if value == "wide":
            self.fail("'wide' is for the tables of `status` and `jobs`; here use text, json or yaml", param, ctx)
        writes = ctx is not None and any(p.name == "out" for p in ctx.command.params)
        hint = (f"; to write {value} use --out {shlex.quote(str(value))}" if writes else
                "; this command writes no file")
        self.fail(f"{value!r} is not a report format: -o/--output is the format, text or json, on every command "
                  f"(it no longer names a file or directory){hint}", param, ctx)


output_option = click.option(
    "-o", "--output", "output_format", type=ReportFormat(), default="text", show_default=True,
    metavar="text|json|yaml", help="Report format; json and yaml are for scripts.")

wide_output_option = click.option(
    "-o", "--output", "output_format", type=ReportFormat(wide=True), default="text", show_default=True,
    metavar="text|wide|json|yaml", help="Report format: wide is the table with more columns; json and yaml are "
                                        "for scripts.")


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

def complete_nodes(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Shell completion of -w/-x: the names of the deployment file's nodes and spares (-f on the command line,
    before the command, or $ASCEND_RUN_FILE), after the last comma of what is typed so far."""
    from click.shell_completion import CompletionItem

    path = ctx.params.get("deployment_file") or ctx.find_root().params.get("deployment_file") or \
        os.environ.get(FILE_ENV)
    if not path:
        return []
    try:
        from ascend_run.inputs.deployment import load_deployment

        dep = load_deployment(path)
    except Exception:  # noqa: BLE001 - a file being edited completes nothing, and says nothing
        return []
    done, _, typed = incomplete.rpartition(",")
    head = f"{done}," if done else ""
    chosen = set(done.split(","))
    return [CompletionItem(head + n.name) for n in (*dep.nodes, *dep.spares)
            if n.name.startswith(typed) and n.name not in chosen]


nodes_option = click.option(
    "-w", "--nodes", "node_specs", multiple=True, metavar="HOSTS", shell_complete=complete_nodes,
    help="Only these nodes: names, addresses or ranks, comma-separated, pdsh ranges allowed "
         "(n[0-3,7],10.0.0.[9-12]). Repeatable.")
exclude_option = click.option(
    "-x", "--exclude", "exclude_specs", multiple=True, metavar="HOSTS", shell_complete=complete_nodes,
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


# --- an option's value that is itself an option ------------------------------------------------------------

def option_names(command: click.Command) -> set[str]:
    """Every spelling of the command's options (and --help), for the check below."""
    names = {"-h", "--help"}
    for param in command.params:
        if isinstance(param, click.Option):
            names.update(param.opts)
            names.update(param.secondary_opts)
    return names


def _refuse_option_as_value(original):
    """An option callback that first refuses a value that is another option of the same command: `logs -f --tail
    50` would read `--tail` as the file and fail later with a message about `50`. Names both options."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        names = option_names(ctx.command) | (option_names(ctx.find_root().command) if ctx.parent else set())
        for item in value if isinstance(value, (tuple, list)) else (value,):
            if isinstance(item, str) and item.split("=", 1)[0] in names:
                opts = "/".join(param.opts)
                kubectl = (" (here -f is the deployment file; kubectl's `logs -f` is --follow)"
                           if param.name == "deployment_file" else "")
                raise click.UsageError(f"{opts} got {item!r} as its value, and {item.split('=', 1)[0]} is an option: "
                                       f"give {opts} its {param.metavar or 'value'} first, e.g. "
                                       f"{param.opts[0]} {param.metavar or 'VALUE'} {item}{kubectl}", ctx)
        return original(ctx, param, value) if original is not None else value

    return callback


def refuse_options_as_values(command: click.Command, path: str | None = None) -> click.Command:
    """Give every value-taking option of `command` (and of its subcommands) the check above, every command
    --color (accepted after the command too), and its examples at the end of --help (cli/examples.py); once
    per command. `path`: its words after `ascend-run` ("image build")."""
    if getattr(command, "_ascend_run_guarded", False):
        return command
    command._ascend_run_guarded = True  # type: ignore[attr-defined]
    from ascend_run.cli.examples import epilog

    path = command.name if path is None else path
    command.epilog = epilog(path or "") or command.epilog
    if not isinstance(command, click.Group) and not any(p.name == "color" for p in command.params):
        from ascend_run.cli import colour

        colour.colour_option(after_command=True)(command)  # --color after the command, too
    for param in command.params:
        if isinstance(param, click.Option) and not param.is_flag and not param.count:
            param.callback = _refuse_option_as_value(param.callback)
    if isinstance(command, click.Group):
        for name, sub in command.commands.items():
            refuse_options_as_values(sub, f"{path} {name}".strip())
    return command


# --- connections and output ---------------------------------------------------------------------------------

@contextlib.contextmanager
def connected(dep, accept_new: bool = False, parallel: int = 256, nodes: list | None = None) -> Iterator:
    """A `transport.cluster.Cluster` of every node (or `nodes`), closed at the end; raises for the first node
    that cannot be reached, naming the others."""
    from ascend_run.transport.cluster import connect

    with connect(dep, accept_new=accept_new, parallelism=parallel, nodes=nodes) as cluster:
        yield cluster


def no_server_reached(names: list[str], what: str):
    """The error (exit 4, as everywhere a node cannot be reached) for a report that reached none of its servers:
    printed after the report, so a script gets both the per-server reasons and a code it can trust."""
    from ascend_run.errors import TransportError

    return TransportError(f"{what}: no server could be asked ({', '.join(names)}; why, per server, above)",
                          fix="check the servers are up and reachable over SSH (ascend-run exec -f FILE -- true)")


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


def yaml_asked() -> bool:
    ctx = click.get_current_context(silent=True)
    return bool(ctx is not None and ctx.meta.get(YAML_META))


def to_yaml(data: Any) -> str:
    """Plain YAML of a JSON-able report (values that are not JSON become strings, as in JSON)."""
    import io

    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip dumper: keys in the report's order, as JSON prints them
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.width = 1 << 16  # a value stays on its line
    stream = io.StringIO()
    yaml.dump(json.loads(json.dumps(data, default=str)), stream)
    return stream.getvalue()


def echo_record(data: Any) -> None:
    """One record of a stream (`logs --follow`, `events --follow`): a JSON line, or under -o yaml one YAML
    document (`---` first), flushed at once."""
    if yaml_asked():
        click.echo("---\n" + to_yaml(data), nl=False)
    else:
        click.echo(json.dumps(data, ensure_ascii=False, default=str))
    import sys

    sys.stdout.flush()


def echo_json(data: Any, yaml: bool | None = None) -> None:
    """The report on stdout: JSON, or YAML under -o yaml."""
    REPORTED["done"] = True
    if yaml_asked() if yaml is None else yaml:
        click.echo(to_yaml(data), nl=False)
    else:
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
