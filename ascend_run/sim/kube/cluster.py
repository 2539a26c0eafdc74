"""`sim up --kubernetes`: a real Kubernetes on the simulated servers, and its teardown.

The control plane (control.py) runs on this machine on the cluster bridge's address; every server runs
containerd, the kubelet and the device plugin in its own namespaces (node.py) and registers as a Node named
after it, with the labels of an Atlas node and `huawei.com/Ascend910: 8` allocatable. DIR/kubeconfig is the
admin's. Every process is recorded in DIR/sim.json before it starts (under `pids`, like the servers'), so
`sim down` stops it; what outlives processes (cgroups under the servers' cgroup roots) is removed there too.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ascend_run.errors import SimError
from ascend_run.inputs.profiles import get_profile
from ascend_run.sim.kube import build, control, node
from ascend_run.sim.kube.api import Api, node_summary
from ascend_run.sim.kube.pki import PKI, write_private

READY_TIMEOUT_S = 180  # the API server's first start on a busy 2-core machine takes 10-30 s


class KubeSim:
    """The Kubernetes half of a simulated cluster (a `SimCluster` made with docker)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster
        self.folder = cluster.dir / "kubernetes"
        self.kubelets: dict[str, subprocess.Popen] = {}  # started by this process (up), watched until Ready

    @property
    def kubeconfig(self) -> Path:
        return self.cluster.dir / "kubeconfig"

    def _plane(self, record: dict, bin_dir: Path) -> control.ControlPlane:
        gateway = f"10.233.{record['third_octet']}.1"
        return control.ControlPlane(self.folder, gateway, record["third_octet"], bin_dir)

    def _nodes(self, record: dict, bin_dir: Path) -> list[node.KubeNode]:
        return [node.KubeNode(n["name"], n["index"], n["address"], Path(n["root"]), record["third_octet"], bin_dir)
                for n in record["nodes"]]

    def api(self) -> Api:
        record = self.cluster.record()
        kube = record.get("kubernetes")
        if not kube:
            raise SimError(f"the simulated cluster in {self.cluster.dir} runs no Kubernetes",
                           fix=f"ascend-run sim down --dir {self.cluster.dir}; ascend-run sim up --kubernetes")
        return Api(kube["server"], self.folder / "pki" / "ca.crt", kube["admin_token"])

    # --- processes ------------------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], log: Path, netns_pid: int | None = None,
               env: dict[str, str] | None = None) -> subprocess.Popen:
        """Start a daemon (in a server's namespaces when `netns_pid` is given); its pid is in sim.json first."""
        if netns_pid is not None:
            argv = ["nsenter", "-t", str(netns_pid), "-m", "-u", "-n", "--", *argv]
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "ab") as out:
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                    start_new_session=True, env={**os.environ, **(env or {})})
        record = self.cluster.record()
        record["pids"][name] = proc.pid
        self.cluster._save(record)
        return proc

    def _in_node(self, pid: int, argv: list[str], timeout: float = 600) -> str:
        result = subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", *argv], capture_output=True,
                                text=True, timeout=timeout)
        if result.returncode != 0:
            raise SimError(f"`{shlex.join(argv)}` in a simulated server failed: {result.stderr.strip()[-800:]}")
        return result.stdout

    # --- up -------------------------------------------------------------------------------------------

    def up(self, say: Callable[[str], None] = lambda _m: None) -> None:
        record = self.cluster.record()
        if not record.get("docker"):
            raise SimError("--kubernetes needs the servers' own runtimes (drop --no-docker)")
        if len(record["nodes"]) > node.MAX_KUBE_NODES:
            raise SimError(f"--kubernetes takes at most {node.MAX_KUBE_NODES} servers (one /{node.POD_PREFIX} "
                           f"of pod addresses each)")
        if record.get("bastion"):
            raise SimError("--kubernetes and --bastion do not go together: the kubelets reach the API server "
                           "on the cluster bridge")
        started = time.monotonic()
        bin_dir = build.ensure(say) / "bin"
        say(f"Kubernetes {build.KUBERNETES_VERSION} components checked in {bin_dir.parent} "
            f"({time.monotonic() - started:.1f} s)")
        profile = get_profile(record["profile"])
        cp = self._plane(record, bin_dir)
        nodes = self._nodes(record, bin_dir)
        tokens = self._pki(cp, nodes)
        record = self.cluster.record()
        record["kubernetes"] = {"version": build.KUBERNETES_VERSION, "server": cp.server, "bin": str(bin_dir),
                                "admin_token": tokens["admin"].value,
                                "cgroup_roots": [n.cgroup_root for n in nodes]}
        self.cluster._save(record)
        self._control_plane(cp, tokens, say)
        self._pod_routes(record, nodes)
        with ThreadPoolExecutor(max_workers=len(nodes)) as pool:  # servers start in parallel
            list(pool.map(lambda n: self._node_up(n, cp, tokens, profile, record), nodes))
        self._wait_nodes(profile, len(nodes), say)
        say(f"Kubernetes up in {time.monotonic() - started:.0f} s: kubectl --kubeconfig {self.kubeconfig} get nodes")

    def _pki(self, cp: control.ControlPlane, nodes: list[node.KubeNode]):
        pki = PKI(cp.pki)
        pki.create_ca()
        pki.issue("apiserver", "kube-apiserver", server=True, ips=[cp.address, control.FIRST_SERVICE_IP],
                  dns=["kubernetes", "kubernetes.default", "kubernetes.default.svc",
                       f"kubernetes.default.svc.{control.CLUSTER_DOMAIN}"])
        pki.issue("apiserver-kubelet-client", "kube-apiserver-kubelet-client", server=False, org="system:masters")
        pki.service_account_keys()
        for n in nodes:
            pki.issue(f"kubelet-{n.name}", n.name, server=True, ips=[n.address], dns=[n.name])
        tokens = pki.tokens([n.name for n in nodes])
        for name, path in (("controller-manager", cp.kubeconfig("controller-manager")),
                           ("scheduler", cp.kubeconfig("scheduler")), ("coredns", cp.kubeconfig("coredns")),
                           ("admin", self.kubeconfig)):
            write_private(path, control.kubeconfig_text(cp.server, pki.ca_cert, name, tokens[name].value))
        return tokens

    def _control_plane(self, cp: control.ControlPlane, tokens, say: Callable[[str], None]) -> None:
        etcd = self._spawn("etcd", control.etcd_argv(cp), cp.log("etcd"))
        apiserver = self._spawn("kube-apiserver", control.apiserver_argv(cp), cp.log("kube-apiserver"))
        api = Api(cp.server, cp.pki / "ca.crt", tokens["admin"].value)
        api.wait_ready(READY_TIMEOUT_S, alive=lambda: apiserver.poll() is None and etcd.poll() is None,
                       what=f"kube-apiserver (log: {cp.log('kube-apiserver')})")
        say(f"API server ready at {cp.server}")
        self._spawn("kube-controller-manager", control.controller_manager_argv(cp), cp.log("kube-controller-manager"))
        self._spawn("kube-scheduler", control.scheduler_argv(cp), cp.log("kube-scheduler"))
        for obj in control.COREDNS_RBAC:
            api.create(obj)
        (cp.folder / "Corefile").write_text(control.corefile(cp))
        self._spawn("coredns", control.coredns_argv(cp), cp.log("coredns"))

    def _pod_routes(self, record: dict, nodes: list[node.KubeNode]) -> None:
        """Each server's pod /27 reachable from every other server and from this machine (for DNS answers).
        The routes on this machine go through the cluster bridge and vanish with it."""
        for n in nodes:
            subprocess.run(["ip", "route", "replace", n.pod_cidr, "via", n.address, "dev", record["bridge"]],
                           check=True, capture_output=True)
            for other in nodes:
                if other is not n:
                    subprocess.run(["ip", "-n", record_netns(record, other.name), "route", "replace", n.pod_cidr,
                                    "via", n.address], check=True, capture_output=True)

    def _node_up(self, n: node.KubeNode, cp: control.ControlPlane, tokens, profile, record: dict) -> None:
        storage = record.get("storage_driver", "overlay2")
        folder = n.folder
        for sub in ("kubelet", "cni", "cni-cache", "ipam", "sysctl"):
            (folder / sub).mkdir(parents=True, exist_ok=True)
        for mountpoint in ("/var/lib/kubelet", "/var/lib/cni"):  # empty mount points on this machine
            Path(mountpoint).mkdir(parents=True, exist_ok=True)
        for key, value in node.KUBELET_SYSCTLS.items():
            (folder / "sysctl" / key.replace("/", ".")).write_text(value + "\n")
        (folder / "resolv.conf").write_text("")
        (folder / "containerd.toml").write_text(
            node.containerd_config(n, "overlayfs" if storage == "overlay2" else "native"))
        (folder / "cni" / "10-ascend-run-sim.conflist").write_text(node.cni_conflist(n))
        (folder / "kubelet.yaml").write_text(node.kubelet_config(n, cp.address, cp.pki))
        pki = PKI(cp.pki)
        for suffix in ("crt", "key"):
            write_private(folder / f"kubelet.{suffix}", pki.path(f"kubelet-{n.name}.{suffix}").read_bytes())
        write_private(folder / "kubelet.kubeconfig",
                 control.kubeconfig_text(cp.server, pki.ca_cert, n.name, tokens[f"kubelet-{n.name}"].value))
        make_cgroup_root(n.cgroup_root)
        pid = self.cluster.node_pid(n.name)
        self._in_node(pid, ["sh", "-c", node.prepare_script(n)])
        env = {"PATH": f"{n.bin}:{os.environ.get('PATH', '/usr/sbin:/usr/bin:/sbin:/bin')}"}
        self._spawn(f"containerd@{n.name}", node.containerd_argv(n), n.log("containerd"), pid, env)
        self._wait_containerd(pid, n)
        self.import_image(n.bin / "pause.tar", [n.name])
        self.kubelets[n.name] = self._spawn(f"kubelet@{n.name}", node.kubelet_argv(n, profile), n.log("kubelet"),
                                            pid, env)
        self._spawn(f"device-plugin@{n.name}", node.device_plugin_argv(n, profile), n.log("device-plugin"), pid)

    def _wait_containerd(self, pid: int, n: node.KubeNode, timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            probe = subprocess.run(["nsenter", "-t", str(pid), "-m", "-u", "-n", "--", str(n.bin / "ctr"),
                                    "--address", node.CONTAINERD_SOCKET, "version"], capture_output=True, text=True)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise SimError(f"containerd on {n.name} did not answer within {timeout_s:.0f} s "
                               f"(log: {n.log('containerd')})")
            time.sleep(0.3)

    def _wait_nodes(self, profile, count: int, say: Callable[[str], None]) -> None:
        api = self.api()
        deadline = time.monotonic() + READY_TIMEOUT_S
        want = profile.npu_count
        while True:
            try:
                rows = [node_summary(n, profile.kubernetes.resource_name) for n in api.nodes()]
            except OSError:
                rows = []
            done = [r for r in rows if r["ready"] and r["npus"] == want]
            if len(done) == count:
                say(f"{count} nodes Ready, each with {want} {profile.kubernetes.resource_name}")
                return
            for name, proc in self.kubelets.items():
                if proc.poll() is not None:
                    log = self.cluster.node(name).layout.root / "kube" / "kubelet.log"
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    raise SimError(f"the kubelet of {name} exited ({proc.returncode}): " + " | ".join(tail),
                                   fix=f"read {log}")
            if time.monotonic() > deadline:
                raise SimError(f"{count - len(done)} of {count} nodes not Ready with {want} "
                               f"{profile.kubernetes.resource_name} after {READY_TIMEOUT_S} s: {rows}",
                               fix=f"read the kubelet logs in {self.cluster.dir}/nodes/*/kube/kubelet.log")
            time.sleep(1)

    # --- images ---------------------------------------------------------------------------------------

    def import_image(self, tar: Path, names: list[str] | None = None) -> None:
        """Import a `docker save` archive into the runtime of every server (or `names`), where the kubelet
        finds it (containerd's k8s.io namespace): no registry is needed, as with `image ship`."""
        record = self.cluster.record()
        ctr = Path(record["kubernetes"]["bin"]) / "ctr"
        targets = [n["name"] for n in record["nodes"] if names is None or n["name"] in names]

        def one(name: str) -> None:
            self._in_node(self.cluster.node_pid(name), [str(ctr), "--address", node.CONTAINERD_SOCKET, "-n", "k8s.io",
                                                         "images", "import", "--local", str(tar)])

        with ThreadPoolExecutor(max_workers=max(1, len(targets))) as pool:
            list(pool.map(one, targets))

    # --- status and down ------------------------------------------------------------------------------

    def status(self) -> list[dict]:
        record = self.cluster.record()
        profile = get_profile(record["profile"])
        try:
            return [node_summary(n, profile.kubernetes.resource_name) for n in self.api().nodes()]
        except OSError as exc:
            raise SimError(f"the simulated cluster's API server does not answer: {exc}",
                           fix=f"ascend-run sim down --dir {self.cluster.dir}, then up again") from None


def record_netns(record: dict, name: str) -> str:
    return next(n["netns"] for n in record["nodes"] if n["name"] == name)


def _cgroup_controllers() -> list[Path]:
    """This machine's cgroup hierarchies: the v1 ones (/sys/fs/cgroup/<controller>, and the v2 `unified` one of
    a hybrid layout, where runc makes a folder too), or the v2 mount itself."""
    top = Path("/sys/fs/cgroup")
    if (top / "cgroup.controllers").exists():
        return [top]
    return [p for p in top.iterdir() if p.is_dir()]


def make_cgroup_root(root: str) -> None:
    """A kubelet's cgroupRoot must exist in every hierarchy before it starts; cpuset needs its CPUs and
    memory nodes set (copied from the parent) before anything can join it."""
    for controller in _cgroup_controllers():
        folder = controller / root.lstrip("/")
        folder.mkdir(exist_ok=True)
        for name in ("cpuset.cpus", "cpuset.mems"):
            if (folder / name).exists() and not (folder / name).read_text().strip():
                (folder / name).write_text((controller / name).read_text())


def remove_cgroups(record: dict) -> None:
    """The kubelets' cgroup trees (one root per server, under every controller): they outlive the processes."""
    roots = (record.get("kubernetes") or {}).get("cgroup_roots", [])
    if not roots:
        return
    for controller in _cgroup_controllers():
        for root in roots:
            top = controller / root.lstrip("/")
            if top.is_dir():
                for folder in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                    _rmdir(folder)
                _rmdir(top)


def _rmdir(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError:
        pass
