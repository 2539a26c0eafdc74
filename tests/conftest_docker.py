"""A real Docker engine for the tests: DOCKER_HOST's if it answers, else a private dockerd.

The private daemon keeps its data-root under /var/lib/ascend-run-test, so image layers (and the locally
made Debian base) are reused across runs; it is stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from ascend_run.engine.local import ensure_engine
from ascend_run.errors import EngineError
from ascend_run.sim.filelock import held

TEST_ROOT = Path("/var/lib/ascend-run-test")
ENGINE_KEY = pytest.StashKey()  # the engine the xdist controller started (stopped at its end)


def _xdist_controller(config) -> bool:
    return not hasattr(config, "workerinput") and bool(getattr(config.option, "numprocesses", None))


def pytest_configure(config):
    """Under pytest-xdist (`make test` runs `-n`), the controller starts the engine once and names it in
    DOCKER_HOST for every worker: workers sharing one engine must not each start (and stop) their own."""
    if not _xdist_controller(config) or os.geteuid() != 0 or shutil.which("dockerd") is None:
        return
    try:
        engine = ensure_engine(TEST_ROOT)
    except EngineError:
        return  # the workers' fixture skips with the reason
    os.environ["DOCKER_HOST"] = engine.base_url
    config.stash[ENGINE_KEY] = engine


def pytest_unconfigure(config):
    engine = config.stash.get(ENGINE_KEY, None)
    if engine is not None:
        engine.stop()


def one_builder(name: str):
    """Held while the image `name` is built: xdist workers wanting the same image wait for the first build
    (then find its layers cached) instead of building it side by side."""
    return held(f"/tmp/ascend-run-test-build-{name}.lock")


@pytest.fixture(scope="session")
def docker_engine():
    """Yields the base URL of a running Docker engine, or skips with the reason."""
    if shutil.which("dockerd") is None and not os.environ.get("DOCKER_HOST"):
        pytest.skip("no Docker engine: apt-get install docker.io")
    try:
        engine = ensure_engine(TEST_ROOT)
    except EngineError as exc:
        pytest.skip(str(exc))
    yield engine.base_url
    engine.stop()


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    import docker

    return docker.DockerClient(base_url=docker_engine, timeout=900)
