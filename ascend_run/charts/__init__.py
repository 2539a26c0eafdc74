"""Helm charts for Kubernetes (`charts/ascend-train`, `charts/ascend-infer`), generated from the profiles.

The charts are committed files that a generator writes (`make generate`): `render` turns the Jinja
sources in `templates/charts/` plus a hardware profile and an image definition into chart files, `schema`
builds each chart's `values.schema.json`, and `values` turns a deployment file into values for a chart,
so the same file drives the SSH launcher and `helm install`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ChartKind:
    """One chart: its directory name, the image definition it defaults to, and what runs the pods."""

    kind: str        # "train" | "infer": also the image kind (ascend_run/data/images.yaml)
    name: str        # chart name and directory under charts/
    description: str
    pod_set: str     # what runs the pods, for comments in the generated helpers


CHARTS: dict[str, ChartKind] = {
    "train": ChartKind("train", "ascend-train",
                       "DeepSeek-V3 pre-training with MindSpore/MindFormers on Ascend NPUs: an Indexed Job "
                       "of N pods x 8 NPUs wired for msrun, optionally gang-scheduled by Volcano, or "
                       "MindCluster's AscendJob with fault rescheduling",
                       "an Indexed Job"),
    "infer": ChartKind("infer", "ascend-infer",
                       "DeepSeek-V3 multi-node inference with MindSpore/MindFormers on Ascend NPUs: a leader "
                       "and workers (StatefulSet, or LeaderWorkerSet) wired for msrun, an API Service on the leader",
                       "a StatefulSet or a LeaderWorkerSet"),
}
CHART_KINDS: tuple[str, ...] = tuple(CHARTS)


def chart_files() -> dict[str, str]:
    """Every generated chart file by repo-relative path; registered in `ascend_run.generate.GENERATORS`."""
    from ascend_run.charts.render import render_chart

    files: dict[str, str] = {}
    for kind in CHART_KINDS:
        files.update({f"charts/{CHARTS[kind].name}/{rel}": text for rel, text in render_chart(kind).items()})
    return files
