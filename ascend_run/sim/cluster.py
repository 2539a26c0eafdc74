"""A simulated Ascend cluster: bring-up, status, state changes for tests, and teardown that leaves nothing.

Everything is recorded in `DIR/sim.json` before it is created, so `down` (or a failed `up`) removes
exactly what this cluster made, from any process: node processes, network namespaces, veths, the bridge.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from ascend_run.errors import SimError
from ascend_run.profiles import get_profile
from ascend_run.sim import network, tools
from ascend_run.sim.network import SimNet
from ascend_run.sim.node import NodeLayout, public_host_key, start_command, write_node_files

REQUIRED = {"ip": "iproute2", "sshd": "openssh-server", "ssh-keygen": "openssh-client", "unshare": "util-linux",
            "nsenter": "util-linux"}


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise SimError(f"`{' '.join(argv)}` failed: {result.stderr.strip()}")
    return result


def _used_octets() -> set[int]:
    out = _run(["ip", "-4", "-o", "addr", "show"], check=False).stdout
    return {int(parts[2]) for parts in (a.split("/")[0].split(".") for a in out.split() if a.startswith("10.233."))
            if len(parts) == 4}


@dataclass(frozen=True)
class SimNode:
    index: int
    name: str
    address: str
    layout: NodeLayout


class SimCluster:
    """A cluster directory: `up()` creates it, `down()` removes every trace; methods change node state."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory).resolve()
        self.record_path = self.dir / "sim.json"

    # --- the record ---------------------------------------------------------------------------------

    def record(self) -> dict:
        if not self.record_path.is_file():
            raise SimError(f"no simulated cluster in {self.dir}", fix="ascend-run sim up --dir DIR")
        return json.loads(self.record_path.read_text())

    def _save(self, record: dict) -> None:
        tmp = self.record_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2))
        tmp.replace(self.record_path)

    @property
    def net(self) -> SimNet:
        rec = self.record()
        return SimNet(rec["tag"], rec["third_octet"])

    def nodes(self) -> list[SimNode]:
        rec = self.record()
        return [SimNode(n["index"], n["name"], n["address"], NodeLayout(Path(n["root"]))) for n in rec["nodes"]]

    def node(self, ref: int | str) -> SimNode:
        for n in self.nodes():
            if ref in (n.index, n.name):
                return n
        raise SimError(f"no simulated node {ref!r} in {self.dir}")

    @property
    def deployment_file(self) -> Path:
        return self.dir / "cluster.yaml"

    @property
    def key_file(self) -> Path:
        return self.dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.dir / "known_hosts"

    # --- up -----------------------------------------------------------------------------------------

    def up(self, nodes: int, profile_name: str = "atlas-800t-a2", docker: bool = True,
           image: str | None = None, fail_at: int | None = None) -> None:
        """Bring the cluster up; on any failure, tear down what was made and raise."""
        _preflight(docker)
        if nodes < 1:
            raise SimError("--nodes must be at least 1")
        if self.record_path.exists():
            raise SimError(f"{self.dir} already holds a simulated cluster",
                           fix=f"ascend-run sim down --dir {self.dir}")
        profile = get_profile(profile_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        net = network.pick_net(str(self.dir), _used_octets())
        record = {"tag": net.tag, "third_octet": net.third_octet, "profile": profile.name, "docker": docker,
                  "bridge": net.bridge, "nodes": [], "pids": {}}
        for i in range(nodes):
            record["nodes"].append({"index": i, "name": f"sim-node-{i}", "address": net.address(i),
                                    "netns": net.netns(i), "veth": net.veth_host(i),
                                    "root": str(self.dir / "nodes" / f"sim-node-{i}")})
        self._save(record)
        try:
            self._up(record, net, profile, docker, image, fail_at)
        except BaseException:
            self.down()
            raise

    def _up(self, record: dict, net: SimNet, profile, docker: bool, image: str | None, fail_at: int | None) -> None:
        if not self.key_file.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ascend-run-sim", "-f", str(self.key_file)])
        authorized = self.dir / "authorized_keys"
        shutil.copy(f"{self.key_file}.pub", authorized)
        Path("/var/lib/ascend-run").mkdir(parents=True, exist_ok=True)
        for argv in network.bridge_up(net):
            _run(argv)
        nodes = self.nodes()

        def start(node: SimNode) -> int:
            if fail_at is not None and node.index == fail_at:
                raise SimError(f"injected failure while starting {node.name}")
            write_node_files(node.layout, net, node.index, node.name, profile, authorized, docker)
            for argv in network.node_link_up(net, node.index):
                _run(argv)
            log = open(node.layout.log, "ab")
            proc = subprocess.Popen(start_command(net, node.index, node.layout), stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
            return proc.pid

        with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
            pids = list(pool.map(start, nodes))
        record["pids"] = {n.name: pid for n, pid in zip(nodes, pids)}
        self._save(record)
        self.known_hosts.write_text("".join(f"{n.address} {public_host_key(n.layout)}\n" for n in nodes))
        deadline = time.monotonic() + 30
        for node in nodes:
            _wait_port(node, deadline)
            if docker:
                _wait_socket(node, deadline)
        if docker and image:
            self.load_image(image)
        self._write_deployment(record, profile.name, image)

    def _write_deployment(self, record: dict, profile: str, image: str | None) -> None:
        data = {
            "name": "sim",
            "profile": profile,
            "image": image or "ascend-run/debian-base:bookworm",
            "ssh": {"user": "root", "port": 22, "identity_file": str(self.key_file),
                    "known_hosts": str(self.known_hosts), "connect_timeout": 10},
            "nodes": [{"name": n["name"], "address": n["address"]} for n in record["nodes"]],
            "container": {"name": "ascend-run-sim"},
            "job": {"command": "python -c 'print(1)'", "master_port": 8118},
        }
        with self.deployment_file.open("w") as fh:
            fh.write(f"# Written by `ascend-run sim up` for the simulated cluster in {self.dir}.\n"
                     "# Use it as it is, or `extends:` it from a job file.\n")
            YAML().dump(data, fh)

    def load_image(self, image: str, source_engine: str | None = None) -> None:
        """Copy an image from an engine (default: the kit's local one) into every node's daemon at once."""
        from ascend_run.localengine import ensure_engine

        base_url = source_engine or ensure_engine().base_url
        tar = self.dir / "image.tar"
        with tar.open("wb") as fh:
            proc = subprocess.run(["docker", "-H", base_url, "save", image], stdout=fh, stderr=subprocess.PIPE)
        if proc.returncode != 0:
            raise SimError(f"docker save {image} failed: {proc.stderr.decode().strip()}")

        def load(node: SimNode) -> None:
            _run(["docker", "-H", f"unix://{node.layout.docker_socket}", "load", "-q", "-i", str(tar)])

        try:
            with ThreadPoolExecutor(max_workers=len(self.nodes())) as pool:
                list(pool.map(load, self.nodes()))
        finally:
            tar.unlink(missing_ok=True)

    # --- state changes for tests ---------------------------------------------------------------------

    def _edit_state(self, ref, change) -> None:
        node = self.node(ref)
        state = json.loads(node.layout.state.read_text())
        change(state)
        tools.write_state(node.layout.state, state)

    def set_link(self, ref, npu: int, status: str = "DOWN") -> None:
        self._edit_state(ref, lambda s: s["devices"][str(npu)].update(link=status))

    def set_health(self, ref, npu: int, health: str = "Critical") -> None:
        self._edit_state(ref, lambda s: s["devices"][str(npu)].update(health=health))

    def remove_device(self, ref, npu: int) -> None:
        """The NPU vanishes: npu-smi stops listing it and its /dev node is gone."""
        self._edit_state(ref, lambda s: s["devices"][str(npu)].update(present=False))
        profile = get_profile(self.record()["profile"])
        self.node_exec(ref, ["rm", "-f", profile.npu_device_path(npu)])

    def fill_disk(self, ref, path: str = "/data", free: str = "1M") -> None:
        """Make a node's disk at `path` (a tmpfs of the node) nearly full: `df` shows `free` left."""
        self.node_exec(ref, ["mount", "-o", f"remount,size={free}", path])

    def node_exec(self, ref, argv: list[str]) -> subprocess.CompletedProcess:
        """Run a command inside a node's namespaces (mount, UTS, network) from the root namespace."""
        node = self.node(ref)
        pid = self.record()["pids"][node.name]
        return _run(["nsenter", "-t", str(pid), "-m", "-u", "-n", *argv])

    def kill_sshd(self, ref) -> None:
        """Every sshd process of the node (the listener and open sessions) dies, as when a server drops."""
        node = self.node(ref)
        for pid in _netns_pids(node_netns(self.record(), node.name)):
            if _comm(pid) == "sshd":
                _kill(pid, signal.SIGKILL)

    # --- status and down ------------------------------------------------------------------------------

    def status(self) -> list[dict]:
        rec = self.record()
        rows = []
        for n in rec["nodes"]:
            pid = rec["pids"].get(n["name"])
            layout = NodeLayout(Path(n["root"]))
            rows.append({"name": n["name"], "address": n["address"], "netns": n["netns"],
                         "sshd": bool(pid) and _alive(pid) and _port_open(n["address"]),
                         "docker": rec["docker"] and layout.docker_socket.exists() and _docker_ok(layout)})
        return rows

    def down(self) -> None:
        """Stop every process of every node, delete namespaces, veths, the bridge; forget the cluster."""
        if not self.record_path.exists():
            return
        rec = self.record()
        for node in rec["nodes"]:
            pid = rec["pids"].get(node["name"])
            for p in _netns_pids(node["netns"]):  # dockerd first, politely, so it can unmount
                if _comm(p) == "dockerd":
                    _kill(p, signal.SIGTERM)
            if pid:
                _kill(-pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for node in rec["nodes"]:
            while _netns_pids(node["netns"]) and time.monotonic() < deadline:
                time.sleep(0.1)
            for p in _netns_pids(node["netns"]):
                _kill(p, signal.SIGKILL)
            pid = rec["pids"].get(node["name"])
            if pid:
                _kill(-pid, signal.SIGKILL)
        for node in rec["nodes"]:
            _run(["ip", "netns", "del", node["netns"]], check=False)
            _run(["ip", "link", "del", node["veth"]], check=False)
        _run(["ip", "link", "del", rec["bridge"]], check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_link_exists(n["veth"]) for n in rec["nodes"]):
            time.sleep(0.1)  # veth deletion is asynchronous
        self.record_path.unlink()


def node_netns(record: dict, name: str) -> str:
    return next(n["netns"] for n in record["nodes"] if n["name"] == name)


def _preflight(docker: bool) -> None:
    if os.geteuid() != 0:
        raise SimError("the simulated cluster needs root (network namespaces, mounts, sshd, dockerd)",
                       fix="run it as root, e.g. sudo ascend-run sim up")
    needed = dict(REQUIRED)
    if docker:
        needed["dockerd"] = "docker.io"
    missing = [f"{tool} (apt-get install {pkg})" for tool, pkg in needed.items()
               if shutil.which(tool) is None and not Path(f"/usr/sbin/{tool}").exists()]
    if missing:
        raise SimError("missing tools: " + ", ".join(missing), fix="install them, or run scripts/install.sh")


def _netns_pids(netns: str) -> list[int]:
    out = _run(["ip", "netns", "pids", netns], check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except OSError:
        return False


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


def _port_open(address: str, port: int = 22) -> bool:
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(node: SimNode, deadline: float) -> None:
    while not _port_open(node.address):
        if time.monotonic() > deadline:
            tail = node.layout.log.read_text()[-600:] if node.layout.log.exists() else ""
            raise SimError(f"{node.name}: sshd did not come up on {node.address}:22\n{tail}")
        time.sleep(0.05)


def _docker_ok(layout: NodeLayout) -> bool:
    return _run(["docker", "-H", f"unix://{layout.docker_socket}", "version", "--format", "{{.Server.Version}}"],
                check=False).returncode == 0


def _wait_socket(node: SimNode, deadline: float) -> None:
    while not (node.layout.docker_socket.exists() and _docker_ok(node.layout)):
        if time.monotonic() > deadline:
            log = node.layout.root / "dockerd.log"
            tail = log.read_text()[-800:] if log.exists() else ""
            raise SimError(f"{node.name}: dockerd did not answer\n{tail}")
        time.sleep(0.1)
