"""`ascend-run chart values`: a deployment file as values for the Helm charts in charts/."""

from __future__ import annotations

from pathlib import Path

import click

from ascend_run.charts import CHART_KINDS, CHARTS
from ascend_run.charts.mindcluster import WORKLOADS
from ascend_run.charts.render import write_chart
from ascend_run.charts.values import chart_values, values_yaml
from ascend_run.cli.common import deployment_option
from ascend_run.inputs.deployment import load_deployment


@click.group("chart")
def chart_group() -> None:
    """Helm charts for Kubernetes (charts/ascend-train, charts/ascend-infer)."""


@chart_group.command("values")
@click.argument("kind", type=click.Choice(CHART_KINDS))
@deployment_option
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Write the values here (default: stdout).")
@click.option("--workload", type=click.Choice(WORKLOADS), default="job", show_default=True,
              help="What runs the training pods: an Indexed Job, or MindCluster's AscendJob (train chart).")
def values(kind: str, deployment_file: str, output: str | None, workload: str) -> None:
    """Turn a deployment file into values for the KIND chart (train or infer).

    Nodes become pods, and the image, env, mounts and msrun settings carry over, so the same file drives
    `ascend-run launch` over SSH and `helm install -f VALUES` on Kubernetes. With `--workload ascendjob`
    the training runs as MindCluster's AscendJob, and job.restarts becomes its fault rescheduling.
    """
    if workload != "job" and kind != "train":
        raise click.BadParameter(f"{workload} is a workload of the train chart", param_hint="--workload")
    dep = load_deployment(deployment_file)
    data, notes = chart_values(dep, kind, workload)
    chart = CHARTS[kind].name
    flag = f" --workload {workload}" if workload != "job" else ""
    header = (f"Values for charts/{chart}, made by `ascend-run chart values {kind} -f {deployment_file}{flag}`.\n"
              f"helm install {dep.name} charts/{chart} -f THIS_FILE")
    text = values_yaml(data, header)
    for note in notes:
        click.secho(f"note: {note}", fg="yellow", err=True)
    if output is None:
        click.echo(text, nl=False)
        return
    Path(output).write_text(text, encoding="utf-8")
    click.echo(f"wrote {output} ({len(dep.nodes)} pod(s) x {data['npusPerNode']} NPUs, chart {chart})", err=True)


@chart_group.command("write")
@click.argument("kinds", nargs=-1, type=click.Choice(CHART_KINDS))
@click.option("-o", "--output-dir", required=True, type=click.Path(file_okay=False),
              help="Directory to write the chart directories into.")
def write(kinds: tuple[str, ...], output_dir: str) -> None:
    """Write the charts (all, or the KINDS given) into a directory.

    The same files as the repository's charts/, made from the installed kit's templates and profiles:
    what a pip-installed ascend-run offers instead of a checkout.
    """
    for kind in kinds or CHART_KINDS:
        click.echo(f"wrote {write_chart(kind, Path(output_dir))}")


commands = [chart_group]
