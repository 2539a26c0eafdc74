"""A cluster behind a login node, end to end: only the ssh config knows the way.

The simulated servers sit on a bridge this machine has no route to; one more simulated server, the bastion,
has a leg on each side (`sim up --bastion`). The test writes what a user of such a cluster has in
~/.ssh/config (a `ProxyJump` and `Host` aliases) and a deployment file that names the servers by alias and
says nothing about the bastion. Then `exec`, `image ship`, `preflight` and a real msrun `launch` of the CPU
job work through it, and a changed host key on the bastion fails with an error naming it.
"""

from __future__ import annotations

import json
import os
import re
import socket
import textwrap

import pytest

from ascend_run.sim.demo import demo_job_file
from tests.conftest_e2e import needs_root_tools, run_cli
from tests.conftest_sshd import _ed25519_pair

pytestmark = [pytest.mark.slow, pytest.mark.root]


def ssh_config(cluster, known_hosts) -> str:
    bastion = cluster.bastion()
    zero, one = cluster.nodes()
    return textwrap.dedent(f"""\
        Host login
          HostName {bastion.address}
        Host ascend0
          HostName {zero.address}
        Host ascend1
          HostName {one.address}
        Host ascend*
          ProxyJump login
        Host *
          User root
          IdentityFile {cluster.key_file}
          UserKnownHostsFile {known_hosts}
        """)


@pytest.fixture(scope="module")
def behind_bastion(tmp_path_factory, docker_client, cpu_train_image):
    """(cluster, job file, env with ASCEND_RUN_SSH_CONFIG): 2 servers behind a bastion, no image on them yet."""
    needs_root_tools()
    from ascend_run.sim.cluster import SimCluster

    root = tmp_path_factory.mktemp("bastion")
    cluster = SimCluster(root / "cluster")
    cluster.up(2, "atlas-800t-a2", bastion=True)
    try:
        work = root / "job"
        work.mkdir()
        config = work / "ssh_config"
        config.write_text(ssh_config(cluster, cluster.known_hosts))
        (work / "cluster.yaml").write_text(textwrap.dedent(f"""\
            name: bastion-cluster
            profile: atlas-800t-a2
            image: {cpu_train_image}
            nodes:
              - {{address: ascend0, name: sim-node-0}}
              - {{address: ascend1, name: sim-node-1}}
            """))
        job = demo_job_file(work, cpu_train_image, steps=8)
        env = {**os.environ, "ASCEND_RUN_SSH_CONFIG": str(config)}
        yield cluster, job, env
    finally:
        cluster.down()


def test_the_servers_are_not_reachable_directly(behind_bastion):
    cluster, job, _ = behind_bastion
    for node in cluster.nodes():
        with pytest.raises(OSError):
            socket.create_connection((node.address, 22), timeout=3)
    text = job.read_text() + (job.parent / "cluster.yaml").read_text()
    assert "login" not in text and "proxy" not in text and "10.233" not in text and "ssh" not in text


def test_exec_ship_preflight_and_launch_through_the_bastion(behind_bastion, docker_engine):
    cluster, job, env = behind_bastion
    hosts = run_cli("exec", "-f", str(job), "--output", "json", "--", "sh", "-c", 'echo "$(hostname) $SSH_CONNECTION"',
                    env=env)
    assert hosts.returncode == 0, hosts.stderr
    lines = sorted(n["stdout"].strip() for n in json.loads(hosts.stdout)["nodes"])
    inner = cluster.record()["bastion"]["inner_address"]
    assert [line.split()[:2] for line in lines] == [["sim-node-0", inner], ["sim-node-1", inner]], \
        "each server sees its SSH client at the bastion's inner address"

    shipped = run_cli("image", "ship", "train", "-f", str(job), "--docker-host", docker_engine, "--per-node",
                      env=env, timeout=900)
    assert shipped.returncode == 0, shipped.stderr[-2000:]
    assert "shipped to 2 node(s)" in shipped.stdout
    # the relay chain: this machine feeds the first server over its SSH connection (through the bastion, the
    # relays' control connections too), the second pulls from the first on the servers' own network
    assert "(this machine) → sim-node-0 → sim-node-1" in shipped.stderr, shipped.stderr[-2000:]
    rows = {line.split()[0]: line.rstrip() for line in shipped.stderr.splitlines()
            if line.strip().startswith("sim-node-")}
    assert rows["sim-node-0"].split()[1] == rows["sim-node-1"].split()[1] == "done", rows
    assert rows["sim-node-0"].endswith("(this machine)") and rows["sim-node-1"].endswith("sim-node-0"), rows

    pre = run_cli("preflight", "-f", str(job), "--output", "json", env=env)
    assert pre.returncode == 0, pre.stdout[-2000:] + pre.stderr[-2000:]
    checks = json.loads(pre.stdout)["checks"]
    assert any(c["check"] == "ssh" and "via root@" in c["detail"] for c in checks)

    launched = run_cli("launch", "-f", str(job), "--skip-preflight", env=env, timeout=600)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-2000:]
    done = re.findall(r"\[(sim-node-\d)/(\d)\] rank (\d): done, world size (\d+), weights sha256 (\w+)",
                      launched.stdout)
    assert sorted((n, int(r)) for n, _, r, _, _ in done) == [("sim-node-0", 0), ("sim-node-1", 1)]
    assert len({digest for *_, digest in done}) == 1, "data parallel across the hidden servers"
    master = cluster.nodes()[0].address
    assert f"master {master}:8118" in launched.stderr, "master_ip is the server's address, not its alias"


def test_a_changed_host_key_on_the_bastion_is_refused_naming_it(behind_bastion, tmp_path):
    cluster, job, env = behind_bastion
    bastion = cluster.bastion()
    impostor = _ed25519_pair()[1].split()[1]
    known = tmp_path / "known_hosts"
    known.write_text("".join(
        f"{bastion.address} ssh-ed25519 {impostor}\n" if line.startswith(f"{bastion.address} ") else line + "\n"
        for line in cluster.known_hosts.read_text().splitlines()))
    config = tmp_path / "ssh_config"
    config.write_text(ssh_config(cluster, known))
    marker = "/tmp/ascend-run-bastion-changed-key"
    result = run_cli("exec", "-f", str(job), "--", "touch", marker, env={**env, "ASCEND_RUN_SSH_CONFIG": str(config)})
    assert result.returncode == 4, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "jump host login" in output and "CHANGED" in output and bastion.address in output
    for node in cluster.nodes():
        assert cluster.node_exec(node.index, ["sh", "-c", f"test -e {marker} && echo ran || true"]).stdout == ""
