"""`sim_cluster`: simulated Atlas servers for end-to-end tests (network namespaces, sshd, dockerd, npu-smi).

    def test_something(sim_cluster):
        cluster = sim_cluster(nodes=2)                 # a SimCluster, already up; torn down after the test
        dep = load_deployment(cluster.deployment_file)
        cluster.set_link("sim-node-1", 0, "DOWN")      # or remove_device / fill_disk / set_health

Tests that use it need root; they are skipped (with the reason) otherwise. Mark them `@pytest.mark.slow`.
With `docker=True` (the default) the local Debian base image is built once per machine, cached, and
loaded into every node's daemon, so `docker run ascend-run/debian-base:bookworm …` works on each node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ascend_run.sim.base_image import TAG as BASE_IMAGE
from ascend_run.sim.cluster import REQUIRED, SimCluster

SSH_OPTIONS = ["-o", "GSSAPIAuthentication=no", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
               "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", "-o", "LogLevel=ERROR"]


def sim_unavailable(docker: bool) -> str | None:
    """Why simulated servers cannot run here, or None."""
    if os.geteuid() != 0:
        return "simulated servers need root (network namespaces, mounts)"
    tools = {**REQUIRED, **({"dockerd": "docker.io", "docker": "docker.io"} if docker else {})}
    missing = [f"{tool} ({pkg})" for tool, pkg in tools.items()
               if shutil.which(tool) is None and not Path("/usr/sbin", tool).exists()]
    return f"missing: {', '.join(missing)}; run scripts/install-sim-deps.sh" if missing else None


def ssh(cluster: SimCluster, node, command: str, check: bool = True, timeout: float = 120
        ) -> subprocess.CompletedProcess:
    """Run `command` on a simulated node with the system ssh client, host key verified (no TOFU)."""
    node = cluster.node(node) if isinstance(node, (int, str)) else node
    argv = ["ssh", *SSH_OPTIONS, "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-i", str(cluster.key_file),
            f"root@{node.address}", command]
    result = subprocess.run(argv, check=False, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{node.name}: `{command}` exited {result.returncode}\n{result.stderr}")
    return result


@pytest.fixture
def sim_cluster(request, tmp_path_factory):
    """Factory: `make_sim(nodes=3, profile="atlas-800t-a2", docker=True, image=BASE_IMAGE, bastion=False,
    link_rate=None)` -> SimCluster (link_rate e.g. "200mbit": every link shaped with tc)."""
    made: list[SimCluster] = []

    def make_sim(nodes: int = 3, profile: str = "atlas-800t-a2", docker: bool = True,
                 image: str | None = BASE_IMAGE, bastion: bool = False, link_rate: str | None = None) -> SimCluster:
        reason = sim_unavailable(docker)
        if reason:
            pytest.skip(reason)
        if docker and image == BASE_IMAGE:
            from ascend_run.sim.base_image import ensure_base_image

            ensure_base_image(request.getfixturevalue("docker_client"))
        # a short directory: the node daemons' sockets live under it (Unix socket paths are <= 107 bytes)
        cluster = SimCluster(tmp_path_factory.mktemp("sim"))
        made.append(cluster)
        source = request.getfixturevalue("docker_engine") if docker and image else None
        cluster.up(nodes, profile, docker=docker, image=image if docker else None, image_engine=source,
                   bastion=bastion, link_rate=link_rate)
        return cluster

    yield make_sim
    errors = []
    for cluster in made:
        try:
            cluster.down()
        except Exception as exc:  # noqa: BLE001  (tear down the others all the same)
            errors.append(exc)
    if errors:
        raise errors[0]
