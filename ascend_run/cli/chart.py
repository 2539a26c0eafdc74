"""`ascend-run chart values`: a deployment file as values for the Helm charts in charts/."""

from __future__ import annotations

from pathlib import Path

import click

from ascend_run.charts import CHART_KINDS, CHARTS
from ascend_run.charts.mindcluster import WORKLOADS
from ascend_run.charts.render import render_chart
from ascend_run.charts.values import chart_values, values_yaml
from ascend_run.cli import colour
from ascend_run.cli.common import deployment_option, echo_json, out_option, output_option, renamed_option
from ascend_run.inputs.deployment import load_deployment
from ascend_run.outputs import staged_output


@click.group("chart")
def chart_group() -> None:
    """Helm charts for Kubernetes (charts/ascend-train, charts/ascend-infer)."""


@chart_group.command("values")
@click.argument("kind", type=click.Choice(CHART_KINDS))
@deployment_option
@out_option("Write the values file here (default: stdout).")
@output_option
@click.option("--workload", type=click.Choice(WORKLOADS), default="job", show_default=True,
              help="What runs the training pods: an Indexed Job, or MindCluster's AscendJob (train chart).")
def values(kind: str, deployment_file: str, out: str | None, output_format: str, workload: str) -> None:
    """Turn a deployment file into values for the KIND chart (train or infer).

    Nodes become pods, and the image, env, mounts and msrun settings carry over, so the same file drives
    `ascend-run launch` over SSH and `helm install -f VALUES` on Kubernetes. With `--workload ascendjob`
    the training runs as MindCluster's AscendJob, and job.restarts becomes its fault rescheduling.
    The values are YAML with comments; with -o json, the same values as JSON (helm reads both).
    """
    if workload != "job" and kind != "train":
        raise click.BadParameter(f"{workload} is a workload of the train chart", param_hint="--workload")
    dep = load_deployment(deployment_file)
    data, notes = chart_values(dep, kind, workload)
    chart = CHARTS[kind].name
    flag = f" --workload {workload}" if workload != "job" else ""
    header = (f"Values for charts/{chart}, made by `ascend-run chart values {kind} -f {deployment_file}{flag}`.\n"
              f"helm install {dep.name} charts/{chart} -f THIS_FILE\n"
              f"(no charts/ here, as after pip install? ascend-run chart write {kind} --out charts/)")
    import json

    text = values_yaml(data, header) if output_format == "text" else \
        json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n"
    for note in notes:
        click.echo(colour.style(f"note: {note}", fg="yellow"), err=True)
    if out is None:
        click.echo(text, nl=False)
        return
    with staged_output() as staged:
        staged.add(out, text)
    click.echo(f"wrote {out} ({len(dep.nodes)} pod(s) x {data['npusPerNode']} NPUs, chart {chart})", err=True)


@chart_group.command("write")
@click.argument("kinds", nargs=-1, type=click.Choice(CHART_KINDS))
@out_option("Directory to write the chart directories into.", required=True, directory=True)
@renamed_option("--output-dir", "--out DIR")
@output_option
def write(kinds: tuple[str, ...], out: str, output_format: str) -> None:
    """Write the charts (all, or the KINDS given) into a directory.

    The same files as the repository's charts/, made from the installed kit's templates and profiles:
    what a pip-installed ascend-run offers instead of a checkout.
    """
    written = []
    with staged_output(out) as staged:
        for kind in kinds or CHART_KINDS:
            target = Path(out) / CHARTS[kind].name
            for rel, text in render_chart(kind).items():
                staged.add(target / rel, text)
            written.append(str(target))
    if output_format == "json":
        echo_json({"out": out, "charts": written})
        return
    for path in written:
        click.echo(f"wrote {path}")


commands = [chart_group]
