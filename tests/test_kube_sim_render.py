"""The simulated Kubernetes' files and command lines, without starting anything (sim/kube/*.py)."""

from __future__ import annotations

import io
import ipaddress
import json
import tarfile
from pathlib import Path

import tomllib

from ascend_run.inputs.profiles import get_profile
from ascend_run.sim.kube import build, control, node
from ascend_run.sim.kube.pki import PKI

BIN = Path("/cache/bin")


def plane(octet: int = 7) -> control.ControlPlane:
    return control.ControlPlane(Path("/c/kubernetes"), f"10.233.{octet}.1", octet, BIN)


def kube_node(index: int, octet: int = 7) -> node.KubeNode:
    return node.KubeNode(f"sim-node-{index}", index, f"10.233.{octet}.{10 + index}", Path(f"/c/nodes/sim-node-{index}"),
                         octet, BIN)


def test_pod_ranges_are_disjoint_per_server_and_per_cluster():
    nets = [ipaddress.ip_network(node.pod_cidr(octet, i)) for octet in (1, 2) for i in range(node.MAX_KUBE_NODES)]
    assert all(not a.overlaps(b) for i, a in enumerate(nets) for b in nets[i + 1:])
    assert all(n.subnet_of(ipaddress.ip_network("10.230.0.0/16")) for n in nets)


def test_control_plane_listens_only_on_the_bridge_address_or_loopback():
    cp = plane()
    argv = control.apiserver_argv(cp) + control.etcd_argv(cp)
    assert "--bind-address=10.233.7.1" in argv
    urls = [a for a in argv if a.startswith("http://")]
    assert urls and all(u.startswith("http://127.0.0.1:") for u in urls)
    assert not any("0.0.0.0" in a for a in argv)
    assert "--secure-port=0" in control.controller_manager_argv(cp)
    assert "--secure-port=0" in control.scheduler_argv(cp)
    assert "--authorization-mode=Node,RBAC" in argv and "--anonymous-auth=false" in argv
    assert plane(7).etcd_port != plane(8).etcd_port and plane(254).etcd_port + 1 < 32768  # below ephemeral ports
    assert "bind 10.233.7.1" in control.corefile(cp)


def test_kubelet_config_points_at_cluster_dns_and_its_own_cgroup_root():
    n = kube_node(1)
    config = json.loads(node.kubelet_config(n, "10.233.7.1", Path("/c/kubernetes/pki")))
    assert config["clusterDNS"] == ["10.233.7.1"] and config["address"] == "10.233.7.11"
    assert config["podCIDR"] == "10.230.7.32/27"
    assert config["cgroupRoot"] == "/ascend-run-sim-7-sim-node-1"
    assert config["authentication"]["anonymous"]["enabled"] is False
    argv = node.kubelet_argv(n, get_profile("atlas-800t-a2"))
    labels = dict(kv.split("=") for kv in next(a for a in argv if a.startswith("--node-labels=")).split("=", 1)[1]
                  .split(","))
    assert labels["accelerator-type"] == "module-910b-8"  # from the profile, which the charts select on
    assert not [k for k in labels if "kubernetes.io" in k]  # NodeRestriction refuses those from a kubelet


def test_containerd_config_is_valid_toml_with_the_kits_runc_and_cni():
    text = node.containerd_config(kube_node(0), "overlayfs")
    config = tomllib.loads(text)
    runtime = config["plugins"]["io.containerd.cri.v1.runtime"]
    assert runtime["containerd"]["runtimes"]["runc"]["options"]["BinaryName"] == str(BIN / "runc")
    assert runtime["cni"]["bin_dirs"] == [str(BIN)]
    assert config["plugins"]["io.containerd.cri.v1.images"]["pinned_images"]["sandbox"] == build.PAUSE_IMAGE
    conflist = json.loads(node.cni_conflist(kube_node(2)))
    assert conflist["plugins"][0]["ipam"]["ranges"] == [[{"subnet": "10.230.7.64/27"}]]


def test_device_plugin_gets_the_profiles_resource_and_management_devices():
    argv = node.device_plugin_argv(kube_node(0), get_profile("atlas-800t-a2"))
    assert argv[argv.index("--resource") + 1] == "huawei.com/Ascend910"
    assert argv[argv.index("--shared-devices") + 1] == "/dev/davinci_manager,/dev/devmm_svm,/dev/hisi_hdc"


def test_pki_files_are_private_and_tokens_name_each_kubelet(tmp_path):
    pki = PKI(tmp_path / "pki")
    pki.create_ca()
    key, cert = pki.issue("apiserver", "kube-apiserver", server=True, ips=["10.233.7.1"], dns=["kubernetes"])
    tokens = pki.tokens(["sim-node-0"])
    assert tokens["kubelet-sim-node-0"].user == "system:node:sim-node-0"
    lines = (tmp_path / "pki" / "tokens.csv").read_text().splitlines()
    assert any(line.endswith(',"system:nodes"') and "system:node:sim-node-0" in line for line in lines)
    for path in (key, cert, tmp_path / "pki" / "ca.key", tmp_path / "pki" / "tokens.csv"):
        assert path.stat().st_mode & 0o077 == 0, path
    assert len({t.value for t in tokens.values()}) == len(tokens)


def test_pause_image_archive_is_what_ctr_import_reads(tmp_path):
    binary = tmp_path / "pause"
    binary.write_bytes(b"\x7fELF not really")
    archive = tarfile.open(fileobj=io.BytesIO(build.pause_image_tar(binary)))
    manifest = json.load(archive.extractfile("manifest.json"))
    assert manifest[0]["RepoTags"] == [build.PAUSE_IMAGE]
    layer = tarfile.open(fileobj=archive.extractfile(manifest[0]["Layers"][0]))
    assert layer.extractfile("pause").read() == binary.read_bytes()
    config = json.load(archive.extractfile(manifest[0]["Config"]))
    assert config["config"]["Entrypoint"] == ["/pause"]


def test_cache_folder_is_keyed_by_version_and_build_inputs():
    folder = build.cache_dir()
    assert folder.name.startswith(f"kubernetes-{build.KUBERNETES_VERSION}-")
    assert folder.name.endswith(build.inputs_digest())
    assert "k8s.io/kubernetes v1.34.4" in (build.GO_DIR / "components" / "go.mod").read_text()
    assert (build.GO_DIR / "components" / "go.sum").is_file() and (build.GO_DIR / "runtime" / "go.sum").is_file()


def test_verify_reports_a_tampered_binary(tmp_path):
    folder = tmp_path / "cache"
    (folder / "bin").mkdir(parents=True)
    lines = []
    for name in [*build.BINARIES, "pause.tar"]:
        (folder / "bin" / name).write_bytes(name.encode())
        lines.append(f"{build._sha256(folder / 'bin' / name)}  {name}")
    (folder / "SHA256SUMS").write_text("\n".join(lines) + "\n")
    assert build.verify(folder) is None
    (folder / "bin" / "kubelet").write_bytes(b"changed")
    assert "kubelet" in build.verify(folder)
