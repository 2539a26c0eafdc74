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
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from ruamel.yaml import YAML

from ascend_run.errors import SimError
from ascend_run.inputs.deployment import parse_size
from ascend_run.inputs.profiles import get_profile
from ascend_run.sim import network, tools
from ascend_run.sim.filelock import held
from ascend_run.sim.kube.cluster import remove_cgroups
from ascend_run.sim.network import SimNet
from ascend_run.sim.node import (
    DISK_SIZES,
    NodeLayout,
    public_host_key,
    start_command,
    write_bastion_files,
    write_node_files,
)

REQUIRED = {"ip": "iproute2", "sshd": "openssh-server", "ssh-keygen": "openssh-client", "unshare": "util-linux",
            "nsenter": "util-linux"}


def _run(argv: list[str], check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, check=False, capture_output=True, text=True)
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


BASTION = "sim-bastion"


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

    @property
    def ssh_config(self) -> Path:
        """With a bastion: `Host` aliases for the servers and the bastion, and the ProxyJump between them."""
        return self.dir / "ssh_config"

    @property
    def kubeconfig(self) -> Path:
        """The admin's kubeconfig of the cluster's Kubernetes (sim up --kubernetes)."""
        return self.dir / "kubeconfig"

    @property
    def kube(self):
        from ascend_run.sim.kube.cluster import KubeSim

        return KubeSim(self)

    def bastion(self) -> SimNode | None:
        """The login node in front of the servers, if the cluster has one (index -1: not a server)."""
        found = self.record().get("bastion")
        return SimNode(-1, found["name"], found["address"], NodeLayout(Path(found["root"]))) if found else None

    # --- up -----------------------------------------------------------------------------------------

    def up(self, nodes: int, profile_name: str = "atlas-800t-a2", docker: bool = True,
           image: str | None = None, fail_at: int | None = None,
           progress: Callable[[str], None] | None = None, image_engine: str | None = None,
           bastion: bool = False, link_rate: str | int | None = None, spares: int = 0,
           kubernetes: bool = False) -> None:
        """Bring the cluster up; on any failure, tear down what was made and raise.

        `spares` of the `nodes` servers (the last ones) are written under `spares:` in cluster.yaml: standby
        servers for the supervisor, made like every other.
        `image` (docker only) is copied from `image_engine` (default: the kit's local engine) into every
        node's daemon. With `bastion`, the servers are reachable only through one more server, a login node
        (`sim-bastion`, see network.py); DIR/ssh_config then describes the way (a ProxyJump and `Host`
        aliases) and DIR/cluster.yaml names the servers by those aliases. `link_rate` (e.g. "200mbit") gives
        every server and this machine a NIC of that rate (`set_link_rate`), after the image is loaded.
        `kubernetes` also runs a Kubernetes cluster on the servers (sim/kube/cluster.py) and writes DIR/kubeconfig;
        `image` is then in every server's containerd too.
        `fail_at` is a test hook: node `fail_at` raises right after its processes started, so tests can
        check that a failed bring-up leaves nothing behind. `progress` receives one line per step.
        """
        say = progress or (lambda _msg: None)
        _preflight(docker)
        if link_rate is not None:
            try:
                network.parse_rate(link_rate)
            except ValueError as exc:
                raise SimError(str(exc)) from None
        if nodes < 1:
            raise SimError("--nodes must be at least 1")
        if not 0 <= spares < nodes:
            raise SimError(f"--spares must leave at least one node (got {spares} of {nodes})")
        if nodes > network.MAX_NODES:
            raise SimError(f"at most {network.MAX_NODES} simulated nodes per cluster (one /24)")
        if self.record_path.exists():
            raise SimError(f"{self.dir} already holds a simulated cluster",
                           fix=f"ascend-run sim down --dir {self.dir}")
        profile = get_profile(profile_name)
        self.dir.mkdir(parents=True, exist_ok=True)
        longest = self.dir / "nodes" / f"sim-node-{nodes - 1}" / "docker.sock"
        if docker and len(str(longest)) > MAX_SOCKET_PATH:
            raise SimError(f"{longest} is longer than a Unix socket path may be ({MAX_SOCKET_PATH} bytes)",
                           fix="use a shorter --dir")
        storage = _storage_driver(self.dir)  # also decides where the nodes' /etc and /usr/local layers live
        with held(LOCK_FILE):  # two `sim up` at once must not pick the same /24 (nor make its bridge twice)
            net = network.pick_net(str(self.dir), _used_octets())
            record = {"tag": net.tag, "third_octet": net.third_octet, "profile": profile.name, "docker": docker,
                      "storage_driver": storage, "bridge": net.bridge, "nodes": [], "pids": {}, "spares": spares}
            for i in range(nodes):
                record["nodes"].append({"index": i, "name": f"sim-node-{i}",
                                        "address": net.hidden_address(i) if bastion else net.address(i),
                                        "netns": net.netns(i), "veth": net.veth_host(i),
                                        "root": str(self.dir / "nodes" / f"sim-node-{i}")})
            if bastion:
                host_veth, _, inner_veth, _ = net.bastion_veths()
                record.update(hidden_bridge=net.hidden_bridge, hidden_net=net.hidden_net, bastion={
                    "name": BASTION, "address": net.bastion_address, "inner_address": net.bastion_inner_address,
                    "netns": net.bastion_netns, "veths": [host_veth, inner_veth],
                    "root": str(self.dir / "nodes" / BASTION)})
            self._save(record)
            try:
                for argv in network.bridge_up(net) + (network.hidden_bridge_up(net) if bastion else []):
                    _run(argv)
            except BaseException:
                self.down()
                raise
        say(f"bridge {net.bridge} {net.gateway}/24")
        try:
            self._up(record, net, profile, docker, image, fail_at, say, image_engine)
            if kubernetes:
                self.kube.up(say)
                if image:
                    say(f"importing {image} into {nodes} servers' containerd")
                    self.kube.import_image(self.saved_image(image, image_engine))
            if link_rate is not None:
                self.set_link_rate(link_rate)
                say(f"links shaped to {network.parse_rate(link_rate) / 1e6:g} Mbit/s each way")
        except BaseException:
            say("bring-up failed: tearing down what was made")
            self.down()
            raise

    def _up(self, record: dict, net: SimNet, profile, docker: bool, image: str | None, fail_at: int | None,
            say: Callable[[str], None], image_engine: str | None) -> None:
        if not self.key_file.exists():
            _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "ascend-run-sim", "-f", str(self.key_file)])
        authorized = self.dir / "authorized_keys"
        shutil.copy(f"{self.key_file}.pub", authorized)
        Path("/var/lib/ascend-run").mkdir(parents=True, exist_ok=True)
        nodes = self.nodes()
        bastion = self.bastion()
        hidden = bastion is not None
        pids: dict[str, int] = {}
        pids_lock = threading.Lock()

        def spawn(name: str, netns: str, layout: NodeLayout) -> None:
            with open(layout.log, "ab") as log:
                proc = subprocess.Popen(start_command(netns, layout), stdout=log, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True)
            with pids_lock:
                pids[name] = proc.pid  # recorded before anything can fail, so `down` finds it

        def start(node: SimNode) -> None:
            write_node_files(node.layout, net, node.index, node.name, profile, authorized, docker,
                             storage_driver=record["storage_driver"], address=node.address)
            for argv in network.node_link_up(net, node.index, hidden=hidden):
                _run(argv)
            spawn(node.name, net.netns(node.index), node.layout)
            if fail_at is not None and node.index == fail_at:
                raise SimError(f"injected failure after starting {node.name}")

        try:
            if bastion is not None:
                write_bastion_files(bastion.layout, bastion.name, bastion.address, authorized)
                for argv in network.bastion_link_up(net):
                    _run(argv)
                spawn(bastion.name, net.bastion_netns, bastion.layout)
            with ThreadPoolExecutor(max_workers=min(32, len(nodes))) as pool:
                list(pool.map(start, nodes))
        finally:
            record["pids"] = pids
            self._save(record)
        everyone = nodes + ([bastion] if bastion else [])
        self.known_hosts.write_text("".join(f"{n.address} {public_host_key(n.layout)}\n" for n in everyone))
        deadline = time.monotonic() + 60 + len(nodes)  # generous: the machine may be busy
        if bastion is not None:
            _wait_port(bastion, deadline, pids.get(bastion.name))
        for node in nodes:
            _wait_port(node, deadline, pids.get(node.name), via=net.bastion_netns if hidden else None)
            if docker:
                _wait_socket(node, deadline, net.netns(node.index))
        say(f"{len(nodes)} nodes answer on ssh" + (" and docker" if docker else "")
            + (f", behind {bastion.name} ({bastion.address})" if bastion else ""))
        if docker and image:
            say(f"loading {image} into {len(nodes)} node daemons")
            self.load_image(image, image_engine)
        self._write_deployment(record, profile.name, image)

    def _write_deployment(self, record: dict, profile: str, image: str | None) -> None:
        ssh = {"user": "root", "port": 22, "identity_file": str(self.key_file),
               "known_hosts": str(self.known_hosts), "connect_timeout": 10}
        servers = [{"name": n["name"], "address": n["address"]} for n in record["nodes"]]
        if record.get("bastion"):  # the way to the servers is in the ssh config, as a user would have it
            self.ssh_config.write_text(ssh_config_text(record, self.key_file, self.known_hosts))
            ssh = {"config_file": str(self.ssh_config)}
            servers = [{"name": n["name"], "address": n["name"]} for n in record["nodes"]]
        standby = record.get("spares", 0)
        data = {
            "name": "sim",
            "profile": profile,
            "image": image or "ascend-run/debian-base:bookworm",
            "ssh": ssh,
            "nodes": servers[:len(servers) - standby],
            **({"spares": servers[len(servers) - standby:]} if standby else {}),
            "container": {"name": "ascend-run-sim"},
            "job": {"command": "python -c 'print(1)'", "master_port": 8118},
        }
        with self.deployment_file.open("w") as fh:
            fh.write(f"# Written by `ascend-run sim up` for the simulated cluster in {self.dir}.\n"
                     "# Use it as it is, or `extends:` it from a job file.\n")
            YAML().dump(data, fh)

    def load_image(self, image: str, source_engine: str | None = None) -> None:
        """Copy an image from an engine (default: the one `image build` uses) into every node's daemon at once.

        `docker save` runs once per image id (the tarball is cached under ~/.cache/ascend-run/images:
        saving the 300 MB base image takes ~4 s); the loads into the node daemons run in parallel.
        """
        tar = self.saved_image(image, source_engine)

        def load(node: SimNode) -> None:
            _run(["docker", "-H", f"unix://{node.layout.docker_socket}", "load", "-q", "-i", str(tar)])

        with ThreadPoolExecutor(max_workers=len(self.nodes())) as pool:
            list(pool.map(load, self.nodes()))

    def saved_image(self, image: str, source_engine: str | None = None) -> Path:
        """`docker save` of `image` from an engine (default: the one `image build` uses), cached."""
        from ascend_run.engine.local import engine_client

        if source_engine is not None:
            return _saved_image(source_engine, image)
        with engine_client() as (engine, _):
            return _saved_image(engine.base_url, image)

    # --- state changes for tests ---------------------------------------------------------------------

    def set_link_rate(self, rate: str | int) -> None:
        """Every server's link and this machine's (the bridge interface) run at `rate` both ways (tc tbf),
        so transfers measure topology, not how fast this machine copies memory."""
        try:
            bits = network.parse_rate(rate)
        except ValueError as exc:
            raise SimError(str(exc)) from None
        if shutil.which("tc") is None and not Path("/usr/sbin/tc").exists():
            raise SimError("tc is missing (apt-get install iproute2)")
        rec = self.record()
        for argv in network.link_rate_up(self.net, [n["index"] for n in rec["nodes"]], bits):
            _run(argv)
        rec["link_rate_bits"] = bits
        self._save(rec)

    def bridge_bytes(self) -> dict[str, int]:
        """Bytes this machine sent to and received from the simulated servers so far, from the bridge
        interface's counters (server-to-server traffic crosses the bridge without touching them)."""
        stats = Path("/sys/class/net") / self.record()["bridge"] / "statistics"
        return {"sent": int((stats / "tx_bytes").read_text()), "received": int((stats / "rx_bytes").read_text())}

    def edit_state(self, ref, change: Callable[[dict], object]) -> None:
        """Apply `change` to a node's state.json (read by its npu-smi and hccn_tool at every call)."""
        node = self.node(ref)
        with held(node.layout.state.parent / ".lock"):  # concurrent edits of one node must not lose each other
            state = json.loads(node.layout.state.read_text())
            change(state)
            tools.write_state(node.layout.state, state)

    def set_link(self, ref, npu: int, status: str = "DOWN") -> None:
        """An NPU's RoCE link goes DOWN (or UP again): `hccn_tool -i N -link -g`, `-net_health -g`."""
        if status not in ("UP", "DOWN"):
            raise SimError(f"link status {status!r} is not UP or DOWN")
        self.edit_state(ref, lambda s: _device(s, npu).update(link=status))

    def set_health(self, ref, npu: int, health: str = "Critical") -> None:
        """What `npu-smi info` prints in the Health column for the NPU (OK, Warning, Alarm, Critical)."""
        self.edit_state(ref, lambda s: _device(s, npu).update(health=health))

    def remove_device(self, ref, npu: int) -> None:
        """The NPU vanishes: npu-smi stops listing it and its /dev node is gone."""
        self.edit_state(ref, lambda s: _device(s, npu).update(present=False))
        profile = get_profile(self.record()["profile"])
        self.node_exec(ref, ["rm", "-f", profile.npu_device_path(npu)])

    def restore_device(self, ref, npu: int) -> None:
        """Undo `remove_device`: the NPU is listed again and its character device is back."""
        self.edit_state(ref, lambda s: _device(s, npu).update(present=True))
        profile = get_profile(self.record()["profile"])
        self.node_exec(ref, ["mknod", "-m", "666", profile.npu_device_path(npu), "c", "1", "3"])

    def fill_disk(self, ref, path: str = "/data", free: str | int = "1M") -> None:
        """Leave only `free` bytes (e.g. "1M", "10G") on one of a node's disks, as `df` will show.

        The node's disks (/data, /var/log) are tmpfs mounts of its own: shrinking one to what is used
        plus `free` makes it as full as a real disk would be, without writing (or spending RAM on) data.
        """
        free_bytes = parse_size(free)
        used = self._disk_usage(ref, path)
        self.node_exec(ref, ["mount", "-o", f"remount,size={used + free_bytes}", path])
        self.edit_state(ref, lambda s: s.setdefault("disks", {}).update({path: {"free_bytes": free_bytes}}))

    def free_disk(self, ref, path: str = "/data") -> None:
        """Undo `fill_disk`: the disk gets its full simulated size back."""
        self._disk_usage(ref, path)
        size = DISK_SIZES[path]
        self.node_exec(ref, ["mount", "-o", f"remount,size={size}", path])
        self.edit_state(ref, lambda s: s.setdefault("disks", {}).pop(path, None))

    def _disk_usage(self, ref, path: str) -> int:
        if path not in DISK_SIZES:
            raise SimError(f"{path} is not a disk of the simulated node",
                           fix=f"fill one of: {', '.join(DISK_SIZES)}")
        out = self.node_exec(ref, ["df", "-B1", "--output=used", path]).stdout.split()
        return int(out[-1])

    def node_exec(self, ref, argv: list[str]) -> subprocess.CompletedProcess:
        """Run a command inside a node's namespaces (mount, UTS, network) from the root namespace."""
        return _run(["nsenter", "-t", str(self.node_pid(ref)), "-m", "-u", "-n", *argv])

    def node_pid(self, ref) -> int:
        """A live process in the node's namespaces: its first process (sshd), or after `kill_sshd` its
        dockerd/containerd (same mount and UTS namespaces), or an sshd restarted with `node_exec`."""
        node = self.node(ref)
        rec = self.record()
        first = rec["pids"].get(node.name)
        if first and _alive(first) and str(self.dir) in _cmdline(first):
            return first
        for pid in _netns_pids(node_netns(rec, node.name)):
            if _comm(pid) in ("dockerd", "containerd", "sshd") and _alive(pid):
                return pid
        raise SimError(f"{node.name} has no process left to enter (its sshd was killed and it runs no dockerd)",
                       fix=f"ascend-run sim down --dir {self.dir}, then up again")

    def kill_sshd(self, ref) -> None:
        """Every sshd process of the node (the listener and open sessions) dies, as when a server drops."""
        node = self.node(ref)
        for pid in _netns_pids(node_netns(self.record(), node.name)):
            if _comm(pid) == "sshd":
                _kill(pid, signal.SIGKILL)

    def partition(self, ref, cut: bool = True) -> None:
        """The server's link goes away (the host side of its veth down) or comes back: unlike a killed sshd,
        nothing refuses or resets, packets to and from it just vanish, as when a switch port or cable fails."""
        node = self.node(ref)
        _run(["ip", "link", "set", "dev", self.net.veth_host(node.index), "down" if cut else "up"])

    # --- status and down ------------------------------------------------------------------------------

    def status(self) -> list[dict]:
        """One row per node: name, address, netns, whether sshd and dockerd answer, and where its Docker
        socket and NPU state file are (both reachable from the root namespace)."""
        rec = self.record()

        via = rec["bastion"]["netns"] if rec.get("bastion") else None

        def row(n: dict) -> dict:
            layout = NodeLayout(Path(n["root"]))
            return {"name": n["name"], "address": n["address"], "netns": n["netns"],
                    "sshd": _port_open(n["address"], netns=via),  # the truth from the network, even after a restart
                    "docker": rec["docker"] and layout.docker_socket.exists() and _docker_ok(layout),
                    "docker_host": f"unix://{layout.docker_socket}" if rec["docker"] else None,
                    "state": str(layout.state)}

        with ThreadPoolExecutor(max_workers=min(32, len(rec["nodes"]))) as pool:
            rows = list(pool.map(row, rec["nodes"]))
        if rec.get("kubernetes"):
            nodes = {n["name"]: n for n in self.kube.status()}
            for r in rows:
                found = nodes.get(r["name"])
                r.update(node_ready=found["ready"] if found else None, npus=found["npus"] if found else 0)
        if via:
            b = rec["bastion"]
            rows.append({"name": b["name"], "address": b["address"], "netns": b["netns"],
                         "sshd": _port_open(b["address"]), "docker": False, "docker_host": None, "state": None})
        return rows

    def docker_host(self, ref) -> str:
        """DOCKER_HOST for a node's own daemon from the root namespace (the socket lives in DIR/nodes/…);
        over SSH the node's `docker` reaches it by itself (sshd sets DOCKER_HOST)."""
        if not self.record()["docker"]:
            raise SimError(f"the simulated cluster in {self.dir} runs no Docker daemons (it was made with --no-docker)")
        return f"unix://{self.node(ref).layout.docker_socket}"

    def down(self) -> None:
        """Stop every process of every node, delete namespaces, veths, the bridge; forget the cluster.

        Works from a fresh process and after a half-finished `up`: everything is found from sim.json
        (names, pids) and from the kernel (`ip netns pids`, process parents), never by a broad name.
        """
        if not self.record_path.exists():
            return
        rec = self.record()
        problem = network.owned_names_problem(rec)
        if problem:
            raise SimError(f"{self.record_path} does not describe a cluster this kit made: {problem}",
                           fix="remove the simulated cluster's namespaces and links by hand; sim.json was edited")
        doomed = self._processes(rec)
        shims = {p for p in doomed if _comm(p).startswith("containerd-shim")}
        containers = descendants(shims) - shims
        for p in containers:  # a simulated server's containers die with it; dockerd then stops at once
            _kill(p, signal.SIGKILL)
        _wait_gone(containers, 2)
        dockerds = [p for p in doomed if _comm(p) == "dockerd"]
        for p in dockerds:  # first, politely: dockerd stops its containers and unmounts their layers
            _kill(p, signal.SIGTERM)
        _wait_gone(dockerds, 10)
        for p in doomed:
            _kill(p, signal.SIGTERM)
        _wait_gone(doomed, 2)
        deadline = time.monotonic() + 10
        while True:  # SIGKILL what is left, including anything that entered a namespace meanwhile
            left = [p for p in doomed | self._processes(rec) if _alive(p)]
            if not left or time.monotonic() > deadline:
                break
            for p in left:
                _kill(p, signal.SIGKILL)
            _wait_gone(left, 1)
        veths = [n["veth"] for n in rec["nodes"]] + (rec["bastion"]["veths"] if rec.get("bastion") else [])
        for netns in _all_netns(rec):
            _run(["ip", "netns", "del", netns], check=False)
        for veth in veths:
            if _link_exists(veth):
                _run(["ip", "link", "del", veth], check=False)
        if _link_exists(rec["bridge"]):
            _run(["ip", "link", "del", rec["bridge"]], check=False)
        if rec.get("bastion"):
            for argv in network.hidden_down(SimNet(rec["tag"], rec["third_octet"])):
                _run(argv, check=False)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(_link_exists(v) for v in veths):
            time.sleep(0.05)  # veth deletion is asynchronous
        left = [p for p in self._processes(rec) if _alive(p)]
        if left:
            raise SimError(f"processes {left} of the simulated cluster in {self.dir} did not die",
                           fix=f"kill them, then run: ascend-run sim down --dir {self.dir}")
        remove_cgroups(rec)  # the kubelets' cgroup trees (sim up --kubernetes) outlive their processes
        for node in rec["nodes"]:  # the nodes' image stores: gigabytes each once an image is shipped
            for store in ("docker", "containerd"):
                shutil.rmtree(Path(node["root"]) / store, ignore_errors=True)
        self.record_path.unlink()

    def _processes(self, rec: dict) -> set[int]:
        """Every process of the cluster: each node's first process, all in its network namespace, and
        all their descendants (containers run in their own namespaces under containerd-shim)."""
        roots: set[int] = set()
        for netns in _all_netns(rec):
            roots.update(_netns_pids(netns))
        for pid in rec.get("pids", {}).values():
            if str(self.dir) in _cmdline(pid):  # not a recycled pid of an unrelated process
                roots.add(int(pid))
        found = descendants(roots)
        found.discard(os.getpid())
        return found


