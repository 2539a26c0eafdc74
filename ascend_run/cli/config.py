"""`ascend-run config derive|check|presets`: MindFormers YAML made from the article's edits, checked before launch."""

from __future__ import annotations

from contextlib import ExitStack
from pathlib import Path

import click

from ascend_run.cli import colour
from ascend_run.cli.common import (
    echo_json,
    file_from_environment,
    file_option,
    out_option,
    output_option,
    renamed_option,
)
from ascend_run.inputs.text import printable
from ascend_run.mfconfig import (
    PRESETS,
    CheckReport,
    ConfigCheckFailed,
    JobContext,
    check_config,
    derive_config,
    transport_path_checker,
)

_target = [
    click.option("--npus", type=click.IntRange(min=1), help="Total NPUs of the job (instead of -f)."),
    file_option(required=False, help="Deployment file: NPU count, mounts (container paths -> server paths), "
                                     "working directory."),
]


def _target_options(func):
    for option in reversed(_target):
        func = option(func)
    return func


def _job_context(npus: int | None, deployment_file: str | None, ssh: bool, stack: ExitStack, *,
                 required: bool) -> JobContext:
    """What the checks know of the job: from -f (its NPUs, mounts, workdir; with --ssh a checker over SSH)
    or from --npus alone. A file from $ASCEND_RUN_FILE gives way to --npus."""
    if npus and deployment_file and file_from_environment():
        deployment_file = None
    if npus and deployment_file:
        raise click.UsageError("give --npus or -f, not both")
    if not deployment_file:
        if ssh:
            raise click.UsageError("--ssh needs a deployment file (-f)")
        if required and not npus:
            raise click.UsageError("give the job's size: --npus N or -f DEPLOYMENT")
        return JobContext(npus=npus)
    from ascend_run.inputs.deployment import load_deployment

    dep = load_deployment(deployment_file)
    job = JobContext.of(dep)
    if ssh:
        from ascend_run.transport.cluster import connect

        cluster = stack.enter_context(connect(dep))
        job = job.with_checker(transport_path_checker(cluster.transports))
    return job


@click.group("config")
def config_group() -> None:
    """Derive MindFormers configs from the article's edits, and check them before a launch."""


@config_group.command("derive")
@click.argument("base", type=click.Path(dir_okay=False))
@click.option("--preset", type=click.Choice(sorted(PRESETS)), help="A named set of edits (see `config presets`).")
@click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
              help="Change an existing key, e.g. parallel_config.data_parallel=4 (value read as YAML).")
@click.option("--add", "adds", multiple=True, metavar="KEY=VALUE", help="Add a key the base file does not have.")
@_target_options
@click.option("--data-path", help="article-1b: Megatron dataset prefix in the container.")
@click.option("--mindformers-dir", help="article-1b: the MindFormers checkout in the container.")
@click.option("--weights-dir", help="article-infer: the weights directory in the container.")
@click.option("--tokenizer", help="article-infer: tokenizer.json in the container (default: in the weights dir).")
@out_option("Where to write the derived YAML.", required=True)
@renamed_option("--out-file", "--out FILE")
@click.option("--force", is_flag=True, help="Write the file even if the check finds errors.")
@click.option("--ssh", is_flag=True, help="With -f: check dataset/checkpoint paths on every node over SSH.")
@output_option
def derive(base: str, preset: str | None, sets: tuple[str, ...], adds: tuple[str, ...], npus: int | None,
           deployment_file: str | None, data_path: str | None, mindformers_dir: str | None,
           weights_dir: str | None, tokenizer: str | None, out: str, force: bool, ssh: bool,
           output_format: str) -> None:
    """Write --out FILE from BASE with a preset and --set edits, keeping comments, order, quotes and anchors.

    Anchored values move with their aliases (data_parallel: &dp -> dataset_strategy), per-stage lists
    (offset, recompute) follow pipeline_stage, and the result is checked before it is written."""
    options = {"data_path": data_path, "mindformers_dir": mindformers_dir, "weights_dir": weights_dir,
               "tokenizer": tokenizer}
    with ExitStack() as stack:
        job = _job_context(npus, deployment_file, ssh, stack, required=False)
        try:
            result = derive_config(Path(base), preset=preset, preset_options=options, sets=sets, adds=adds,
                                   output=out, force=force, job=job)
        except ConfigCheckFailed as exc:
            _show_report(exc.report, output_format, header=f"not written: {out}")
            raise
    if output_format == "json":
        echo_json(result.as_dict())
        return
    for edit in result.edits:
        click.echo(f"  {edit.describe()}")
    for note in result.notes:
        click.echo(colour.style(f"  note: {note}", dim=True))
    click.echo(colour.style(f"wrote {result.written} ({result.layout} layout, {len(result.edits)} changes)",
                            fg="green"))
    _show_report(result.report, "text", header=None)


@config_group.command("check")
@click.argument("config", type=click.Path(dir_okay=False))
@_target_options
@click.option("--ssh", is_flag=True, help="With -f: check dataset/checkpoint paths on every node over SSH.")
@output_option
def check(config: str, npus: int | None, deployment_file: str | None, ssh: bool, output_format: str) -> None:
    """Validate CONFIG for a job of --npus N (or the deployment file's NPUs) before launching it.

    Exits 0 when there are no errors (warnings allowed), 2 with every error (key path, values, fix)."""
    with ExitStack() as stack:
        # a Path: a file name is never read as YAML text, even one holding a newline
        report = check_config(Path(config), _job_context(npus, deployment_file, ssh, stack, required=True))
    _show_report(report, output_format, header=None)
    report.raise_for_errors()


@config_group.command("presets")
@output_option
def presets(output_format: str) -> None:
    """List the presets `config derive --preset` knows."""
    if output_format == "json":
        echo_json([{"name": p.name, "summary": p.summary, "options": ["--" + o.replace("_", "-") for o in p.options]}
                   for p in PRESETS.values()])
        return
    for preset in PRESETS.values():
        opts = ", ".join("--" + o.replace("_", "-") for o in preset.options)
        click.echo(f"{preset.name:15} {preset.summary} (options: {opts})")


def _show_report(report: CheckReport, output_format: str, header: str | None) -> None:
    """Warnings, notes and the memory estimate on stdout; errors are raised and printed by the CLI's main."""
    if output_format == "json":
        echo_json(report.as_dict())
        return
    npus = f"{report.npus} NPUs" if report.npus else "NPU count not given"
    status = colour.style("ok" if report.ok else f"{len(report.errors)} error(s)",
                          fg="green" if report.ok else "red")
    click.echo(f"{status} {printable(report.source)} ({report.layout} layout, {npus})"
               + (f" — {printable(header)}" if header else ""))
    for issue in report.warnings:
        click.echo(colour.style(f"  warning: {issue}", fg="yellow"))
    for issue in report.notes:
        click.echo(colour.style(f"  note: {issue}", dim=True))
    if report.memory:
        click.echo(f"  memory: {report.memory.summary()}")


commands = [config_group]
