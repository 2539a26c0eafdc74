"""Render a chart directory from `templates/charts/<chart>/` (Jinja) and a hardware profile.

Chart files are full of Helm's own `{{ … }}`, so the Jinja sources here use square delimiters instead:
`[[ value ]]`, `[% block %]`, `[# comment #]`. Everything the profile and the image definition know (NPU
resource name, driver hostPath mounts, shm size, node labels, image) lands in `values.yaml` as defaults,
where a user can see and override it; the Helm templates stay generic. `values.schema.json` is built
in Python (`schema.py`): JSON is data, not text to template.
"""

from __future__ import annotations

import json
from pathlib import Path

import jinja2

from ascend_run import __version__
from ascend_run.charts import CHARTS
from ascend_run.charts.mindcluster import template_facts
from ascend_run.charts.naming import split_image, volume_name
from ascend_run.charts.schema import values_schema
from ascend_run.errors import TemplateError
from ascend_run.inputs.images import get_image
from ascend_run.inputs.profiles import HardwareProfile, get_profile
from ascend_run.render.templating import environment, template_root

CHART_TEMPLATES = "charts"
SHARED = "_shared"


def host_mounts(profile: HardwareProfile) -> list[dict]:
    """The profile's driver/tool mounts as hostPath volume entries, named after their container path."""
    taken: set[str] = set()
    return [{"name": volume_name(m.target, taken, prefix="host-"), "hostPath": m.source, "mountPath": m.target,
             "readOnly": m.read_only} for m in profile.mounts]


def chart_context(kind: str) -> dict:
    """Everything the chart sources may use: chart identity, profile facts, default image."""
    chart = CHARTS[kind]
    image = get_image(kind)
    profile = get_profile(image.profile)
    repository, tag, digest = split_image(image.published)
    return {
        "chart": chart,
        "kind": kind,
        "version": __version__,
        "image": image,
        "image_repository": repository,
        "image_tag": tag,
        "image_digest": digest,
        "profile": profile,
        "host_mounts": host_mounts(profile),
        # The article runs the train container with `-u root`; the infer one keeps the image's user.
        "run_as_root": profile.container.user == "root",
        # Names MindCluster's Ascend Operator looks for (the train chart's ascendjob workload).
        "mindcluster": template_facts(),
    }


def _sources(chart_name: str) -> list[str]:
    root = template_root() / CHART_TEMPLATES / chart_name
    if not root.is_dir():
        raise TemplateError(f"chart sources {root} are missing")
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.j2") if p.is_file())


def render_chart(kind: str) -> dict[str, str]:
    """Files of `charts/<chart>/` by path inside the chart. What `make generate` writes."""
    chart = CHARTS[kind]
    context = chart_context(kind)
    env = environment(helm_safe=True)
    files: dict[str, str] = {}
    for rel in _sources(chart.name):
        name = f"{CHART_TEMPLATES}/{chart.name}/{rel}"
        try:
            files[rel.removesuffix(".j2")] = env.get_template(name).render(**context)
        except jinja2.UndefinedError as exc:
            raise TemplateError(f"template {name!r}: {exc.message}") from None
    schema = values_schema(kind, context["profile"])
    files["values.schema.json"] = json.dumps(schema, indent=2) + "\n"
    return files


def write_chart(kind: str, directory: Path) -> Path:
    """Write one chart into `directory/<chart>/` (for `helm` runs outside the repo, e.g. in tests)."""
    target = directory / CHARTS[kind].name
    for rel, text in render_chart(kind).items():
        path = target / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return target
