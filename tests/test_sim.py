"""`ascend-run sim`: simulated Atlas servers that look like real ones over SSH, and leave nothing behind.

The slow tests need root: each server is a network namespace with its own hostname, mount namespace,
/dev/davinci* stand-ins, sshd and dockerd. The fast tests cover the pure parts (names, addresses, stand-in
tool output) and the refusals (not root, foreign sim.json).
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from ascend_run.cli import cli
from ascend_run.errors import SimError
from ascend_run.inputs.deployment import load_deployment
from ascend_run.inputs.profiles import get_profile
from ascend_run.npu.tools import parse_hccn_conf, parse_npu_smi_info
from ascend_run.sim import network, tools
from ascend_run.sim.cluster import SimCluster, descendants
from ascend_run.sim.node import NodeLayout, write_node_files
from ascend_run.transport.fanout import run_on_nodes
from tests.conftest_sim import sim_unavailable, ssh

# --- helpers ------------------------------------------------------------------------------------------


def snapshot(cluster: SimCluster) -> dict:
    """What a cluster made, from the kernel's point of view, to check after `down`."""
    rec = cluster.record()
    pids: set[int] = set()
    for netns in [n["netns"] for n in rec["nodes"]] + ([rec["bastion"]["netns"]] if rec.get("bastion") else []):
        out = subprocess.run(["ip", "netns", "pids", netns], check=False, capture_output=True, text=True).stdout
        pids.update(int(p) for p in out.split())
    return {"tag": rec["tag"], "third_octet": rec["third_octet"], "pids": descendants(pids),
            "dir": str(cluster.dir)}