def _device(state: dict, npu: int) -> dict:
    try:
        return state["devices"][str(npu)]
    except KeyError:
        raise SimError(f"the simulated node has no NPU {npu} (0-{len(state['devices']) - 1})") from None


def node_netns(record: dict, name: str) -> str:
    return next(n["netns"] for n in record["nodes"] if n["name"] == name)


def _all_netns(record: dict) -> list[str]:
    """Every namespace of the cluster: the servers', and the bastion's if it has one."""
    return [n["netns"] for n in record["nodes"]] + ([record["bastion"]["netns"]] if record.get("bastion") else [])


def ssh_config_text(record: dict, key_file: Path, known_hosts: Path) -> str:
    """An ssh_config for a cluster behind its bastion: what a user of such a cluster has in ~/.ssh/config."""
    bastion = record["bastion"]
    lines = [f"# Written by `ascend-run sim up --bastion`: the servers are reachable only through {bastion['name']}.",
             f"Host {bastion['name']}", f"  HostName {bastion['address']}", ""]
    for node in record["nodes"]:
        lines += [f"Host {node['name']}", f"  HostName {node['address']}", f"  ProxyJump {bastion['name']}", ""]
    lines += [f"Host {bastion['name']} {' '.join(n['name'] for n in record['nodes'])}", "  User root",
              f"  IdentityFile {key_file}", f"  UserKnownHostsFile {known_hosts}", "  StrictHostKeyChecking yes", ""]
    return "\n".join(lines)


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
        raise SimError("missing tools: " + ", ".join(missing), fix="install them: bash scripts/install-sim-deps.sh")


