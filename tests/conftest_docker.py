"""A real Docker engine for the tests: the one at DOCKER_HOST if it answers, else a private dockerd.

The private daemon keeps its data-root under /var/lib/ascend-run-test so image layers (and the locally
made Debian base) are reused across test runs; it is stopped at the end of the session.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

TEST_ROOT = Path("/var/lib/ascend-run-test")
SOCKET = "/run/ascend-run-test-docker.sock"


def _answers(base_url: str) -> bool:
    import docker

    try:
        docker.DockerClient(base_url=base_url, timeout=5).ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def docker_engine():
    """Yields the base URL of a running Docker engine, or skips with the reason."""
    if os.environ.get("DOCKER_HOST") and _answers(os.environ["DOCKER_HOST"]):
        yield os.environ["DOCKER_HOST"]
        return
    if shutil.which("dockerd") is None:
        pytest.skip("no Docker engine: apt-get install docker.io")
    if os.geteuid() != 0:
        pytest.skip("starting a private dockerd needs root")
    base_url = f"unix://{SOCKET}"
    proc = None
    if not _answers(base_url):
        TEST_ROOT.mkdir(parents=True, exist_ok=True)
        log = open(TEST_ROOT / "dockerd.log", "ab")
        proc = subprocess.Popen(
            ["dockerd", "--storage-driver=overlay2", "--iptables=false", "--bridge=none",
             f"--data-root={TEST_ROOT / 'docker'}", "--exec-root=/run/ascend-run-test-docker",
             "--pidfile=/run/ascend-run-test-docker.pid", "-H", base_url],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        for _ in range(300):
            if _answers(base_url):
                break
            if proc.poll() is not None:
                pytest.fail(f"dockerd exited {proc.returncode}; see {TEST_ROOT / 'dockerd.log'}")
            time.sleep(0.1)
        else:
            proc.kill()
            pytest.fail("dockerd did not answer within 30 s")
    yield base_url
    if proc is not None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        subprocess.run(["umount", "-R", "/run/ascend-run-test-docker"], capture_output=True)


@pytest.fixture(scope="session")
def docker_client(docker_engine):
    import docker

    return docker.DockerClient(base_url=docker_engine, timeout=900)
