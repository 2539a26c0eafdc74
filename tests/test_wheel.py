"""Installed from a wheel (not the checkout), the kit finds what it ships beside its code, and the demo runs.

The wheel is built from this checkout (`pip wheel`), installed into a fresh venv under /tmp (its
dependencies taken from this interpreter's site-packages, so nothing is downloaded but the build backend),
and run from a directory outside the checkout with no PYTHONPATH: what `pip install .` gives a user.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest_e2e import needs_root_tools

REPO = Path(__file__).resolve().parents[1]
SHIPPED = ["examples/cpu-job", "templates", "examples/pretrain-1b-single.yaml",  # force-included into ascend_run/
           "examples/infer-671b-4nodes.yaml"]                                      # (pyproject.toml)

pytestmark = pytest.mark.slow


def outside_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return {**env, **extra}


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> tuple[Path, Path]:
    """(venv, wheel) with the wheel installed."""
    root = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(root / "dist"), str(REPO)],
                   check=True, env=outside_env(), cwd=root)
    [wheel] = (root / "dist").glob("ascend_run-*.whl")
    venv = root / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)], check=True)
    subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "--no-index", str(wheel)], check=True,
                   env=outside_env(), cwd=root)
    return venv, wheel


def test_the_wheel_carries_one_copy_of_what_the_checkout_has(venv):
    _, wheel = venv
    names = set(zipfile.ZipFile(wheel).namelist())
    for directory in SHIPPED:
        top = REPO / directory
        for path in sorted(top.rglob("*")) if top.is_dir() else [top]:
            if path.is_file():
                inside = f"ascend_run/{path.relative_to(REPO)}"
                assert inside in names, f"{inside} is missing from the wheel"
                assert zipfile.ZipFile(wheel).read(inside) == path.read_bytes()
    assert not any(n.startswith(("examples/", "templates/")) for n in names), "nothing outside the package"


def test_installed_kit_finds_its_files_from_anywhere(venv, tmp_path):
    env_dir, _ = venv
    probe = ("import ascend_run; from ascend_run.sim.demo import cpu_job_dir; "
             "from ascend_run.render.dockerfile import render_build_context; "
             "print(ascend_run.__file__); print(cpu_job_dir()); print(len(render_build_context('train')['Dockerfile']))")
    out = subprocess.run([str(env_dir / "bin" / "python"), "-c", probe], capture_output=True, text=True,
                         env=outside_env(), cwd=tmp_path, check=True).stdout.splitlines()
    site = str(env_dir / "lib")
    assert out[0].startswith(site) and out[1].startswith(site), out  # the wheel's copy, not the checkout
    assert (Path(out[1]) / "train_dp.py").is_file() and int(out[2]) > 500
    help_text = subprocess.run([str(env_dir / "bin" / "ascend-run"), "demo", "--help"], capture_output=True,
                               text=True, env=outside_env(), cwd=tmp_path)
    assert help_text.returncode == 0 and "simulated cluster" in help_text.stdout


def test_init_then_validate_from_the_installed_wheel(venv, tmp_path):
    """The Quick tour's first step after `pip install`: a starter file from the wheel's examples, valid as written;
    and `image build --dry-run` prints nothing that only a checkout has."""
    env_dir, _ = venv
    script = (f"{env_dir / 'bin' / 'ascend-run'} init train --out t.yaml && "
              f"{env_dir / 'bin' / 'ascend-run'} validate -f t.yaml && "
              f"{env_dir / 'bin' / 'ascend-run'} init sim --out s.yaml && "
              f"{env_dir / 'bin' / 'ascend-run'} image build train --dry-run")
    result = subprocess.run(["sh", "-c", script], capture_output=True, text=True, env=outside_env(), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok t.yaml: job deepseek-v3-1b" in result.stdout
    assert str(REPO) not in (tmp_path / "s.yaml").read_text() + result.stdout  # the wheel's cpu-job, not ours
    assert "images/train" not in result.stdout and "ascend-run image render train --out" in result.stdout


@pytest.mark.root
def test_demo_from_the_installed_wheel(venv, tmp_path, docker_engine):
    """The whole demo: sim up, image build, ship, launch (real msrun), logs, loss, tear down."""
    needs_root_tools()
    env_dir, _ = venv
    run = subprocess.run([str(env_dir / "bin" / "ascend-run"), "demo", "--dir", str(tmp_path / "sim"), "--steps", "6"],
                         capture_output=True, text=True, env=outside_env(DOCKER_HOST=docker_engine), cwd=tmp_path,
                         timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "demo done" in run.stderr
    assert str(env_dir) in (tmp_path / "sim" / "demo-job.yaml").read_text(), "the job synced the wheel's cpu-job"
    assert list((tmp_path / "sim" / "logs").rglob("worker_*.log"))
    assert not (tmp_path / "sim" / "sim.json").exists(), "torn down"