MAX_SOCKET_PATH = 107  # sun_path is 108 bytes with the trailing NUL
LOCK_FILE = Path("/run/ascend-run-sim.lock")


def _storage_driver(directory: Path) -> str:
    """overlay2 when the node daemons' data-root (under `directory`) can hold overlay layers, else vfs.

    The probe mounts a throwaway overlay in a private mount namespace, so nothing can leak to the host.
    """
    probe = Path(tempfile.mkdtemp(prefix=".overlay-probe-", dir=directory))
    try:
        for sub in ("lower", "upper", "work", "merged"):
            (probe / sub).mkdir()
        opts = f"lowerdir={probe / 'lower'},upperdir={probe / 'upper'},workdir={probe / 'work'}"
        result = _run(["unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay", "overlay",
                       "-o", opts, str(probe / "merged")], check=False)
        return "overlay2" if result.returncode == 0 else "vfs"
    finally:
        shutil.rmtree(probe, ignore_errors=True)


IMAGE_CACHE = Path.home() / ".cache" / "ascend-run" / "images"
IMAGE_CACHE_KEEP = 3


def _saved_image(base_url: str, image: str) -> Path:
    """`docker save` of `image` as a tarball named by its id, made once and shared by concurrent callers."""
    inspect = _run(["docker", "-H", base_url, "image", "inspect", "--format", "{{.Id}}", image], check=False)
    if inspect.returncode != 0:
        raise SimError(f"image {image} is not in the engine at {base_url}: {inspect.stderr.strip()}",
                       fix="build it first (ascend-run image build train), or use --base-image")
    IMAGE_CACHE.mkdir(parents=True, exist_ok=True)
    tar = IMAGE_CACHE / f"{inspect.stdout.strip().removeprefix('sha256:')[:24]}.tar"
    with held(IMAGE_CACHE / ".lock"):
        if not tar.is_file():
            partial = tar.with_suffix(".partial")
            with partial.open("wb") as fh:
                proc = subprocess.run(["docker", "-H", base_url, "save", image], check=False, stdout=fh,
                                      stderr=subprocess.PIPE)
            if proc.returncode != 0:
                partial.unlink(missing_ok=True)
                raise SimError(f"docker save {image} failed: {proc.stderr.decode().strip()}")
            partial.rename(tar)
        tar.touch()
        for old in sorted(IMAGE_CACHE.glob("*.tar"), key=lambda p: p.stat().st_mtime)[:-IMAGE_CACHE_KEEP]:
            old.unlink(missing_ok=True)  # keep the cache to the last few images (they are 0.3-2 GB each)
    return tar


