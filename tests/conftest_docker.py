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

TEST_ROOT = Path("/var/lib/ascend-run-test")


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
