"""The pipelined broadcast on simulated servers with bandwidth-limited links (`sim up --link-rate`): the real
commands reach four servers node to node, a server lost mid-transfer strands nobody, nothing is left running.
The image ship is the one the end-to-end tests' cluster gets anyway (tests/conftest_e2e.py), on unshaped links.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from ascend_run.sim import network
from ascend_run.transport.relay import MARK
from tests.conftest_e2e import E2E_SHIP, run_cli
from tests.conftest_sim import ssh

WEIGHTS = "/data/model_path"
SUMS = f"cd {WEIGHTS} && find . -type f | sort | xargs sha256sum"


def make_weights(cluster, node, megabytes: int) -> None:
    """A multi-file weights directory: shards, a subdirectory, an empty file, a small JSON."""
    shard = megabytes // 4 * 1_000_000
    ssh(cluster, node, f"mkdir -p {WEIGHTS}/sub && for i in 1 2 3; do head -c {shard} /dev/urandom > "
                       f"{WEIGHTS}/model-0000$i.safetensors; done && head -c {shard} /dev/urandom > "
                       f"{WEIGHTS}/sub/extra.safetensors && : > {WEIGHTS}/empty && echo '{{}}' > {WEIGHTS}/config.json")


def relays_and_ports(cluster) -> dict[str, list[str]]:
    """Per server: relay processes, and listening TCP sockets other than sshd's (there must be none)."""
    left: dict[str, list[str]] = {}
    rec = cluster.record()
    for node in rec["nodes"]:
        found = []
        pids = subprocess.run(["ip", "netns", "pids", node["netns"]], capture_output=True, text=True).stdout.split()
        for pid in pids:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if MARK in cmd:
                found.append(f"relay pid {pid}")
        listening = subprocess.run(["ip", "netns", "exec", node["netns"], "ss", "-Hltn"], capture_output=True,
                                   text=True).stdout.splitlines()
        found += [line for line in listening if not line.split()[3].endswith(":22")]
        if found:
            left[node["name"]] = found
    return left


@pytest.mark.slow
@pytest.mark.root
def test_link_rate_shapes_every_server_and_this_machine(sim_cluster):
    cluster = sim_cluster(nodes=2, docker=False, link_rate="150mbit")
    rec, net = cluster.record(), cluster.net
    assert rec["link_rate_bits"] == 150_000_000
    shown = [subprocess.run(["tc", "qdisc", "show", "dev", net.bridge], capture_output=True, text=True).stdout]
    for i in range(2):
        shown.append(subprocess.run(["tc", "qdisc", "show", "dev", net.veth_host(i)], capture_output=True,
                                    text=True).stdout)
        shown.append(subprocess.run(["ip", "netns", "exec", net.netns(i), "tc", "qdisc", "show", "dev", "eth0"],
                                    capture_output=True, text=True).stdout)
    assert all("tbf" in text and "rate 150Mbit" in text for text in shown), shown


@pytest.mark.slow
@pytest.mark.root
def test_weights_from_node_reach_four_servers_node_to_node(sim_cluster):
    cluster = sim_cluster(nodes=5, docker=False, link_rate="200mbit")
    nodes = cluster.nodes()
    make_weights(cluster, nodes[0], 40)
    before = cluster.bridge_bytes()["sent"]
    done = run_cli("weights", "fetch", "-f", str(cluster.deployment_file), "--to", WEIGHTS, "--from-node",
                   "--per-node")
    assert done.returncode == 0, done.stderr
    sent = cluster.bridge_bytes()["sent"] - before
    expected = ssh(cluster, nodes[0], SUMS).stdout
    assert expected.count("\n") == 6
    for node in nodes[1:]:
        assert ssh(cluster, node, SUMS).stdout == expected
        assert f"{node.name}: copied 6 of 6 files, sha256 verified" in done.stderr
    assert " → ".join(n.name for n in nodes) in done.stderr  # --per-node: the chain and every server's state
    assert sent < 0.05 * 40_000_000, f"this machine sent {sent} bytes: the data went through it"
    assert relays_and_ports(cluster) == {}


