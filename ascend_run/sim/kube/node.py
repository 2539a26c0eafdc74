"""A simulated server as a Kubernetes node: containerd, the CNI pod network, the kubelet, the device plugin.

All of it runs inside the server's own namespaces (network, mount, UTS: entered with nsenter), so the
kubelet registers with the server's name and address, sees the server's /dev/davinci* stand-ins, and its
pods' mounts, sandboxes and network devices die with the server:
- containerd (CRI) with runc: its socket at /run/containerd in the server's private /run, its images and
  snapshots under the server's folder; the pod sandbox image is imported, never pulled;
- the pod network: a CNI bridge in the server's namespace with the server's own /27 of 10.230.X.0/24, and a
  route on every other server (and on this machine, for cluster DNS answers) to each server's /27;
- the kubelet: /var/lib/kubelet is the server's own folder (bind-mounted: the device-plugin socket path is
  fixed there), cgroups under a root of its own, clusterDNS on the bridge address, and three kernel
  settings it insists on seen through files of the server's (it would otherwise change them for the
  whole machine);
- ascend-device-plugin: the server's NPUs as `huawei.com/Ascend910` (the profile's resource name).
"""

from __future__ import annotations

import json
import shlex
from dataclasses import dataclass
from pathlib import Path

from ascend_run.inputs.profiles import HardwareProfile
from ascend_run.sim.kube.build import CNI_PLUGINS, PAUSE_IMAGE
from ascend_run.sim.kube.control import CLUSTER_DOMAIN

CONTAINERD_SOCKET = "/run/containerd/containerd.sock"
POD_PREFIX = 27           # one /27 of 10.230.X.0/24 per server: 8 servers, 30 pods each
MAX_KUBE_NODES = 2 ** (POD_PREFIX - 24)
# Kernel settings the kubelet checks at start (and would write, machine-wide): the values it wants, shown
# to it through files bind-mounted in the server's mount namespace.
KUBELET_SYSCTLS = {"vm/overcommit_memory": "1", "kernel/panic": "10", "kernel/panic_on_oops": "1",
                   "vm/panic_on_oom": "0"}


def pod_cidr(third_octet: int, index: int) -> str:
    return f"10.230.{third_octet}.{index << (32 - POD_PREFIX)}/{POD_PREFIX}"


@dataclass(frozen=True)
class KubeNode:
    name: str
    index: int
    address: str
    root: Path            # DIR/nodes/<name>
    third_octet: int
    bin: Path

    @property
    def folder(self) -> Path:
        return self.root / "kube"

    @property
    def cgroup_root(self) -> str:
        return f"/ascend-run-sim-{self.third_octet}-{self.name}"

    @property
    def pod_cidr(self) -> str:
        return pod_cidr(self.third_octet, self.index)

    def log(self, name: str) -> Path:
        return self.folder / f"{name}.log"


def node_labels(profile: HardwareProfile) -> dict[str, str]:
    """The labels of an Atlas node under MindCluster: the profile's (accelerator-type, what the charts
    select on) and the ones its components set on NPU nodes."""
    return {**profile.kubernetes.node_labels, "accelerator": "huawei-Ascend910", "host-arch": "huawei-x86",
            "workerselector": "dls-worker-node"}  # node-role.kubernetes.io/*: NodeRestriction forbids it


def containerd_config(node: KubeNode, snapshotter: str) -> str:
    q = json.dumps  # TOML basic strings are JSON strings
    cri = "plugins.'io.containerd.cri.v1"
    return "\n".join([
        "version = 3",
        f"root = {q(str(node.root / 'containerd'))}",
        f"state = {q('/run/containerd-state')}",
        "[grpc]", f"  address = {q(CONTAINERD_SOCKET)}",
        f"[{cri}.images']", f"  snapshotter = {q(snapshotter)}",
        f"[{cri}.images'.pinned_images]", f"  sandbox = {q(PAUSE_IMAGE)}",
        # this machine's processes lack CAP_SYS_RESOURCE: no oom_score_adj below containerd's own (the
        # sandbox's default -998 fails with EACCES)
        f"[{cri}.runtime']", "  restrict_oom_score_adj = true",
        f"[{cri}.runtime'.containerd]", "  default_runtime_name = \"runc\"",
        f"[{cri}.runtime'.containerd.runtimes.runc]", "  runtime_type = \"io.containerd.runc.v2\"",
        f"[{cri}.runtime'.containerd.runtimes.runc.options]",
        f"  BinaryName = {q(str(node.bin / 'runc'))}", "  SystemdCgroup = false",
        f"[{cri}.runtime'.cni]", f"  bin_dirs = [{q(str(node.bin))}]", f"  conf_dir = {q(str(node.folder / 'cni'))}",
        ""])


