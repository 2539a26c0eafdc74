"""`helm install` for real: the charts on a Kubernetes cluster built from its Go modules on the simulated servers.

What only a cluster can answer is asked of one here: the real kube-apiserver stores the pod spec, the real Job
controller makes the Indexed Job's pods (completion index, podFailurePolicy, backoffLimit), the real scheduler
places them on nodes offering `huawei.com/Ascend910` (from the kit's device plugin on the kubelet's
device-plugin API), the real kubelet resolves the env (the downward API's NODE_RANK) and runs the init
container that waits for CoreDNS to resolve pod 0's headless-Service name, and msrun runs across two pods on
two servers. The fast tests of the chart text (test_charts.py) stay as they are.
"""

from __future__ import annotations

import datetime
import json
import re
import subprocess
import time
from pathlib import Path

import pytest

from ascend_run.sim.demo import demo_job_file
from ascend_run.sim.kube.demo import k8s_job_file
from tests.conftest_e2e import REPO, job_leftovers, run_cli, wait_no_leftovers
from tests.conftest_sim import sim_unavailable

pytestmark = pytest.mark.slow

CHART = REPO / "charts" / "ascend-train"
STEP_LINE = re.compile(r"step:\[\s*(\d+)/\s*\d+\], loss:\s*([0-9.]+)")


@pytest.fixture(scope="session")
def kube_cluster(tmp_path_factory, docker_engine, docker_client, cpu_train_image):
    """Two simulated servers running Kubernetes (sim up --kubernetes), the CPU train image in both their
    Docker daemons (for the same job over SSH) and their containerd (for the pods)."""
    reason = sim_unavailable(docker=True)
    if reason:
        pytest.skip(reason)
    from ascend_run.sim.cluster import SimCluster

    cluster = SimCluster(tmp_path_factory.mktemp("k8s") / "cluster")
    cluster.up(2, "atlas-800t-a2", image=cpu_train_image, image_engine=docker_engine, kubernetes=True)
    try:
        yield cluster, cpu_train_image
    finally:
        cluster.down()