def _running(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except OSError:
        return False


def assert_nothing_left(snap: dict) -> None:
    """No namespace, link, address, process or mount of the cluster in `snap` is left."""
    tag, directory = snap["tag"], snap["dir"]
    netns = subprocess.run(["ip", "netns", "list"], check=False, capture_output=True, text=True).stdout
    assert f"ar-{tag}-" not in netns, f"network namespaces left:\n{netns}"
    links = [name for name in os.listdir("/sys/class/net") if tag in name]
    assert not links, f"bridge/veths left: {links}"
    if "third_octet" in snap:
        addrs = subprocess.run(["ip", "-4", "-o", "addr"], check=False, capture_output=True, text=True).stdout
        assert f"10.233.{snap['third_octet']}." not in addrs
        routes = subprocess.run(["ip", "route"], check=False, capture_output=True, text=True).stdout
        assert f"10.232.{snap['third_octet']}." not in routes, "the bastion's unreachable route is gone"
    alive = [p for p in snap.get("pids", ()) if _running(p)]
    assert not alive, f"processes left: {alive}"
    for entry in Path("/proc").iterdir():  # no sshd/dockerd/containerd anywhere still naming this directory
        if entry.name.isdigit() and _running(int(entry.name)):
            try:
                cmdline = Path(entry, "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            assert directory not in cmdline, f"process {entry.name} left: {cmdline}"
    for mounts in ("/proc/self/mountinfo", "/proc/1/mountinfo"):
        assert directory not in Path(mounts).read_text(), f"a mount under {directory} left"
    assert not Path(directory, "sim.json").exists()


# --- end to end ---------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.root
def test_three_servers_over_ssh_then_nothing_left(sim_cluster):
    host_had_davinci = Path("/dev/davinci3").exists()
    cluster = sim_cluster(nodes=3)
    nodes = cluster.nodes()

    assert all(row["sshd"] and row["docker"] for row in cluster.status())
    images = subprocess.run(["docker", "-H", cluster.docker_host(1), "image", "ls", "--format", "{{.Repository}}"],
                            check=True, capture_output=True, text=True).stdout
    assert "ascend-run/debian-base" in images, "the base image was loaded into every node's daemon"

    hostnames = [ssh(cluster, n, "hostname").stdout.strip() for n in nodes]
    assert hostnames == ["sim-node-0", "sim-node-1", "sim-node-2"]

    confs = [ssh(cluster, n, "cat /etc/hccn.conf").stdout for n in nodes]
    assert len(set(confs)) == 3
    device_ips = [ip for conf in confs for ip in parse_hccn_conf(conf).values()]
    assert len(device_ips) == 24 and len(set(device_ips)) == 24, "every NPU of every node has its own address"

    smi = ssh(cluster, nodes[0], "npu-smi info").stdout
    listed = parse_npu_smi_info(smi)
    assert sorted(listed) == list(range(8)) and all(s.healthy for s in listed.values())
    assert "HBM-Usage(MB)" in smi and "Process id" in smi

    ran = ssh(cluster, nodes[1], "docker run --rm --device=/dev/davinci3 ascend-run/debian-base:bookworm "
                                 "ls -l /dev/davinci3").stdout
    assert ran.startswith("c") and ran.rstrip().endswith("/dev/davinci3")
    assert Path("/dev/davinci3").exists() == host_had_davinci, "the host's /dev is untouched"

    def link() -> str:
        return ssh(cluster, nodes[2], "/usr/local/Ascend/driver/tools/hccn_tool -i 0 -link -g").stdout.strip()

    assert link() == "link status: UP"
    cluster.set_link("sim-node-2", 0, "DOWN")
    assert link() == "link status: DOWN"
    assert ssh(cluster, nodes[0], "/usr/local/Ascend/driver/tools/hccn_tool -i 0 -link -g").stdout.strip() \
        == "link status: UP", "only node 3 changed"

    # the article's container (the profile's devices and mounts) sees the node's NPUs and their state
    profile = get_profile("atlas-800t-a2")
    flags = " ".join([f"--device={d}" for d in profile.device_paths()]
                     + [f"-v {m.source}:{m.target}" + (":ro" if m.read_only else "") for m in profile.mounts])
    inside = ssh(cluster, nodes[2], f"docker run --rm {flags} ascend-run/debian-base:bookworm "
                                    "sh -c 'npu-smi info; hccn_tool -i 0 -link -g'").stdout
    assert sorted(parse_npu_smi_info(inside)) == list(range(8))
    assert inside.rstrip().endswith("link status: DOWN")

    # a server goes down with whatever runs on it: a detached container must not outlive the cluster
    ssh(cluster, nodes[1], "docker run -d ascend-run/debian-base:bookworm sleep infinity")
    snap = snapshot(cluster)
    cluster.down()
    assert_nothing_left(snap)


@pytest.mark.slow
@pytest.mark.root
def test_servers_behind_a_bastion_are_reachable_only_through_it(sim_cluster, tmp_path):
    cluster = sim_cluster(nodes=24, docker=False, bastion=True)
    bastion = cluster.bastion()
    for node in cluster.nodes():
        assert node.address.startswith("10.232.")
        with pytest.raises(OSError):  # no route from this machine: fails at once, nothing leaves it
            socket.create_connection((node.address, 22), timeout=3)
    assert all(r["sshd"] for r in cluster.status())  # 24 servers seen from the bastion, and the bastion
    dep = load_deployment(cluster.deployment_file)
    assert [n.ssh.via.hostname for n in dep.nodes] == [bastion.address] * 24
    for _ in range(5):  # 24 tunnels over one connection, closed at once: none may take the others down
        outcomes = run_on_nodes(dep.nodes, ["true"])
        assert all(o.ok and o.value.ok for o in outcomes), [(o.node.name, o.error or o.value) for o in outcomes
                                                            if not (o.ok and o.value.ok)][:3]
    runner = CliRunner()
    result = runner.invoke(cli, ["exec", "-f", str(cluster.deployment_file), "--", "sh", "-c",
                                 'echo "$(hostname) ${SSH_CONNECTION%% *}"'])
    assert result.exit_code == 0, result.output
    assert "sim-node-0 10.232." in result.output and "sim-node-1 10.232." in result.output  # via the bastion
    openssh = subprocess.run(["ssh", "-F", str(cluster.ssh_config), "-o", "GSSAPIAuthentication=no",
                              "-o", "BatchMode=yes", "sim-node-1", "hostname"], capture_output=True, text=True)
    assert openssh.stdout.strip() == "sim-node-1", openssh.stderr  # the file works with OpenSSH too
    snap = snapshot(cluster)
    cluster.down()
    assert_nothing_left(snap)


@pytest.mark.slow
@pytest.mark.root
def test_failed_up_cleans_up(tmp_path):
    if sim_unavailable(docker=True):
        pytest.skip(sim_unavailable(docker=True))
    cluster = SimCluster(tmp_path / "failing")
    with pytest.raises(SimError, match="injected failure after starting sim-node-2"):
        cluster.up(4, docker=True, fail_at=2)
    assert_nothing_left({"tag": network.tag_for(str(cluster.dir)), "dir": str(cluster.dir)})
    cluster.down()  # a second down is a no-op


@pytest.mark.slow
@pytest.mark.root
def test_node_that_fails_to_start_is_reported_at_once(tmp_path, monkeypatch):
    if sim_unavailable(docker=False):
        pytest.skip(sim_unavailable(docker=False))
    from ascend_run.sim import node as node_module

    monkeypatch.setattr(node_module, "node_script", lambda *a, **k: "echo 'mount: boom' >&2; exit 3\n")
    cluster = SimCluster(tmp_path / "broken")
    started = time.monotonic()
    with pytest.raises(SimError, match="setup script exited") as info:
        cluster.up(2, docker=False)
    assert "mount: boom" in str(info.value)
    assert time.monotonic() - started < 20, "no waiting for the full deadline"
    assert_nothing_left({"tag": network.tag_for(str(cluster.dir)), "dir": str(cluster.dir)})


@pytest.mark.slow
@pytest.mark.root
def test_server_drops_off_and_comes_back(sim_cluster):
    cluster = sim_cluster(nodes=1, docker=True, image=None)
    cluster.remove_device(0, 3)
    cluster.restore_device(0, 3)
    assert ssh(cluster, 0, "test -c /dev/davinci3").returncode == 0
    assert len(parse_npu_smi_info(ssh(cluster, 0, "npu-smi info").stdout)) == 8
    cluster.kill_sshd(0)
    assert ssh(cluster, 0, "true", check=False).returncode != 0
    assert cluster.status()[0]["sshd"] is False and cluster.status()[0]["docker"] is True
    node = cluster.node(0)
    cluster.node_exec(0, ["/usr/sbin/sshd", "-f", str(node.layout.sshd_config)])  # the node's dockerd is entered
    deadline = time.monotonic() + 10
    while not cluster.status()[0]["sshd"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert ssh(cluster, 0, "hostname").stdout.strip() == "sim-node-0"


@pytest.mark.slow
@pytest.mark.root
def test_device_disk_and_health_faults(sim_cluster):
    cluster = sim_cluster(nodes=2, docker=False)
    node = cluster.node(1)

    cluster.remove_device(1, 5)
    listed = parse_npu_smi_info(ssh(cluster, node, "npu-smi info").stdout)
    assert sorted(listed) == [0, 1, 2, 3, 4, 6, 7]
    assert ssh(cluster, node, "test -e /dev/davinci5", check=False).returncode == 1
    assert ssh(cluster, node, "test -c /dev/davinci4").returncode == 0
    assert ssh(cluster, 0, "test -c /dev/davinci5").returncode == 0, "only node 1 lost the device"

    cluster.set_health(1, 2, "Critical")
    assert parse_npu_smi_info(ssh(cluster, node, "npu-smi info").stdout)[2].health == "Critical"

    cluster.fill_disk(1, "/var/log", free="2M")
    avail = int(ssh(cluster, node, "df -B1 --output=avail /var/log | tail -n 1").stdout)
    assert 1 << 20 < avail <= 3 << 20
    assert int(ssh(cluster, 0, "df -B1 --output=avail /var/log | tail -n 1").stdout) > 1 << 30
    cluster.free_disk(1, "/var/log")
    assert int(ssh(cluster, node, "df -B1 --output=avail /var/log | tail -n 1").stdout) > 1 << 30
    with pytest.raises(SimError, match="not a disk"):
        cluster.fill_disk(1, "/etc")


@pytest.mark.slow
@pytest.mark.root
def test_infer_profile_paths_and_cli(sim_cluster):
    """The 800I profile's tool paths come from the profile; cluster.yaml loads unchanged; CLI status."""
    cluster = sim_cluster(nodes=2, profile="atlas-800i-a2", docker=False)
    profile = get_profile("atlas-800i-a2")
    assert parse_npu_smi_info(ssh(cluster, 0, f"{profile.tools.npu_smi} info").stdout)
    out = ssh(cluster, 1, f"{profile.tools.hccn_tool} -i 7 -ip -g").stdout
    assert out.startswith("ipaddr:10.") and "netmask:255.255.255.0" in out
    assert ssh(cluster, 1, f"{profile.tools.hccn_tool} -i 7 -net_health -g").stdout.strip() \
        == "net health status: Success"
    listing = ssh(cluster, 0, "ls -d /usr/local/Ascend/firmware /var/log/npu /etc/ascend_install.info; "
                              f"cat {profile.tools.driver_version_file}").stdout
    assert f"Version={profile.driver_version}" in listing and "/usr/local/Ascend/firmware" in listing
    for path in profile.device_paths():
        assert ssh(cluster, 0, f"test -c {path}").returncode == 0

    dep = load_deployment(cluster.deployment_file)
    assert [n.address for n in dep.nodes] == [n.address for n in cluster.nodes()]
    assert dep.profile.name == "atlas-800i-a2"

    result = CliRunner().invoke(cli, ["sim", "status", "--dir", str(cluster.dir), "--output", "json"])
    assert result.exit_code == 0, result.output
    rows = json.loads(result.output)
    assert [r["name"] for r in rows] == ["sim-node-0", "sim-node-1"] and all(r["sshd"] for r in rows)
    assert not any(r["docker"] for r in rows)


@pytest.mark.slow
@pytest.mark.root
def test_two_clusters_side_by_side(sim_cluster):
    """Two directories, two /24s, two bridges; a second `up` in a used directory is refused."""
    a = sim_cluster(nodes=1, docker=False)
    b = sim_cluster(nodes=1, docker=False)
    assert a.record()["third_octet"] != b.record()["third_octet"]
    assert a.record()["bridge"] != b.record()["bridge"]
    assert ssh(a, 0, "hostname").stdout.strip() == ssh(b, 0, "hostname").stdout.strip() == "sim-node-0"
    result = CliRunner().invoke(cli, ["sim", "up", "--servers", "1", "--no-docker", "--dir", str(a.dir)])
    assert result.exit_code != 0 and "already holds a simulated cluster" in str(result.exception)
    assert ssh(a, 0, "true").returncode == 0, "the refused `up` did not touch the running cluster"


@pytest.mark.slow
@pytest.mark.root
def test_cluster_directory_on_overlayfs(tmp_path):
    """Inside a container the directory is on overlayfs, which cannot hold overlay upper dirs: the nodes
    then keep their /etc and /usr/local layers on a private tmpfs and their daemons use vfs."""
    if sim_unavailable(docker=False):
        pytest.skip(sim_unavailable(docker=False))
    for sub in ("lower", "upper", "work", "merged"):
        (tmp_path / sub).mkdir()
    merged = tmp_path / "merged"
    options = f"lowerdir={tmp_path / 'lower'},upperdir={tmp_path / 'upper'},workdir={tmp_path / 'work'}"
    subprocess.run(["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], check=True)
    try:
        cluster = SimCluster(merged / "sim")
        cluster.up(1, docker=False)
        try:
            assert cluster.record()["storage_driver"] == "vfs"
            assert ssh(cluster, 0, "hostname").stdout.strip() == "sim-node-0"
            assert parse_hccn_conf(ssh(cluster, 0, "cat /etc/hccn.conf").stdout)
            assert len(parse_npu_smi_info(ssh(cluster, 0, "npu-smi info").stdout)) == 8
        finally:
            cluster.down()
    finally:
        subprocess.run(["umount", str(merged)], check=True)


# --- fast ---------------------------------------------------------------------------------------------


def test_needs_root(monkeypatch, tmp_path):
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(SimError, match="needs root") as info:
        SimCluster(tmp_path).up(2)
    assert info.value.exit_code == 7
    assert not (tmp_path / "sim.json").exists()


def test_refuses_foreign_record(tmp_path):
    net = network.SimNet("abc123", 40)
    record = {"tag": net.tag, "third_octet": 40, "bridge": "eth0", "nodes": [], "pids": {}}
    (tmp_path / "sim.json").write_text(json.dumps(record))
    with pytest.raises(SimError, match="does not describe a cluster this kit made"):
        SimCluster(tmp_path).down()
    record["bridge"] = net.bridge
    record["nodes"] = [{"index": 0, "netns": net.netns(0), "veth": net.veth_host(0), "address": "192.168.1.10"}]
    assert "outside" in network.owned_names_problem(record)


def test_addresses_stay_in_range_and_differ_per_directory():
    a = network.pick_net("/tmp/one", set())
    b = network.pick_net("/tmp/two", {a.third_octet})
    assert a.third_octet != b.third_octet
    assert network.pick_net("/tmp/one", set()) == a, "stable for a directory"
    assert network.pick_net("/tmp/one", {a.third_octet}).third_octet != a.third_octet, "skips a used /24"
    for i in (0, 1, network.MAX_NODES - 1):
        assert network.in_sim_range(a.address(i))
    with pytest.raises(ValueError):
        a.address(network.MAX_NODES)
    names = [a.veth_host(200), a.veth_node(200), a.bridge]
    assert all(len(n) <= 15 for n in names), "Linux interface names are at most 15 characters"


def test_stand_in_tools_print_real_formats(tmp_path):
    profile = get_profile("atlas-800t-a2")
    state = tools.initial_state(network.SimNet("abcdef", 7), 3, profile)
    state["devices"]["4"]["link"] = "DOWN"
    state_path = tmp_path / "state.json"
    tools.write_state(state_path, state)
    hccn = tmp_path / "hccn_tool"
    hccn.write_text(tools.render_tool(tools.HCCN_TOOL, state_path))

    def run(*args):
        return subprocess.run(["/usr/bin/python3", str(hccn), *args], check=False, capture_output=True, text=True)

    assert run("-i", "4", "-link", "-g").stdout == "link status: DOWN\n"
    assert run("-i", "4", "-net_health", "-g").stdout == "net health status: Fault\n"
    assert run("-i", "0", "-ip", "-g").stdout == f"ipaddr:{state['devices']['0']['ip']}\nnetmask:255.255.255.0\n"
    assert run("-i", "9", "-ip", "-g").returncode != 0
    conf = parse_hccn_conf(tools.hccn_conf(state))
    assert len(conf) == 8


@pytest.mark.parametrize("profile_name", ["atlas-800t-a2", "atlas-800i-a2"])
def test_node_files_come_from_the_profile(tmp_path, profile_name):
    """Device nodes, tool paths and the driver version are the profile's; sshd is set up for fan-out."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen missing (openssh-client)")
    profile = get_profile(profile_name)
    layout = NodeLayout(tmp_path / "sim-node-1")
    (tmp_path / "authorized_keys").write_text("")
    write_node_files(layout, network.SimNet("abcdef", 9), 1, "sim-node-1", profile, tmp_path / "authorized_keys",
                     docker=True)
    script = layout.script.read_text()
    for path in profile.device_paths():
        assert f'mknod -m 666 "$dev/{path.removeprefix("/dev/")}" c' in script
    upper = layout.root / "usrlocal-upper"
    for tool in (profile.tools.npu_smi, profile.tools.hccn_tool):
        target = upper / tool.removeprefix("/usr/local/")
        assert os.access(target, os.X_OK) and "ascend-run sim" in target.read_text()
    version = upper / profile.tools.driver_version_file.removeprefix("/usr/local/")
    assert version.read_text() == f"Version={profile.driver_version}\n"
    assert (layout.root / "etc-upper" / "hccn.conf").read_text().count("address_") == profile.npu_count
    config = layout.sshd_config.read_text()
    assert "MaxStartups 1000:30:1000" in config and "PasswordAuthentication no" in config
    assert f"SetEnv SHLVL=1 DOCKER_HOST=unix://{layout.docker_socket}" in config
    assert "--storage-driver=overlay2" in script and "--iptables=false --bridge=none" in script
