"""The control plane of a simulated Kubernetes: what runs on this machine, as argv lists and file texts.

Everything listens on the cluster bridge's own address (10.233.X.1, this machine's leg on the bridge) or
on loopback, never on every interface: two simulated clusters run side by side, and the servers reach the
API server and cluster DNS on their default gateway.
- etcd: loopback only, ports from the cluster's /24 (no one but the API server talks to it);
- kube-apiserver: TLS (the cluster CA), bearer tokens, Node and RBAC authorization, service accounts;
- kube-controller-manager and kube-scheduler: no serving port of their own (secure-port 0);
- CoreDNS: the `kubernetes` plugin (Services, headless Services, pod names) on the bridge address, port 53;
  the kubelets give it to pods as their nameserver (clusterDNS).
Pure functions of a `ControlPlane` record: kube/cluster.py starts them and records their pids.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

SERVICE_RANGE = "10.96.0.0/16"   # service addresses (an allocation range: no kube-proxy routes them here)
FIRST_SERVICE_IP = "10.96.0.1"
CLUSTER_DOMAIN = "cluster.local"
API_PORT = 6443


@dataclass(frozen=True)
class ControlPlane:
    folder: Path          # DIR/kubernetes
    address: str          # the bridge's address on this machine: 10.233.X.1
    third_octet: int
    bin: Path             # the build cache's bin folder

    @property
    def pki(self) -> Path:
        return self.folder / "pki"

    @property
    def server(self) -> str:
        return f"https://{self.address}:{API_PORT}"

    @property
    def etcd_port(self) -> int:
        """Loopback ports of this cluster's etcd (client, peer): distinct for every /24, below the
        ephemeral range."""
        return 20000 + 2 * self.third_octet

    def kubeconfig(self, name: str) -> Path:
        return self.folder / f"{name}.kubeconfig"

    def log(self, name: str) -> Path:
        return self.folder / "logs" / f"{name}.log"


def kubeconfig_text(server: str, ca_file: Path, user: str, token: str) -> str:
    """A kubeconfig with one cluster, user and context (JSON is YAML): the CA inline, so the file alone works."""
    from base64 import b64encode

    ca = b64encode(ca_file.read_bytes()).decode()
    return json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "ascend-run-sim", "preferences": {},
        "clusters": [{"name": "ascend-run-sim", "cluster": {"server": server, "certificate-authority-data": ca}}],
        "users": [{"name": user, "user": {"token": token}}],
        "contexts": [{"name": "ascend-run-sim", "context": {"cluster": "ascend-run-sim", "user": user}}],
    }, indent=2) + "\n"


def etcd_argv(cp: ControlPlane) -> list[str]:
    client, peer = cp.etcd_port, cp.etcd_port + 1
    return [str(cp.bin / "etcd"), "--name", "sim", "--data-dir", str(cp.folder / "etcd"),
            "--listen-client-urls", f"http://127.0.0.1:{client}", "--advertise-client-urls", f"http://127.0.0.1:{client}",
            "--listen-peer-urls", f"http://127.0.0.1:{peer}", "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
            "--initial-cluster", f"sim=http://127.0.0.1:{peer}", "--log-level", "warn",
            "--quota-backend-bytes", str(1 << 30), "--unsafe-no-fsync"]  # a throwaway cluster: speed over durability


def apiserver_argv(cp: ControlPlane) -> list[str]:
    pki = cp.pki
    return [str(cp.bin / "kube-apiserver"),
            f"--advertise-address={cp.address}", f"--bind-address={cp.address}", f"--secure-port={API_PORT}",
            f"--etcd-servers=http://127.0.0.1:{cp.etcd_port}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}", f"--token-auth-file={pki / 'tokens.csv'}",
            "--authorization-mode=Node,RBAC", "--enable-admission-plugins=NodeRestriction",
            f"--service-account-issuer=https://kubernetes.default.svc.{CLUSTER_DOMAIN}",
            f"--service-account-key-file={pki / 'sa.pub'}", f"--service-account-signing-key-file={pki / 'sa.key'}",
            f"--service-cluster-ip-range={SERVICE_RANGE}",
            # logs, exec and port-forward go through the kubelets: a client certificate they trust, and
            # their serving certificates checked against the cluster CA
            f"--kubelet-client-certificate={pki / 'apiserver-kubelet-client.crt'}",
            f"--kubelet-client-key={pki / 'apiserver-kubelet-client.key'}",
            f"--kubelet-certificate-authority={pki / 'ca.crt'}", "--kubelet-preferred-address-types=InternalIP",
            "--allow-privileged=true", "--profiling=false", "--anonymous-auth=false",
            "--event-ttl=2h", "--v=0"]


def controller_manager_argv(cp: ControlPlane) -> list[str]:
    return [str(cp.bin / "kube-controller-manager"), f"--kubeconfig={cp.kubeconfig('controller-manager')}",
            f"--service-account-private-key-file={cp.pki / 'sa.key'}", f"--root-ca-file={cp.pki / 'ca.crt'}",
            "--leader-elect=false", "--secure-port=0",
            # each controller with its own service account and bootstrap role, as kubeadm runs it
            "--use-service-account-credentials=true",
            "--controllers=*,-nodeipam,-cloud-node-lifecycle,-service-lb-controller,-route",
            "--profiling=false", "--v=0"]


def scheduler_argv(cp: ControlPlane) -> list[str]:
    return [str(cp.bin / "kube-scheduler"), f"--kubeconfig={cp.kubeconfig('scheduler')}",
            f"--authentication-kubeconfig={cp.kubeconfig('scheduler')}",
            f"--authorization-kubeconfig={cp.kubeconfig('scheduler')}",
            "--leader-elect=false", "--secure-port=0", "--profiling=false", "--v=0"]


def corefile(cp: ControlPlane) -> str:
    """Cluster DNS on the bridge address. No cache: a headless Service's records must be there the moment
    the pods are (msrun's ranks look up pod 0 as soon as they start), and no upstream: nothing outside."""
    return "\n".join([
        ".:53 {",
        f"    bind {cp.address}",
        "    errors",
        f"    health {cp.address}:8080",
        f"    ready {cp.address}:8181",
        f"    kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{",
        f"        kubeconfig {cp.kubeconfig('coredns')} ascend-run-sim",
        "        pods insecure",
        "        fallthrough in-addr.arpa ip6.arpa",
        "    }",
        "    loadbalance",
        "}", ""])


def coredns_argv(cp: ControlPlane) -> list[str]:
    return [str(cp.bin / "coredns"), "-conf", str(cp.folder / "Corefile")]


# What CoreDNS reads, granted to its own user (pki.tokens): the kubernetes plugin lists and watches these.
COREDNS_RBAC = [
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
     "metadata": {"name": "ascend-run:coredns"},
     "rules": [{"apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                "verbs": ["list", "watch"]},
               {"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"], "verbs": ["list", "watch"]}]},
    {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
     "metadata": {"name": "ascend-run:coredns"},
     "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "ascend-run:coredns"},
     "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "ascend-run:coredns"}]},
]