def kubectl(cluster, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
    result = subprocess.run(["kubectl", "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True,
                            text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"kubectl {' '.join(args)}: {result.stderr}")
    return result


def helm(cluster, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run(["helm", "--kubeconfig", str(cluster.kubeconfig), *args], capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    return result


def install(cluster, job_file: Path, tmp_path: Path) -> str:
    """`chart values train -f FILE` then `helm install NAME charts/ascend-train -f values`: the Job's name."""
    values = tmp_path / f"{job_file.stem}-values.yaml"
    made = run_cli("chart", "values", "train", "-f", str(job_file), "--out", str(values))
    assert made.returncode == 0, made.stderr
    name = re.search(r"^name: (\S+)", job_file.read_text(), re.M).group(1)
    helm(cluster, "install", name, str(CHART), "-f", str(values), "--namespace", "default")
    return name


def job_file(cluster, image: str, name: str, extra: str = "", steps: int = 12) -> Path:
    text = k8s_job_file(cluster.dir, image, steps).read_text().replace("name: demo-train", f"name: {name}")
    path = cluster.dir / f"{name}.yaml"
    path.write_text(text.replace(f"--steps {steps}", f"--steps {steps}{extra}"))
    return path


def pods(cluster, job: str) -> list[dict]:
    out = kubectl(cluster, "get", "pods", "-l", f"batch.kubernetes.io/job-name={job}", "-o", "json").stdout
    return json.loads(out)["items"]


def wait_condition(cluster, job: str, timeout: float = 300) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        obj = json.loads(kubectl(cluster, "get", "job", job, "-o", "json").stdout)
        for cond in obj.get("status", {}).get("conditions", []) or []:
            if cond["type"] in ("Complete", "Failed") and cond["status"] == "True":
                return obj
        time.sleep(1)
    raise AssertionError(f"job {job} did not end within {timeout} s: {kubectl(cluster, 'describe', 'job', job).stdout}")


def stamp(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


def test_nodes_are_ready_with_eight_npus_and_atlas_labels(kube_cluster):
    cluster, _ = kube_cluster
    nodes = json.loads(kubectl(cluster, "get", "nodes", "-o", "json").stdout)["items"]
    assert sorted(n["metadata"]["name"] for n in nodes) == ["sim-node-0", "sim-node-1"]
    for node in nodes:
        ready = {c["type"]: c["status"] for c in node["status"]["conditions"]}["Ready"]
        assert ready == "True", node["status"]["conditions"]
        assert node["status"]["allocatable"]["huawei.com/Ascend910"] == "8"
        assert node["metadata"]["labels"]["accelerator-type"] == "module-910b-8"
        assert node["status"]["nodeInfo"]["kubeletVersion"] == "v1.34.4"
        address = next(a["address"] for a in node["status"]["addresses"] if a["type"] == "InternalIP")
        assert address == cluster.node(node["metadata"]["name"]).address


def test_training_chart_runs_msrun_across_two_servers_with_the_loss_of_the_ssh_run(kube_cluster, tmp_path):
    cluster, image = kube_cluster
    job = install(cluster, job_file(cluster, image, "k8s-train"), tmp_path)
    try:
        finished = wait_condition(cluster, job)
        assert finished["status"].get("succeeded") == 2, kubectl(cluster, "describe", "job", job).stdout
        stored = pods(cluster, job)
        # the real Job controller's pods: indexes 0 and 1, on two different servers, NODE_RANK from the index
        assert sorted(p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"] for p in stored) \
            == ["0", "1"]
        assert len({p["spec"]["nodeName"] for p in stored}) == 2
        env = {e["name"]: e for e in stored[0]["spec"]["containers"][0]["env"]}
        assert env["NODE_RANK"]["valueFrom"]["fieldRef"]["fieldPath"] \
            == "metadata.annotations['batch.kubernetes.io/job-completion-index']"
        assert stored[0]["spec"]["containers"][0]["resources"]["limits"]["huawei.com/Ascend910"] == "1"
        # the init container waited for CoreDNS to resolve pod 0's headless-Service name
        last = next(p for p in stored if p["metadata"]["annotations"]["batch.kubernetes.io/job-completion-index"]
                    == "1")
        waited = kubectl(cluster, "logs", last["metadata"]["name"], "-c", "wait-for-master").stdout
        assert re.search(rf"master {job}-0\.{job}\.default\.svc is 10\.230\.", waited), waited
        k8s_loss = STEP_LINE.findall(kubectl(cluster, "logs", last["metadata"]["name"], "-c", "msrun").stdout)
        assert len(k8s_loss) == 12, k8s_loss
        # the device plugin allocated one NPU to each pod through the kubelet (its checkpoint names them)
        for node in cluster.nodes():
            checkpoint = json.loads((node.layout.root / "kube" / "kubelet" / "device-plugins"
                                     / "kubelet_internal_checkpoint").read_text())
            entries = checkpoint["Data"]["PodDeviceEntries"] or []
            assert any(e["ResourceName"] == "huawei.com/Ascend910" for e in entries), checkpoint
    finally:
        helm(cluster, "uninstall", job, "--namespace", "default", "--wait")
    # the same job over SSH on the same servers: the same loss lines from the last rank
    ssh_job = demo_job_file(cluster.dir, image, steps=12)  # the SSH demo's file: job.sync, not a volume
    launched = run_cli("launch", "-f", str(ssh_job), timeout=600)
    assert launched.returncode == 0, launched.stdout[-3000:] + launched.stderr[-3000:]
    logs = tmp_path / "ssh-logs"
    collected = run_cli("logs", "-f", str(ssh_job), "--collect", "--out", str(logs))
    assert collected.returncode == 0, collected.stderr
    ssh_loss = STEP_LINE.findall((logs / "sim-node-1" / "worker_1.log").read_text())
    assert ssh_loss == k8s_loss


def test_a_rank_crash_fails_the_whole_job_within_10s_with_no_pod_left_running(kube_cluster, tmp_path):
    cluster, image = kube_cluster
    job = install(cluster, job_file(cluster, image, "k8s-crash", " --crash-rank 1 --crash-at-step 5", steps=40),
                  tmp_path)
    try:
        finished = wait_condition(cluster, job)
        failed = next(c for c in finished["status"]["conditions"] if c["type"] == "Failed")
        assert failed["status"] == "True" and failed["reason"] == "PodFailurePolicy", failed
        stored = pods(cluster, job)
        exits = [s["state"]["terminated"] for p in stored for s in p["status"].get("containerStatuses", [])
                 if s["name"] == "msrun" and s["state"].get("terminated", {}).get("exitCode", 0) != 0]
        assert exits, [p["status"] for p in stored]
        first_exit = min(stamp(t["finishedAt"]) for t in exits)
        lag = (stamp(failed["lastTransitionTime"]) - first_exit).total_seconds()
        assert lag <= 10, f"Failed {lag:.0f} s after the rank's msrun exited"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            running = [p["metadata"]["name"] for p in pods(cluster, job) if p["status"].get("phase") == "Running"]
            if not running:
                break
            time.sleep(1)
        assert not running, f"pods still Running after the Job failed: {running}"
    finally:
        helm(cluster, "uninstall", job, "--namespace", "default", "--wait")
    assert not job_leftovers(cluster, job)
    wait_no_leftovers(cluster, job, 30)


CRDS = REPO.parent / "shared" / "reference" / "crds"


def test_the_api_server_stores_the_ascendjob_and_the_volcano_podgroup_against_their_real_crds(kube_cluster, tmp_path):
    """No Ascend Operator or Volcano runs here (their modules are not served): the real API server still checks
    the objects the chart renders against the real CRDs, as `helm install` on a MindCluster cluster would."""
    if not CRDS.is_dir():
        pytest.skip(f"{CRDS} missing (the shared reference data)")
    cluster, image = kube_cluster
    for crd in ("ascendjob-crd.yaml", "scheduling.volcano.sh_podgroups.yaml"):
        kubectl(cluster, "apply", "--server-side", "-f", str(CRDS / crd))
    kubectl(cluster, "wait", "--for=condition=established", "crd/ascendjobs.mindxdl.gitee.com",
            "crd/podgroups.scheduling.volcano.sh", "--timeout=60s")
    job = job_file(cluster, image, "k8s-ascendjob")
    for workload, release in (("ascendjob", "k8s-ascendjob"), ("job", "k8s-volcano")):
        values = tmp_path / f"{release}.yaml"
        made = run_cli("chart", "values", "train", "-f", str(job), "--workload", workload, "--out", str(values))
        assert made.returncode == 0, made.stderr
        extra = ["--set", "volcano.enabled=true"] if workload == "job" else []
        helm(cluster, "install", release, str(CHART), "-f", str(values), *extra, "--set",
             f"fullnameOverride={release}", "--namespace", "default")
    try:
        stored = json.loads(kubectl(cluster, "get", "ascendjobs.mindxdl.gitee.com", "k8s-ascendjob", "-o",
                                    "json").stdout)
        assert stored["spec"]["replicaSpecs"]["Scheduler"]["replicas"] == 1
        assert stored["spec"]["replicaSpecs"]["Worker"]["replicas"] == 1
        group = json.loads(kubectl(cluster, "get", "podgroups.scheduling.volcano.sh", "k8s-volcano", "-o",
                                   "json").stdout)
        assert group["spec"]["minMember"] == 2
        # a misspelt field is refused by the CRD's structural schema, as on a real cluster
        bad = kubectl(cluster, "patch", "podgroups.scheduling.volcano.sh", "k8s-volcano", "--type=merge", "-p",
                      '{"spec": {"minMember": "two"}}', check=False)
        assert bad.returncode != 0 and "minMember" in bad.stderr
    finally:
        for release in ("k8s-ascendjob", "k8s-volcano"):
            helm(cluster, "uninstall", release, "--namespace", "default", "--wait")


def test_sim_down_leaves_no_namespace_process_mount_or_cgroup(kube_cluster):
    cluster, _ = kube_cluster
    record = cluster.record()
    pids = [int(p) for p in record["pids"].values()]
    netns = [n["netns"] for n in record["nodes"]]
    cluster.down()
    assert not set(netns) & set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
    assert not [p for p in pids if Path(f"/proc/{p}").exists()]
    mounts = Path("/proc/self/mountinfo").read_text()
    assert str(cluster.dir) not in mounts
    for root in record["kubernetes"]["cgroup_roots"]:
        assert not list(Path("/sys/fs/cgroup").glob(f"*/{root.lstrip('/')}"))
    routes = subprocess.run(["ip", "route"], capture_output=True, text=True).stdout
    assert f"10.230.{record['third_octet']}." not in routes