@pytest.mark.slow
@pytest.mark.root
def test_a_server_lost_mid_transfer_strands_nobody_and_leaves_nothing_running(sim_cluster):
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.steps.spread import spread_from_node
    from ascend_run.transport.broadcast import BroadcastError
    from ascend_run.transport.cluster import connect

    cluster = sim_cluster(nodes=5, docker=False, link_rate="100mbit")
    nodes = cluster.nodes()
    make_weights(cluster, nodes[0], 60)
    victim = nodes[2]
    dep = load_deployment(cluster.deployment_file)
    killed: list[int] = []

    def kill_mid_way(progress) -> None:
        state = next(s for s in progress.nodes if s.name == victim.name)
        if not killed and state.bytes > 15_000_000:
            killed.append(state.bytes)
            cluster.kill_sshd(victim.name)  # its SSH sessions die with it; then its relay, as a crash would
            netns = cluster.record()["nodes"][victim.index]["netns"]
            for pid in subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split():
                if MARK.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    subprocess.run(["kill", "-9", pid], check=False)

    with connect(dep) as live, pytest.raises(BroadcastError) as err:
        spread_from_node(live, WEIGHTS, on_msg=lambda m: None, on_progress=kill_mid_way)
    assert killed and killed[0] < 60_000_000, "the transfer ended before the server could be lost"
    assert f"1 of 4 server(s) not served (3 complete and verified): {victim.name}: " in str(err.value)
    states = {s.name: s for s in err.value.states}
    assert [n for n, s in states.items() if not s.ok] == [victim.name]
    assert states[nodes[3].name].upstream == nodes[1].name  # the server behind it resumed from the one before
    expected = ssh(cluster, nodes[0], SUMS).stdout
    for node in (nodes[1], nodes[3], nodes[4]):
        assert ssh(cluster, node, SUMS).stdout == expected
        assert ssh(cluster, node, f"ls -A {WEIGHTS} | grep -c ascend-run-partial", check=False).stdout.strip() == "0"
    assert relays_and_ports(cluster) == {}


@pytest.mark.slow
@pytest.mark.root
def test_image_ship_reaches_four_servers_node_to_node(e2e_cluster, docker_engine, docker_client, cpu_train_image):
    """The end-to-end tests' cluster (3 servers and a spare) gets the CPU train image from `ascend-run image
    ship` (tests/conftest_e2e.py, E2E_SHIP): checked here instead of shipping the 1.8 GB image to four more
    simulated servers (whose `docker load` and clean-up cost CI minutes on one shared disk)."""
    cluster, job = e2e_cluster
    shipped, sent = E2E_SHIP["result"], E2E_SHIP["sent"]
    local = docker_client.images.get(cpu_train_image)
    assert "shipped to 4 node(s), already on 0" in shipped.stdout
    assert len(cluster.nodes()) == 4
    for node in cluster.nodes():
        host = cluster.docker_host(node.name)
        got = subprocess.run(["docker", "-H", host, "image", "inspect", "--format", "{{.Id}}", cpu_train_image],
                             capture_output=True, text=True).stdout.strip()
        assert got == local.id, node.name
        assert not list((node.layout.root / "docker" / "tmp").glob("ascend-run-image-*"))  # staged stream removed
    assert sent < 1.5 * local.attrs["Size"], f"this machine sent {sent} bytes for a {local.attrs['Size']} byte image"
    assert relays_and_ports(cluster) == {}
    again = run_cli("image", "ship", "train", "-f", str(job), "--docker-host", docker_engine)
    assert again.returncode == 0 and "shipped to 0 node(s), already on 4" in again.stdout


def test_link_rates_parse_and_shape_both_ways():
    assert network.parse_rate("200mbit") == network.parse_rate("200Mbit/s") == 200_000_000
    assert network.parse_rate("1.5Gbps") == 1_500_000_000 and network.parse_rate(64_000) == 64_000
    for bad in ("fast", "200", "0mbit", "1tbit"):
        with pytest.raises(ValueError):
            network.parse_rate(bad)
    net = network.SimNet("abcdef", 7)
    cmds = network.link_rate_up(net, [0, 1], 200_000_000)
    assert cmds[0][:5] == ["tc", "qdisc", "replace", "dev", net.bridge]
    assert ["tc", "qdisc", "replace", "dev", net.veth_host(1)] == cmds[3][:5]
    assert cmds[4][:3] == ["ip", "netns", "exec"] and "eth0" in cmds[4]
    assert all("200000000bit" in c and "tbf" in c for c in cmds)
    assert network.shape(10_000_000_000)[5] == str(10_000_000_000 // 8 // 100)  # a bucket of one tick at 10 Gbit/s
