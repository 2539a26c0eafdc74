"""End-to-end fixtures: a simulated cluster of 3 servers and 1 spare with the CPU train image shipped by the kit.

Built once per test session: the train image from the generated Dockerfile (local Debian base standing
in for CANN, PyPI MindSpore), shipped to every server and the spare with `image ship`'s code path.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ascend_run.sim.demo import build_cpu_image, demo_job_file
from tests.conftest_docker import one_builder

REPO = Path(__file__).resolve().parents[1]


def needs_root_tools():
    if os.geteuid() != 0:
        pytest.skip("the simulated cluster needs root")
    for tool in ("ip", "unshare", "dockerd", "ssh-keygen"):
        if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists():
            pytest.skip(f"{tool} missing (scripts/install.sh)")


@pytest.fixture(scope="session")
def cpu_train_image(docker_client):
    with one_builder("train"):
        return build_cpu_image(docker_client, "train")


@pytest.fixture(scope="session")
def cpu_infer_image(docker_client):
    """The infer image (it pins openmind-hub) built the same way: the weights download runs in it."""
    with one_builder("infer"):
        return build_cpu_image(docker_client, "infer")


@pytest.fixture(scope="session")
def mindformers_image(docker_client):
    """The real MindFormers 1.9.0 + MindSpore 2.9.0 CPU image (ascend_run/sim/mindformers.py)."""
    from ascend_run.sim.mindformers import build_image

    with one_builder("mindformers"):
        return build_image(docker_client)


# What `ascend-run image ship` printed and the bytes this machine sent while e2e_cluster shipped its image:
# test_broadcast_sim.py checks them rather than shipping the 1.8 GB image to four more servers.
E2E_SHIP: dict = {}


@pytest.fixture(scope="session")
def e2e_cluster(tmp_path_factory, docker_engine, docker_client, cpu_train_image):
    """(SimCluster, job file): 3 nodes (sim-node-0..2) and a spare (sim-node-3), all with the train image,
    shipped with the `ascend-run image ship` command line (its output in E2E_SHIP)."""
    needs_root_tools()
    from ascend_run.sim.cluster import SimCluster

    cluster = SimCluster(tmp_path_factory.mktemp("e2e") / "cluster")
    cluster.up(4, "atlas-800t-a2", spares=1)
    try:
        job = demo_job_file(cluster.dir, cpu_train_image, steps=12)
        before = cluster.bridge_bytes()["sent"]
        shipped = run_cli("image", "ship", "train", "-f", str(job), "--docker-host", docker_engine, timeout=1800)
        assert shipped.returncode == 0, shipped.stdout + shipped.stderr[-3000:]
        E2E_SHIP.update(result=shipped, sent=cluster.bridge_bytes()["sent"] - before)
        yield cluster, job
    finally:
        cluster.down()


@pytest.fixture(scope="session")
def supervisor_cluster(tmp_path_factory, docker_engine, docker_client, cpu_train_image):
    """The same shape as e2e_cluster for the supervisor's tests, which run on another worker under xdist: the
    image is loaded by `sim up` (one `docker save`, loaded into the four daemons) rather than shipped again,
    as `image ship` is proven on e2e_cluster."""
    needs_root_tools()
    from ascend_run.sim.cluster import SimCluster

    cluster = SimCluster(tmp_path_factory.mktemp("e2e") / "cluster")
    cluster.up(4, "atlas-800t-a2", spares=1, image=cpu_train_image, image_engine=docker_engine)
    try:
        yield cluster, demo_job_file(cluster.dir, cpu_train_image, steps=12)
    finally:
        cluster.down()


# The real command line, run from this checkout's package (not whichever `ascend-run` is installed).
CLI = [sys.executable, "-m", "ascend_run"]


def run_cli(*args: str, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """The `ascend-run` command line, as a user runs it."""
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=timeout, cwd=REPO, **kwargs)


def job_leftovers(cluster, job_name: str) -> dict[str, list[str]]:
    """Containers of the job (any state) and msrun/python processes, per node: what must never survive."""
    left: dict[str, list[str]] = {}
    for node in cluster.nodes():
        sock = f"unix://{node.layout.docker_socket}"
        ps = subprocess.run(["docker", "-H", sock, "ps", "-a", "--filter", f"label=io.ascend-run.job={job_name}",
                             "--format", "{{.Names}} {{.State}}"], capture_output=True, text=True)
        found = [line for line in ps.stdout.splitlines() if line.strip()]
        pids = subprocess.run(["ip", "netns", "pids", cluster.record()["nodes"][node.index]["netns"]],
                              capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except OSError:
                continue
            if "msrun" in cmd or "train_dp.py" in cmd:
                found.append(f"pid {pid}: {cmd[:80]}")
        if found:
            left[node.name] = found
    return left


def wait_no_leftovers(cluster, job_name: str, timeout: float, job_file: Path | None = None) -> float:
    """Seconds until nothing of the job is left anywhere; fails after `timeout` (with the supervisor's events
    when `job_file` is given: what it did to stop the job)."""
    start = time.monotonic()
    while True:
        left = job_leftovers(cluster, job_name)
        if not left:
            return time.monotonic() - start
        if time.monotonic() - start > timeout:
            events = run_cli("events", "-f", str(job_file)).stdout[-3000:] if job_file else ""
            pytest.fail(f"left behind after {timeout:.0f} s: {left}\n{events}")
        time.sleep(0.5)
