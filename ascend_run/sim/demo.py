"""The main job on the embedded default: a local simulated 2-server Ascend cluster, end to end.

What a user does on real servers, on this machine: bring up the servers (`sim up`), build the train
image (on a local Debian base with PyPI's MindSpore standing in for the CANN base and the Ascend wheel),
ship it to every server, preflight, launch a real `msrun` data-parallel job across them (the CPU job in
examples/cpu-job stands in for run_mindformer.py), stream the logs, collect them, plot the loss, tear
down. Every step is the kit's own code path; only the NPUs are simulated.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ascend_run import require_shipped
from ascend_run.errors import SimError
from ascend_run.inputs.images import get_image
from ascend_run.render.dockerfile import render_build_context
from ascend_run.sim.filelock import held

CPU_MINDSPORE = "2.10.0"   # PyPI has 2.7-2.10 for Python 3.11 (the Debian base); 2.4.10 is not on PyPI
CPU_TAG = "ascend-run/deepseek-v3-{kind}:cpu-demo"
WHEELHOUSE = Path.home() / ".cache" / "ascend-run" / "wheelhouse"


def cpu_requirements() -> list[str]:
    """What the images pip-install, with the CPU MindSpore: the wheelhouse must hold all of it."""
    from ascend_run.inputs.images import all_images

    extra = sorted({req for spec in all_images().values() for req in spec.extra_pip})
    return [f"mindspore=={CPU_MINDSPORE}", *extra]


def ensure_wheelhouse(path: Path = WHEELHOUSE, requirements: list[str] | None = None,
                      build_sdists: bool = False) -> Path:
    """Download the requirements (default: the demo images') once; a marker names what the directory holds."""
    from ascend_run.engine.wheelhouse import download

    requirements = requirements or cpu_requirements()
    marker = path / ".requirements"
    path.mkdir(parents=True, exist_ok=True)
    with held(path.parent / f".{path.name}.lock"):  # two builds at once (two demos, parallel tests) download once
        if not marker.is_file() or marker.read_text() != "\n".join(requirements):
            download(requirements, path, build_sdists=build_sdists)
            marker.write_text("\n".join(requirements))
    return path


def cpu_build_args(kind: str, base_image: str, index_url: str) -> dict[str, str]:
    """The image's own build args with the CPU stand-ins: local base, PyPI MindSpore, no MindFormers download."""
    return {**get_image(kind).build_args(), "CANN_BASE_IMAGE": base_image, "MINDSPORE_VERSION": CPU_MINDSPORE,
            "MINDFORMERS_ARCHIVE_URL": "", "PIP_INDEX_URL": index_url}


def build_cpu_image(client, kind: str = "train", on_event: Callable = lambda e: None,
                    extra_args: dict[str, str] | None = None, tag: str | None = None,
                    wheelhouse: Path | None = None) -> str:
    """Build the generated KIND Dockerfile with the CPU stand-ins; returns the tag. A variant (the real
    MindFormers image, ascend_run/sim/mindformers.py) passes its own build args, tag and filled wheelhouse."""
    from ascend_run.engine.build import build_image
    from ascend_run.engine.wheelhouse import serve
    from ascend_run.sim.base_image import ensure_base_image

    base = ensure_base_image(client)
    tag = tag or CPU_TAG.format(kind=kind)
    with serve(wheelhouse or ensure_wheelhouse()) as index_url:
        args = {**cpu_build_args(kind, base, index_url), **(extra_args or {})}
        build_image(client, render_build_context(kind), tag, args, on_event, network_mode="host")
    return tag


def cpu_job_dir() -> Path:
    """examples/cpu-job: the CPU job standing in for run_mindformer.py (in the wheel as package data)."""
    return require_shipped("examples/cpu-job", SimError)


def demo_job_file(cluster_dir: Path, image: str, steps: int = 30) -> Path:
    """A job file that `extends:` the cluster's deployment file with the CPU training job."""
    path = cluster_dir / "demo-job.yaml"
    path.write_text(
        "# The demo job: examples/cpu-job/train_dp.py with msrun, one worker per simulated server.\n"
        "extends: cluster.yaml\n"
        "name: demo-train\n"
        f"image: {image}\n"
        "container: {name: ascend-run-demo}\n"
        "job:\n"
        "  launcher: msrun\n"
        f"  command: python /opt/ascend-run/cpu-job/train_dp.py --steps {steps}\n"
        "  local_workers: 1\n"
        "  master_port: 8118\n"
        "  cluster_timeout: 120\n"
        "  sync:\n"
        f"    - {{source: {cpu_job_dir()}, target: /opt/ascend-run/cpu-job}}\n")
    return path