def descendants(roots: set[int]) -> set[int]:
    """`roots` and every process below them, from one pass over /proc."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            ppid = _ppid(int(entry.name))
            if ppid:
                children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(roots)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return found


def _wait_gone(pids, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _ppid(pid: int) -> int:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0
    return int(stat.rpartition(")")[2].split()[1])  # the name in parentheses may contain spaces


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
    """Running (a zombie waiting for its parent counts as gone: it holds no namespace or mount)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def _link_exists(name: str) -> bool:
    return Path(f"/sys/class/net/{name}").exists()


_PROBE = ("import socket, sys\ntry:\n    socket.create_connection((sys.argv[1], int(sys.argv[2])), 0.5).close()\n"
          "except OSError:\n    sys.exit(1)\n")


def _port_open(address: str, port: int = 22, netns: str | None = None) -> bool:
    """Whether address:port accepts a connection, from here or (servers behind a bastion) from `netns`."""
    if netns is not None:
        return _run(["ip", "netns", "exec", netns, sys.executable, "-c", _PROBE, address, str(port)],
                    check=False).returncode == 0
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


def _wait_port(node: SimNode, deadline: float, pid: int | None = None, via: str | None = None) -> None:
    """Until the node's sshd accepts connections (seen from the namespace `via`, for servers behind a
    bastion); fails at once if the node's setup script died."""
    while not _port_open(node.address, netns=via):
        died = pid is not None and not _alive(pid)
        if died or time.monotonic() > deadline:
            tail = node.layout.log.read_text()[-600:] if node.layout.log.exists() else ""
            why = "the node's setup script exited" if died else "sshd did not come up"
            raise SimError(f"{node.name}: {why} ({node.address}:22); {node.layout.log}:\n{tail}",
                           fix="see the log above; `ascend-run sim up` tore down what it had made")
        time.sleep(0.05)


def _docker_ok(layout: NodeLayout) -> bool:
    return _run(["docker", "-H", f"unix://{layout.docker_socket}", "version", "--format", "{{.Server.Version}}"],
                check=False).returncode == 0


def _wait_socket(node: SimNode, deadline: float, netns: str) -> None:
    """Until the node's dockerd answers; fails at once if it is no longer running."""
    grace = time.monotonic() + 3  # the script forks dockerd before sshd; give the fork time to exec
    while not (node.layout.docker_socket.exists() and _docker_ok(node.layout)):
        died = time.monotonic() > grace and not any(_comm(p) == "dockerd" for p in _netns_pids(netns))
        if died or time.monotonic() > deadline:
            log = node.layout.root / "dockerd.log"
            tail = log.read_text()[-800:] if log.exists() else ""
            raise SimError(f"{node.name}: dockerd {'exited' if died else 'did not answer'}; {log}:\n{tail}")
        time.sleep(0.1)
