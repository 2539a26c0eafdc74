"""`ascend-run weights fetch` from a (stand-in) hub on a simulated Atlas 800I A2 server, then spread.

The download runs where the article runs it: inside the infer image (built from the generated
Dockerfile; it pins openmind-hub 1.3.0) on node 0, reaching the hub through an HTTPS proxy. The hub is
`tests/hub_standin.py` on the simulated network's gateway, since modelers.cn is out of reach here.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import time

import pytest
from ruamel.yaml import YAML

from ascend_run.inputs.deployment import load_deployment
from ascend_run.steps.ship_image import ship_image
from ascend_run.transport.cluster import connect
from tests.conftest_e2e import CLI, REPO, run_cli
from tests.conftest_sim import ssh
from tests.hub_standin import StandinHub

pytestmark = pytest.mark.slow

DEST = "/data/weights/DeepSeek-V3"
FILES = {
    "config.json": b'{"model_type": "deepseek_v3"}',
    "tokenizer.json": b'{"model": {"vocab": {}}}',
    "model-00001-of-00002.safetensors": os.urandom(3_000_000),
    "weights/model-00002-of-00002.safetensors": os.urandom(2_000_000),
}
SUMS = f"cd {DEST} && find . -type f ! -name '.ascend-run-*' | sort | xargs sha256sum"


def expected_sums() -> str:
    return "".join(f"{hashlib.sha256(FILES[n]).hexdigest()}  ./{n}\n" for n in sorted(FILES))


def job_file(cluster, image: str, proxy: str, name: str = "weights.yaml"):
    path = cluster.dir / name
    with path.open("w") as fh:
        YAML().dump({"extends": "cluster.yaml", "image": image,
                     "weights": {"dir": DEST, "https_proxy": proxy, "ca_bundle": "/data/hub-ca.pem"}}, fh)
    return path


def wait_for(condition, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def leftovers(cluster, node) -> str:
    return subprocess.run(["docker", "-H", f"unix://{node.layout.docker_socket}", "ps", "-a", "--filter",
                           "label=io.ascend-run.task", "--format", "{{.Names}}"],
                          capture_output=True, text=True).stdout.strip()


def test_download_in_the_image_on_node0_then_spread(sim_cluster, cpu_infer_image, docker_client, tmp_path):
    cluster = sim_cluster(nodes=3, profile="atlas-800i-a2", docker=True, image=None)
    nodes = cluster.nodes()
    with StandinHub(FILES, tmp_path / "certs", bind=cluster.net.gateway) as hub:
        ssh(cluster, nodes[0], f"cat > /data/hub-ca.pem <<'PEM'\n{hub.ca_pem.read_text()}PEM")
        job = job_file(cluster, cpu_infer_image, hub.proxy_url)
        dep = load_deployment(job)
        with connect(dep, nodes=[dep.nodes[0]]) as live:
            ship_image(live, docker_client, cpu_infer_image, nodes=[dep.nodes[0]])

        cluster.fill_disk(nodes[0].name, "/data", free="1M")
        short = run_cli("weights", "fetch", "-f", str(job))
        assert short.returncode == 8, short.stdout + short.stderr
        assert f"{nodes[0].name}: MindSpore-Lab/DeepSeek-V3 needs 5.0 MB more under /data/weights" in short.stderr
        assert "nothing was downloaded" in short.stderr and hub.downloads() == []
        assert ssh(cluster, nodes[0], "ls -A /data/weights").stdout.strip() == ""
        cluster.free_disk(nodes[0].name, "/data")

        first = run_cli("weights", "fetch", "-f", str(job))
        assert first.returncode == 0, first.stdout + first.stderr
        assert f"{nodes[0].name}: {DEST} complete: MindSpore-Lab/DeepSeek-V3@" in first.stdout
        assert "--from-node" in first.stderr  # the next step is printed
        assert ssh(cluster, nodes[0], SUMS).stdout == expected_sums()
        assert ssh(cluster, nodes[0], f"test -f {DEST}/.ascend-run-complete.json && "
                                      f"test ! -e {DEST}.partial && stat -c %a {DEST}/config.json").stdout == "644\n"
        assert len(hub.downloads()) == len(FILES)
        assert leftovers(cluster, nodes[0]) == ""

        again = run_cli("weights", "fetch", "-f", str(job))
        assert again.returncode == 0 and "already holds" in again.stdout
        assert len(hub.downloads()) == len(FILES)

        spread = run_cli("weights", "fetch", "-f", str(job), "--from-node")
        assert spread.returncode == 0, spread.stderr
        for node in nodes[1:]:
            assert ssh(cluster, node, SUMS).stdout == expected_sums()
            assert ssh(cluster, node, f"test -f {DEST}/.ascend-run-complete.json", check=False).returncode == 0

        # the download outlives its client: kill the CLI (a closed laptop), the container goes on, and
        # running the command again follows it instead of starting over
        ssh(cluster, nodes[0], f"rm -rf {DEST}")
        hub.delay_per_mib = 2.0  # ~6 s for the 3 MB shard
        before = len(hub.downloads())
        lost = subprocess.Popen([*CLI, "weights", "fetch", "-f", str(job)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: len(hub.downloads()) > before)
        lost.kill()
        lost.wait()
        assert leftovers(cluster, nodes[0]) == "ascend-run-sim-weights"
        status = run_cli("status", "-f", str(job), "--output", "json")
        steps = {row["node"]: row["steps"] for row in json.loads(status.stdout)["nodes"]}
        assert steps[nodes[0].name][0].startswith("ascend-run-sim-weights (Up") and steps[nodes[1].name] == []
        followed = run_cli("weights", "fetch", "-f", str(job))
        assert followed.returncode == 0, followed.stdout + followed.stderr
        assert "already running (started earlier); following it" in followed.stderr
        assert f"{DEST} complete" in followed.stdout
        assert len(hub.downloads()) - before == len(FILES)  # each file fetched once: not restarted
        assert ssh(cluster, nodes[0], SUMS).stdout == expected_sums() and leftovers(cluster, nodes[0]) == ""

        # Ctrl-C stops the download on the node; what arrived stays in DEST.partial for the next run
        ssh(cluster, nodes[0], f"rm -rf {DEST}")
        before = len(hub.downloads())
        stopped = subprocess.Popen([*CLI, "weights", "fetch", "-f", str(job)], cwd=REPO,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        wait_for(lambda: len(hub.downloads()) > before)
        stopped.send_signal(signal.SIGINT)
        assert stopped.wait(timeout=60) == 130
        assert leftovers(cluster, nodes[0]) == ""
        assert ssh(cluster, nodes[0], f"test ! -e {DEST} && test -d {DEST}.partial", check=False).returncode == 0
        hub.delay_per_mib = 0.0

        unreachable = job_file(cluster, cpu_infer_image, f"http://{cluster.net.gateway}:9", "down.yaml")
        ssh(cluster, nodes[0], f"rm -rf {DEST} {DEST}.partial")
        down = run_cli("weights", "fetch", "-f", str(unreachable))
        assert down.returncode == 8
        assert f"{nodes[0].name}: cannot reach the hub https://modelers.cn" in down.stderr
        assert ssh(cluster, nodes[0], "ls -A /data/weights").stdout.strip() == ""
        assert leftovers(cluster, nodes[0]) == ""
