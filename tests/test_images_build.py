"""The generated Dockerfiles and docker run scripts against a real Docker engine.

The CANN base image cannot be pulled here: the builds swap it for a locally made Debian image (Python
3.11) and override the MindSpore pin to one PyPI has for that Python (2.4.10 is not on PyPI). Packages
come from a local wheelhouse index, as on an air-gapped cluster.
"""

from __future__ import annotations

import json
import subprocess

import pytest

from ascend_run.inputs.deployment import load_deployment
from ascend_run.render.docker_run import render_script
from ascend_run.sim.demo import CPU_MINDSPORE
from tests.conftest_docker import docker_client  # noqa: F401  (fixture)
from tests.conftest_sim import ssh
from tests.test_docker_run import ARTICLE_TRAIN_MOUNTS

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("kind", ["train", "infer"])
def test_generated_dockerfile_builds_and_imports_mindspore(docker_client, request, kind):  # noqa: F811
    tag = request.getfixturevalue(f"cpu_{kind}_image")  # built by the kit's build path (tests/conftest_e2e.py)
    image = docker_client.images.get(tag)
    assert image.attrs["Config"]["User"] == "1000:1000", "the image runs as the driver's HwHiAiUser, not root"
    assert image.labels["io.ascend-run.kind"] == kind
    out = docker_client.containers.run(tag, ["python", "-c", "import mindspore; print(mindspore.__version__)"],
                                       remove=True, network_mode="host")
    assert out.decode().strip().splitlines()[-1] == CPU_MINDSPORE
    if kind == "infer":
        docker_client.containers.run(tag, ["python", "-c", "import openmind_hub"], remove=True, network_mode="host")


def test_run_script_on_a_simulated_server(sim_cluster, tmp_path):
    """run-<node>.sh runs for real on a simulated 800T A2: the article's devices and mounts are there."""
    cluster = sim_cluster(nodes=2)
    dep = load_deployment(cluster.deployment_file)
    node = dep.nodes[1]
    script = tmp_path / f"run-{node.name}.sh"
    script.write_text(render_script(dep, node))
    remote = "/tmp/run-node.sh"
    subprocess.run(["scp", "-q", "-o", "GSSAPIAuthentication=no", "-o", f"UserKnownHostsFile={cluster.known_hosts}",
                    "-o", "StrictHostKeyChecking=yes", "-i", str(cluster.key_file), str(script),
                    f"root@{node.address}:{remote}"], check=True)
    ssh(cluster, node.name, f"bash {remote}")
    name = dep.container_name
    devices = " ".join(dep.profile.device_paths())
    listing = ssh(cluster, node.name, f"docker exec {name} ls -l {devices}").stdout.splitlines()
    assert len(listing) == 11 and all(line.startswith("c") for line in listing), listing
    assert ssh(cluster, node.name, f"docker exec {name} hostname").stdout.strip() == node.hostname
    mounts = json.loads(ssh(cluster, node.name, f"docker inspect --format '{{{{json .Mounts}}}}' {name}").stdout)
    by_target = {m["Destination"]: m["Source"] for m in mounts}
    for target, source in ARTICLE_TRAIN_MOUNTS.items():
        assert by_target[target] == source
    tools = ssh(cluster, node.name, f"docker exec {name} ls /usr/local/bin/npu-smi /usr/local/bin/hccn_tool "
                                    "/etc/hccn.conf /etc/ascend_install.info /usr/local/Ascend/driver/version.info")
    assert len(tools.stdout.split()) == 5
    ssh(cluster, node.name, f"docker rm -f {name}")