def cni_conflist(node: KubeNode) -> str:
    """A bridge on the server with its /27; no masquerade: pod addresses are routed between servers."""
    assert {"bridge", "host-local", "loopback", "portmap"} <= set(CNI_PLUGINS)
    return json.dumps({
        "cniVersion": "1.0.0", "name": "ascend-run-sim",
        "plugins": [
            {"type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": False, "hairpinMode": True,
             "ipam": {"type": "host-local", "ranges": [[{"subnet": node.pod_cidr}]],
                      "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(node.folder / "ipam")}},
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ]}, indent=2) + "\n"


def kubelet_config(node: KubeNode, dns: str, pki: Path) -> str:
    return json.dumps({
        "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
        "address": node.address, "port": 10250, "readOnlyPort": 0, "healthzBindAddress": "127.0.0.1",
        "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                           "x509": {"clientCAFile": str(pki / "ca.crt")}},
        "authorization": {"mode": "AlwaysAllow"},  # only holders of a cluster-CA client certificate get here
        "tlsCertFile": str(node.folder / "kubelet.crt"), "tlsPrivateKeyFile": str(node.folder / "kubelet.key"),
        "cgroupDriver": "cgroupfs", "cgroupRoot": node.cgroup_root, "cgroupsPerQOS": True,
        "failCgroupV1": False,  # the machine has cgroup v1; 1.34 still runs on it
        "clusterDNS": [dns], "clusterDomain": CLUSTER_DOMAIN, "resolvConf": str(node.folder / "resolv.conf"),
        "containerRuntimeEndpoint": f"unix://{CONTAINERD_SOCKET}",
        "podCIDR": node.pod_cidr, "maxPods": 30, "failSwapOn": False, "protectKernelDefaults": False,
        # one disk and one memory for every server: no eviction for pressure the others cause
        "evictionHard": {"memory.available": "1Mi", "nodefs.available": "1%", "nodefs.inodesFree": "1%",
                         "imagefs.available": "1%"},
        "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
        "localStorageCapacityIsolation": False, "serializeImagePulls": False,
        "nodeStatusUpdateFrequency": "4s", "syncFrequency": "10s",
        "oomScoreAdj": 0,  # its default -999 needs CAP_SYS_RESOURCE, which this machine's root lacks
    }, indent=2) + "\n"


def prepare_script(node: KubeNode) -> str:
    """Run once in the server's namespaces before its daemons: private mounts and the pod routes' sysctl."""
    q = shlex.quote
    lines = ["set -eu", "mkdir -p /run/containerd",
             f"mount --bind {q(str(node.folder / 'kubelet'))} /var/lib/kubelet",
             f"mount --bind {q(str(node.folder / 'cni-cache'))} /var/lib/cni",
             "sysctl -qw net.ipv4.ip_forward=1"]
    for key in KUBELET_SYSCTLS:
        lines.append(f"mount --bind {q(str(node.folder / 'sysctl' / key.replace('/', '.')))} /proc/sys/{key}")
    return "\n".join(lines) + "\n"


def containerd_argv(node: KubeNode) -> list[str]:
    return [str(node.bin / "containerd"), "--config", str(node.folder / "containerd.toml"), "--log-level", "warn"]


def kubelet_argv(node: KubeNode, profile: HardwareProfile) -> list[str]:
    labels = ",".join(f"{k}={v}" for k, v in node_labels(profile).items())
    return [str(node.bin / "kubelet"), f"--config={node.folder / 'kubelet.yaml'}",
            f"--kubeconfig={node.folder / 'kubelet.kubeconfig'}", f"--hostname-override={node.name}",
            f"--node-ip={node.address}", f"--node-labels={labels}", "--v=0"]


def device_plugin_argv(node: KubeNode, profile: HardwareProfile) -> list[str]:
    return [str(node.bin / "ascend-device-plugin"), "--resource", profile.kubernetes.resource_name,
            "--shared-devices", ",".join(profile.management_devices)]
