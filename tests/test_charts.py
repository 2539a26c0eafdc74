"""Helm charts: rendered with the real `helm`, checked as Kubernetes would run them.

Kubernetes itself cannot run here, so the tests do what its controllers would do with the rendered
objects: the Job controller stamps pod k with its completion index, the StatefulSet controller with its
pod-index label, the LWS webhook prepends LWS_LEADER_ADDRESS; the kubelet resolves fieldRefs and expands
$(VAR) in args; cluster DNS maps <hostname>.<subdomain>.<namespace>.svc through the headless Service.
Then every pod's msrun arguments are read back. Manifests are validated with kubernetes-validate (core
kinds) and with jsonschema against the real Volcano/LWS CRDs (custom kinds).
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import time
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from ascend_run.charts import CHARTS, chart_files
from ascend_run.charts.naming import k8s_quantity, split_image, volume_name
from ascend_run.charts.render import write_chart
from ascend_run.charts.values import chart_values, values_yaml
from ascend_run.cli import cli
from ascend_run.errors import ConfigError
from ascend_run.inputs.deployment import deployment_from_data, load_deployment
from ascend_run.inputs.profiles import get_profile
from tests.reference import REFERENCE

ROOT = Path(__file__).resolve().parents[1]
CRDS = REFERENCE / "crds"
HELM = shutil.which("helm")
K8S_VERSIONS = ["1.28.0", "1.33.0"]
NS = "ml"
EXAMPLES = {"pretrain-1b-single.yaml": "train", "pretrain-671b-128nodes.yaml": "train",
            "infer-671b-4nodes.yaml": "infer"}

needs_helm = pytest.mark.skipif(HELM is None, reason="helm is not installed (run scripts/install-helm.sh)")
if HELM is None and os.environ.get("ASCEND_RUN_REQUIRE_HELM"):
    raise RuntimeError("ASCEND_RUN_REQUIRE_HELM is set but helm is not on PATH: run scripts/install-helm.sh")


# --- helpers: helm, pods as the controllers make them, DNS -------------------------------------------


@pytest.fixture(scope="module")
def charts(tmp_path_factory) -> dict[str, Path]:
    """The charts as the generator makes them (test_generated.py checks the committed copy equals this)."""
    out = tmp_path_factory.mktemp("charts")
    return {kind: write_chart(kind, out) for kind in CHARTS}


def helm(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([HELM, *args], check=False, capture_output=True, text=True, timeout=120)


def render(chart: Path, *sets: str, values: Path | None = None, release: str = "rel") -> list[dict]:
    argv = ["template", release, str(chart), "--namespace", NS]
    for item in sets:
        argv += ["--set", item]
    if values:
        argv += ["-f", str(values)]
    result = helm(*argv)
    if result.returncode != 0:
        raise AssertionError(f"helm template failed: {result.stderr}")
    return [doc for doc in YAML(typ="safe").load_all(result.stdout) if doc]


def one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    if len(found) != 1:
        raise AssertionError(f"expected one {kind}, got {len(found)}: {[d['kind'] for d in docs]}")
    return found[0]


def expand(text: str, env: dict[str, str]) -> str:
    """The kubelet's $(VAR) expansion: defined names are replaced, $$ escapes, unknown ones stay."""
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                  lambda m: "$" if m.group(0) == "$$" else env.get(m.group(1), m.group(0)), text)


def field(pod: dict, path: str) -> str:
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if not match:
        raise AssertionError(f"unexpected fieldRef {path}")
    return pod["metadata"][match.group(1)][match.group(2)]


def container_env(pod: dict, container: dict) -> dict[str, str]:
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "valueFrom" in item:
            env[item["name"]] = field(pod, item["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            env[item["name"]] = expand(item["value"], env)
    return env


def msrun_args(pod: dict) -> dict[str, str]:
    """What msrun gets in this pod, from either launch form, after the kubelet's expansion."""
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "msrun")
    env = container_env(pod, container)
    argv = [expand(a, env) for a in container["command"] + container["args"]]
    if argv[0] == "bash":
        names = ["cmd", "worker_num", "local_worker_num", "master_addr", "master_port", "node_rank", "log_dir",
                 "join", "cluster_time_out"]
        if len(argv) != 11:
            raise AssertionError(f"msrun_launcher.sh takes 9 arguments, got {argv[2:]}")
        return dict(zip(names, argv[2:]))
    out = dict(a[2:].split("=", 1) for a in argv[1:] if a.startswith("--") and "=" in a)
    out["cmd"] = " ".join(a for a in argv[1:] if not a.startswith("--"))
    return out


def job_pods(job: dict) -> list[dict]:
    """Pods as the Job controller creates them for an Indexed Job."""
    pods = []
    for k in range(job["spec"]["completions"]):
        pod = copy.deepcopy(job["spec"]["template"])
        pod["metadata"].setdefault("annotations", {})["batch.kubernetes.io/job-completion-index"] = str(k)
        pod["metadata"]["labels"]["batch.kubernetes.io/job-completion-index"] = str(k)
        pod["metadata"]["name"] = f"{job['metadata']['name']}-{k}-abcde"
        pod["spec"]["hostname"] = f"{job['metadata']['name']}-{k}"
        pods.append(pod)
    return pods


def statefulset_pods(sts: dict) -> list[dict]:
    """Pods as the StatefulSet controller creates them (hostname = pod name, subdomain = serviceName)."""
    pods = []
    for k in range(sts["spec"]["replicas"]):
        pod = copy.deepcopy(sts["spec"]["template"])
        pod["metadata"]["labels"]["apps.kubernetes.io/pod-index"] = str(k)
        pod["metadata"]["name"] = pod["spec"]["hostname"] = f"{sts['metadata']['name']}-{k}"
        pod["spec"]["subdomain"] = sts["spec"]["serviceName"]
        pods.append(pod)
    return pods


def lws_pods(lws: dict) -> list[dict]:
    """Pods of group 0 as the LWS controller and webhook make them (LWS_* env prepended to every container)."""
    name, spec = lws["metadata"]["name"], lws["spec"]["leaderWorkerTemplate"]
    pods = []
    for k in range(spec["size"]):
        pod = copy.deepcopy(spec["leaderTemplate"] if k == 0 else spec.get("workerTemplate", spec["leaderTemplate"]))
        pod["metadata"]["labels"].update({"leaderworkerset.sigs.k8s.io/worker-index": str(k),
                                          "leaderworkerset.sigs.k8s.io/name": name})
        pod["metadata"]["name"] = pod["spec"]["hostname"] = f"{name}-0" if k == 0 else f"{name}-0-{k}"
        pod["spec"]["subdomain"] = name
        lws_env = [{"name": "LWS_LEADER_ADDRESS", "value": f"{name}-0.{name}.{NS}"},
                   {"name": "LWS_GROUP_SIZE", "value": str(spec["size"])},
                   {"name": "LWS_WORKER_INDEX", "value": str(k)}]
        for c in pod["spec"]["containers"] + pod["spec"].get("initContainers", []):
            c["env"] = lws_env + c.get("env", [])
        pods.append(pod)
    return pods


def dns(pods: list[dict], services: list[dict]) -> dict[str, str]:
    """Cluster DNS records of the pods: <hostname>.<subdomain>.<ns>.svc when a headless Service of that name
    selects them (and publishes them before they are Ready). Short forms resolve via the search path."""
    records = {}
    for svc in services:
        spec = svc["spec"]
        if spec.get("clusterIP") != "None" or not spec.get("publishNotReadyAddresses"):
            continue
        for pod in pods:
            labels = pod["metadata"]["labels"]
            if pod["spec"].get("subdomain") == svc["metadata"]["name"] and all(
                    labels.get(k) == v for k, v in spec["selector"].items()):
                fqdn = f"{pod['spec']['hostname']}.{svc['metadata']['name']}.{NS}.svc"
                records[fqdn] = records[fqdn.removesuffix(".svc")] = pod["metadata"]["name"]
    return records


def mounts_of(pod: dict) -> dict[str, str]:
    """mountPath -> host path / volume kind, joined through volume names."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    container = next(c for c in pod["spec"]["containers"] if c["name"] == "msrun")
    out = {}
    for m in container["volumeMounts"]:
        vol = volumes[m["name"]]
        out[m["mountPath"]] = (vol.get("hostPath", {}).get("path") or
                               ("pvc:" + vol["persistentVolumeClaim"]["claimName"] if "persistentVolumeClaim" in vol
                                else "emptyDir:" + vol["emptyDir"].get("medium", "")))
    return out


@cache
def crd_schema(filename: str) -> dict:
    crd = YAML(typ="safe").load((CRDS / filename).read_text(encoding="utf-8"))
    return next(v for v in crd["spec"]["versions"] if v.get("storage"))["schema"]["openAPIV3Schema"]


def validate_custom(doc: dict) -> None:
    files = {"PodGroup": "scheduling.volcano.sh_podgroups.yaml",
             "LeaderWorkerSet": "leaderworkerset.x-k8s.io_leaderworkersets.yaml"}
    jsonschema.validate(doc, crd_schema(files[doc["kind"]]))


def validate_all(docs: list[dict], version: str) -> None:
    for doc in docs:
        if doc["kind"] in ("PodGroup", "LeaderWorkerSet"):
            validate_custom(doc)
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def example_values(tmp_path: Path, example: str) -> tuple[str, Path]:
    kind = EXAMPLES[example]
    data, _ = chart_values(load_deployment(ROOT / "examples" / example), kind)
    path = tmp_path / f"values-{example}"
    path.write_text(values_yaml(data, "test"), encoding="utf-8")
    return kind, path


# --- the generator ------------------------------------------------------------------------------------


def test_charts_are_registered_generated_files():
    from ascend_run.generate import expected_files

    files = chart_files()
    assert {"charts/ascend-train/values.schema.json", "charts/ascend-infer/templates/NOTES.txt",
            "charts/ascend-train/templates/_helpers.tpl"} <= set(files)
    expected = expected_files()
    assert all(expected.get(rel) == text for rel, text in files.items())


@pytest.mark.parametrize("kind", list(CHARTS))
def test_values_come_from_profile_and_image(kind):
    files = chart_files()
    name = CHARTS[kind].name
    values = YAML(typ="safe").load(files[f"charts/{name}/values.yaml"])
    schema = YAML(typ="safe").load(files[f"charts/{name}/values.schema.json"])
    profile = get_profile("atlas-800t-a2" if kind == "train" else "atlas-800i-a2")
    assert values["resourceName"] == profile.kubernetes.resource_name
    assert values["shm"]["sizeLimit"] == profile.kubernetes.shm_size
    assert values["nodeSelector"] == profile.kubernetes.node_labels
    assert [(m["hostPath"], m["mountPath"]) for m in values["driverMounts"]["mounts"]] == \
        [(m.source, m.target) for m in profile.mounts]
    assert schema["properties"]["npusPerNode"]["maximum"] == profile.npu_count
    assert "deepseek_v3" in values["image"]["repository"] and values["image"]["tag"] == "20250209"


@pytest.mark.parametrize("kind", list(CHARTS))
def test_schema_is_a_valid_json_schema_and_accepts_the_defaults(kind):
    files = chart_files()
    schema = YAML(typ="safe").load(files[f"charts/{CHARTS[kind].name}/values.schema.json"])
    jsonschema.Draft7Validator.check_schema(schema)
    jsonschema.validate(YAML(typ="safe").load(files[f"charts/{CHARTS[kind].name}/values.yaml"]), schema)


@pytest.mark.parametrize("kind", list(CHARTS))
def test_every_value_has_a_doc_comment(kind):
    """helm-docs style: every value has a `# --` comment above it, or sits inside one that has (a default
    map such as nodeSelector, a list such as volumes); grouping keys (image:, job:) need none."""
    lines = chart_files()[f"charts/{CHARTS[kind].name}/values.yaml"].splitlines()
    undocumented = []
    stack: list[tuple[int, bool]] = []  # (indent, documented) of the enclosing keys
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)(- )?([A-Za-z][\w-]*):\s*(.*)$", line)
        if not match:
            continue
        indent = len(match.group(1))
        while stack and stack[-1][0] >= indent:
            stack.pop()
        block = []
        for prev in reversed(lines[:i]):
            if not prev.strip().startswith("#"):
                break
            block.append(prev.strip())
        documented = any(c.startswith("# --") for c in block) or any(d for _, d in stack) or bool(match.group(2))
        nxt = next((ln for ln in lines[i + 1:] if ln.strip() and not ln.strip().startswith("#")), "")
        grouping = not match.group(4) and not nxt.lstrip().startswith("- ")
        if not documented and not grouping:
            undocumented.append(match.group(3))
        stack.append((indent, documented))
    assert not undocumented, f"values without a '# --' comment: {undocumented}"


# --- lint and API validation --------------------------------------------------------------------------


@needs_helm
@pytest.mark.parametrize("kind", list(CHARTS))
def test_lint_strict_default_values(charts, kind):
    result = helm("lint", "--strict", str(charts[kind]))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout


@needs_helm
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_lint_strict_with_example_values(charts, tmp_path, example):
    kind, values = example_values(tmp_path, example)
    result = helm("lint", "--strict", str(charts[kind]), "-f", str(values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


VARIANTS = [
    ("train", ()), ("train", ("volcano.enabled=true", "nodes=4")), ("train", ("job.launcher=msrun",)),
    ("train", ("volumes[0].name=data", "volumes[0].claimName=dataset-pvc", "volumes[0].mountPath=/data",
               "logs.hostPath=/var/log/ascend-run/x", "hostNetwork=true", "activeDeadlineSeconds=86400")),
    ("infer", ()), ("infer", ("lws.enabled=true",)), ("infer", ("probes.enabled=false", "service.type=NodePort")),
]


@needs_helm
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kind,sets", VARIANTS, ids=[f"{k}-{'-'.join(s) or 'default'}" for k, s in VARIANTS])
def test_rendered_manifests_validate(charts, version, kind, sets):
    docs = render(charts[kind], *sets)
    validate_all(docs, version)


@needs_helm
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("example", list(EXAMPLES))
def test_example_manifests_validate(charts, tmp_path, version, example):
    kind, values = example_values(tmp_path, example)
    validate_all(render(charts[kind], values=values), version)


@needs_helm
@pytest.mark.parametrize("kind", list(CHARTS))
def test_older_kubernetes_is_refused_and_the_chart_packages(charts, kind, tmp_path):
    old = helm("template", "rel", str(charts[kind]), "--kube-version", "1.27.0")
    assert old.returncode != 0 and "chart requires kubeVersion: >=1.28.0-0" in old.stderr
    assert helm("template", "rel", str(charts[kind]), "--kube-version", "1.28.0").returncode == 0
    packaged = helm("package", str(charts[kind]), "-d", str(tmp_path))
    assert packaged.returncode == 0, packaged.stderr


def test_kubernetes_validate_has_the_target_versions():
    for version in K8S_VERSIONS:
        kubernetes_validate.validate({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}},
                                     version, strict=True)


# --- schema: bad values fail helm with a message naming the value -----------------------------------

BAD_VALUES = [
    ("train", "nodes=-1", "nodes: Must be greater than or equal to 1"),
    ("train", "nodes=0", "nodes: Must be greater than or equal to 1"),
    ("train", "image.repository=null", "repository is required"),
    ("train", "image.repository=", "repository: String length must be greater than or equal to 1"),
    ("train", "npusPerNode=16", "npusPerNode: Must be less than or equal to 8"),
    ("train", "job.launcher=mpirun", "job.launcher must be one of the following"),
    ("train", "job.masterPort=80", "masterPort: Must be greater than or equal to 1024"),
    ("train", "replicas=4", "Additional property replicas is not allowed"),
    ("train", "volcano.queue=", "queue: String length must be greater than or equal to 1"),
    ("infer", "npusPerNode=9", "npusPerNode: Must be less than or equal to 8"),
    ("infer", "nodes=-4", "nodes: Must be greater than or equal to 1"),
    ("infer", "image.repository=null", "repository is required"),
    ("infer", "lws.restartPolicy=Always", "lws.restartPolicy must be one of the following"),
    ("infer", "shm.sizeLimit=lots", "sizeLimit: Does not match pattern"),
    ("infer", "env.1BAD=x", "env: Does not match pattern"),
    ("infer", "resources.requests.cpu=lots", "resources.requests.cpu: Does not match pattern"),
    ("train", "volumes[0].name=a,volumes[0].mountPath=/y", "volumes.0: Must validate one and only one schema"),
]


@needs_helm
@pytest.mark.parametrize("kind,setting,message", BAD_VALUES)
def test_schema_rejects_bad_values(charts, kind, setting, message):
    for command in (["lint", "--strict"], ["template", "rel"]):
        result = helm(*command, str(charts[kind]), "--set", setting)
        assert result.returncode != 0, f"helm {command[0]} accepted {setting}"
        assert message in result.stdout + result.stderr, result.stdout + result.stderr


@needs_helm
@pytest.mark.parametrize("name", ["dshm", "host-driver"])
def test_volume_names_taken_by_the_chart_fail_the_render(charts, name):
    # `fail` stops template/install; helm lint only reports it as INFO (helm's lint mode), hence template.
    result = helm("template", "rel", str(charts["train"]), "--set",
                  f"volumes[0].name={name},volumes[0].hostPath=/x,volumes[0].mountPath=/y")
    assert result.returncode != 0 and f'the name "{name}" is taken' in result.stderr


@needs_helm
def test_missing_tag_and_digest_is_a_clear_error(charts):
    result = helm("template", "rel", str(charts["train"]), "--set", "image.tag=")
    assert result.returncode != 0 and "image.tag (or image.digest) is required" in result.stderr


# --- ascend-train: the Indexed Job --------------------------------------------------------------------


@needs_helm
def test_train_renders_no_podgroup_by_default(charts):
    docs = render(charts["train"])
    assert sorted(d["kind"] for d in docs) == ["Job", "Service"]
    assert "schedulerName" not in one(docs, "Job")["spec"]["template"]["spec"]


@needs_helm
@pytest.mark.parametrize("launcher", ["msrun_launcher", "msrun"])
def test_train_four_nodes_wiring(charts, launcher):
    docs = render(charts["train"], "nodes=4", f"job.launcher={launcher}")
    job = one(docs, "Job")
    spec = job["spec"]
    assert (spec["completionMode"], spec["completions"], spec["parallelism"]) == ("Indexed", 4, 4)
    assert spec["backoffLimit"] == 0
    assert spec["podFailurePolicy"]["rules"][0]["action"] == "FailJob"
    assert spec["podFailurePolicy"]["rules"][0]["onExitCodes"] == {"containerName": "msrun", "operator": "NotIn",
                                                                   "values": [0]}
    assert spec["template"]["spec"]["restartPolicy"] == "Never"

    pods = job_pods(job)
    records = dns(pods, [d for d in docs if d["kind"] == "Service"])
    args = [msrun_args(p) for p in pods]
    assert [a["node_rank"] for a in args] == ["0", "1", "2", "3"]
    assert {a["worker_num"] for a in args} == {"32"}
    assert {a["local_worker_num"] for a in args} == {"8"}
    assert {a["master_port"] for a in args} == {"8118"}
    assert {a["join"] for a in args} == {"True"}
    masters = {a["master_addr"] for a in args}
    assert masters == {f"rel-ascend-train-0.rel-ascend-train.{NS}.svc"}
    assert records[masters.pop()] == pods[0]["metadata"]["name"]
    assert "pretrain_deepseek3_1b.yaml" in args[0]["cmd"]

    for pod in pods:
        container = pod["spec"]["containers"][0]
        npu = container["resources"]
        assert npu["requests"]["huawei.com/Ascend910"] == npu["limits"]["huawei.com/Ascend910"] == "8"
        mounts = mounts_of(pod)
        for m in get_profile("atlas-800t-a2").mounts:
            assert mounts[m.target] == m.source
        assert mounts["/dev/shm"] == "emptyDir:Memory"
        assert mounts["/home/work/dataset"] == "/data/dataset"
        assert mounts["/home/work/mindformers/output/checkpoint"] == "/data/checkpoints"
        assert mounts["/home/work/mindformers/output/msrun_log"] == "emptyDir:"
        # The init container waits for the same master name msrun will resolve.
        init = pod["spec"]["initContainers"][0]
        assert container_env(pod, init)["MASTER_ADDR"] == args[0]["master_addr"]


@needs_helm
def test_train_msrun_command_as_list(charts, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text("job:\n  launcher: msrun\n  command: [run_mindformer.py, --config, 'a b.yaml']\n")
    pod = job_pods(one(render(charts["train"], values=values), "Job"))[0]
    container = pod["spec"]["containers"][0]
    assert container["command"] == ["msrun"]
    assert container["args"][-3:] == ["run_mindformer.py", "--config", "a b.yaml"]


@needs_helm
def test_train_volcano_podgroup(charts):
    docs = render(charts["train"], "nodes=4", "volcano.enabled=true", "volcano.queue=research",
                  "priorityClassName=high")
    group, job = one(docs, "PodGroup"), one(docs, "Job")
    validate_custom(group)
    assert group["apiVersion"] == "scheduling.volcano.sh/v1beta1"
    assert group["spec"]["minMember"] == 4 and group["spec"]["queue"] == "research"
    assert group["spec"]["minResources"] == {"huawei.com/Ascend910": "32"}
    template = job["spec"]["template"]
    assert template["spec"]["schedulerName"] == "volcano"
    assert template["metadata"]["annotations"]["scheduling.k8s.io/group-name"] == group["metadata"]["name"]
    assert template["spec"]["priorityClassName"] == "high"


@needs_helm
def test_train_passthrough_and_storage(charts, tmp_path):
    values = tmp_path / "v.yaml"
    values.write_text(
        "nodeSelector: {pool: npu}\n"
        "tolerations: [{key: huawei.com/Ascend910, operator: Exists, effect: NoSchedule}]\n"
        "affinity: {podAntiAffinity: {requiredDuringSchedulingIgnoredDuringExecution: "
        "[{topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/instance: rel}}}]}}\n"
        "imagePullSecrets: [{name: swr}]\n"
        "resources: {requests: {cpu: 32, memory: 512Gi}, limits: {memory: 600Gi}}\n"
        "priorityClassName: training\n"
        "volumes:\n"
        "  - {name: dataset, claimName: wiki-pvc, mountPath: /home/work/dataset, readOnly: true}\n"
        "  - {name: ckpt, hostPath: /mnt/shared/ckpt, mountPath: /ckpt}\n"
        "driverMounts: {enabled: false}\n"
        "env: {HCCL_CONNECT_TIMEOUT: '1800', MS_ENABLE_LCCL: 'off'}\n")
    pod = job_pods(one(render(charts["train"], values=values), "Job"))[0]
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"pool": "npu", "accelerator-type": "module-910b-8"}  # maps merge
    assert spec["tolerations"][0]["key"] == "huawei.com/Ascend910"
    assert "podAntiAffinity" in spec["affinity"]
    assert spec["imagePullSecrets"] == [{"name": "swr"}] and spec["priorityClassName"] == "training"
    mounts = mounts_of(pod)
    assert mounts["/home/work/dataset"] == "pvc:wiki-pvc" and mounts["/ckpt"] == "/mnt/shared/ckpt"
    assert "/usr/local/Ascend/driver" not in mounts
    resources = spec["containers"][0]["resources"]
    assert resources["requests"] == {"huawei.com/Ascend910": "8", "cpu": 32, "memory": "512Gi"}
    assert resources["limits"] == {"huawei.com/Ascend910": "8", "memory": "600Gi"}
    env = container_env(pod, spec["containers"][0])
    assert env["HCCL_CONNECT_TIMEOUT"] == "1800" and env["MS_ENABLE_LCCL"] == "off"


@needs_helm
def test_long_release_names_keep_hostnames_valid(charts):
    release = "a-release-name-of-the-longest-length-helm-allows-53ch"
    assert len(release) == 53
    docs = render(charts["train"], "nodes=128", release=release)
    job = one(docs, "Job")
    assert len(job["metadata"]["name"]) <= 52
    last = job_pods(job)[-1]
    assert len(last["spec"]["hostname"]) <= 63
    assert all(len(d["metadata"]["name"]) <= 63 for d in docs)


# --- ascend-infer: leader and workers -----------------------------------------------------------------


@needs_helm
def test_infer_renders_statefulset_and_no_lws_by_default(charts):
    docs = render(charts["infer"])
    assert sorted(d["kind"] for d in docs) == ["Service", "Service", "StatefulSet"]


@needs_helm
def test_infer_statefulset_wiring(charts):
    docs = render(charts["infer"])
    sts = one(docs, "StatefulSet")
    services = [d for d in docs if d["kind"] == "Service"]
    assert sts["spec"]["podManagementPolicy"] == "Parallel"
    pods = statefulset_pods(sts)
    records = dns(pods, services)
    args = [msrun_args(p) for p in pods]
    assert [a["node_rank"] for a in args] == ["0", "1", "2", "3"]
    assert {(a["worker_num"], a["local_worker_num"], a["master_port"]) for a in args} == {("32", "8", "8888")}
    masters = {a["master_addr"] for a in args}
    assert len(masters) == 1 and records[masters.pop()] == "rel-ascend-infer-0"
    assert args[0]["cmd"] == "run_deepseekv3_predict.py" and args[0]["cluster_time_out"] == "300"

    api = next(s for s in services if s["spec"].get("clusterIP") != "None")
    assert api["spec"]["selector"]["apps.kubernetes.io/pod-index"] == "0"
    leader_only = [p for p in pods if all(p["metadata"]["labels"].get(k) == v for k, v in api["spec"]["selector"].items())]
    assert [p["metadata"]["name"] for p in leader_only] == ["rel-ascend-infer-0"]
    assert api["spec"]["ports"][0]["targetPort"] == "http"

    for pod in pods:
        container = pod["spec"]["containers"][0]
        env = container_env(pod, container)
        assert env["HCCL_OP_EXPANSION_MODE"] == "AIV" and env["MS_ENABLE_LCCL"] == "off"
        assert container["resources"]["limits"]["huawei.com/Ascend910"] == "8"
        shm = next(v for v in pod["spec"]["volumes"] if v["name"] == "dshm")
        assert shm["emptyDir"] == {"medium": "Memory", "sizeLimit": "500Gi"}
        mounts = mounts_of(pod)
        assert mounts["/data/model_path"] == "/data/model_path"
        for m in get_profile("atlas-800i-a2").mounts:
            assert mounts[m.target] == m.source
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            script = container[probe]["exec"]["command"][2]
            assert 'os.environ.get("NODE_RANK") == "0"' in script and "127.0.0.1:8000/health" in script


@needs_helm
def test_infer_lws_wiring(charts):
    docs = render(charts["infer"], "lws.enabled=true")
    assert sorted(d["kind"] for d in docs) == ["LeaderWorkerSet", "Service"]
    lws = one(docs, "LeaderWorkerSet")
    validate_custom(lws)
    template = lws["spec"]["leaderWorkerTemplate"]
    assert template["size"] == 4 and template["restartPolicy"] == "RecreateGroupOnPodRestart"
    assert lws["spec"]["startupPolicy"] == "LeaderCreated"
    pods = lws_pods(lws)
    args = [msrun_args(p) for p in pods]
    assert [a["node_rank"] for a in args] == ["0", "1", "2", "3"]
    assert {a["master_addr"] for a in args} == {f"{lws['metadata']['name']}-0.{lws['metadata']['name']}.{NS}"}
    assert {a["worker_num"] for a in args} == {"32"}
    leader, workers = pods[0]["spec"]["containers"][0], [p["spec"]["containers"][0] for p in pods[1:]]
    assert leader["readinessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert all("readinessProbe" not in w and "startupProbe" not in w for w in workers)
    api = one(docs, "Service")
    assert api["spec"]["selector"]["leaderworkerset.sigs.k8s.io/worker-index"] == "0"


@needs_helm
def test_infer_probes_can_be_disabled(charts):
    container = one(render(charts["infer"], "probes.enabled=false"), "StatefulSet")["spec"]["template"]["spec"][
        "containers"][0]
    assert not {"startupProbe", "readinessProbe", "livenessProbe"} & set(container)


@needs_helm
def test_infer_single_node_lws_validates(charts):
    lws = one(render(charts["infer"], "lws.enabled=true", "nodes=1"), "LeaderWorkerSet")
    validate_custom(lws)
    assert lws["spec"]["leaderWorkerTemplate"]["size"] == 1


# --- NOTES.txt ----------------------------------------------------------------------------------------


def notes(chart: Path, tmp_path: Path, *sets: str) -> str:
    """NOTES.txt rendered by helm (only `install` renders it, which needs a cluster): the test copies the
    chart and wraps the notes in a ConfigMap, so `helm template` renders them with the same engine."""
    copy_dir = tmp_path / chart.name
    shutil.copytree(chart, copy_dir)
    text = (copy_dir / "templates" / "NOTES.txt").read_text(encoding="utf-8")
    (copy_dir / "templates" / "zz-notes.yaml").write_text(
        '{{- define "test.notes" }}' + text + "{{- end }}\n"
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: notes\ndata:\n"
        '  notes: {{ include "test.notes" . | quote }}\n', encoding="utf-8")
    docs = render(copy_dir, *sets)
    return next(d for d in docs if d["kind"] == "ConfigMap")["data"]["notes"]


@needs_helm
def test_train_notes_point_at_the_last_rank(charts, tmp_path):
    text = notes(charts["train"], tmp_path, "nodes=4")
    assert "batch.kubernetes.io/job-completion-index=3" in text
    assert "output/msrun_log/worker_31.log" in text
    assert f"rel-ascend-train-0.rel-ascend-train.{NS}.svc:8118" in text


@needs_helm
def test_infer_notes(charts, tmp_path):
    text = notes(charts["infer"], tmp_path)
    assert "svc/rel-ascend-infer-api" in text and "worker_31.log" in text and "pod/rel-ascend-infer-3" in text
    text = notes(charts["infer"], tmp_path / "lws", "lws.enabled=true")
    assert "leaderworkerset.sigs.k8s.io/worker-index=3" in text


# --- ascend-run chart values --------------------------------------------------------------------------


def test_chart_values_from_the_infer_example():
    values, notes_ = chart_values(load_deployment(ROOT / "examples/infer-671b-4nodes.yaml"), "infer")
    assert values["nodes"] == 4 and values["npusPerNode"] == 8
    assert values["fullnameOverride"] == "deepseek-v3-infer"
    assert values["image"]["repository"].endswith("deepseek_v3_mindspore2.5.0-infer")
    assert values["image"]["tag"] == "20250209"
    assert values["job"]["masterPort"] == 8888 and values["job"]["clusterTimeout"] == 300
    assert values["env"] == {"HCCL_OP_EXPANSION_MODE": "AIV", "MS_ENABLE_LCCL": "off"}
    assert values["volumes"] == [{"name": "model-path", "hostPath": "/data/model_path",
                                  "mountPath": "/data/model_path", "readOnly": False}]
    assert any("serve_port" in n for n in notes_)


def test_chart_values_yaml_quotes_yaml11_words():
    text = values_yaml({"env": {"MS_ENABLE_LCCL": "off", "X": "yes"}, "image": {"tag": "20250209"}}, "h")
    assert 'MS_ENABLE_LCCL: "off"' in text and 'X: "yes"' in text
    assert YAML(typ="safe").load(text)["image"]["tag"] == "20250209"


def test_chart_values_cli_writes_a_file(tmp_path):
    out = tmp_path / "values.yaml"
    result = CliRunner().invoke(cli, ["chart", "values", "train", "-f", str(ROOT / "examples/pretrain-671b-128nodes.yaml"),
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    values = YAML(typ="safe").load(out.read_text(encoding="utf-8"))
    assert values["nodes"] == 128 and values["env"] == {"HCCL_CONNECT_TIMEOUT": "1800"}
    assert values["job"]["command"].startswith("run_mindformer.py")
    assert {v["mountPath"] for v in values["volumes"]} == {"/home/work/dataset", "/home/work/mindformers/output"}


def test_chart_write_cli_matches_the_committed_charts(tmp_path):
    result = CliRunner().invoke(cli, ["chart", "write", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    for rel, text in chart_files().items():
        assert (tmp_path / rel.removeprefix("charts/")).read_text(encoding="utf-8") == text


def _deployment(**overrides):
    data = {"name": "t", "profile": "atlas-800t-a2", "image": "reg:5000/ns/img:1.0",
            "nodes": [{"address": "10.0.0.[1-2]"}], "job": {"command": "train.py --x 'a b'"}}
    data.update(overrides)
    return deployment_from_data(data)


def test_chart_values_msrun_launcher_keeps_the_string_msrun_gets_a_list():
    dep = _deployment(job={"command": "train.py --x 'a b'", "launcher": "msrun"})
    values, _ = chart_values(dep, "train")
    assert values["job"]["command"] == ["train.py", "--x", "a b"]
    assert values["image"] == {"repository": "reg:5000/ns/img", "tag": "1.0", "digest": ""}
    assert chart_values(_deployment(), "train")[0]["job"]["command"] == "train.py --x 'a b'"


def test_chart_values_subset_of_npus_and_user():
    dep = _deployment(nodes=[{"address": "10.0.0.1", "npus": [0, 1, 2, 3]}],
                      container={"user": "1000", "privileged": True, "shm_size": "200g"})
    values, notes_ = chart_values(dep, "train")
    assert values["npusPerNode"] == 4 and values["securityContext"] == {"runAsUser": 1000, "privileged": True}
    assert values["shm"]["sizeLimit"] == "200Gi"
    assert any("device plugin" in n for n in notes_)


@pytest.mark.parametrize("overrides,key", [
    ({"nodes": [{"address": "10.0.0.1", "env": {"A": "1"}}]}, "env"),
    ({"job": {"command": "x", "sync": [{"source": ".", "target": "/code"}]}}, "job.sync"),
    ({"container": {"user": "mindspore"}}, "container.user"),
])
def test_chart_values_refuses_what_pods_cannot_express(overrides, key):
    with pytest.raises(ConfigError) as info:
        chart_values(_deployment(**overrides), "train")
    assert key in str(info.value)


def test_naming_helpers():
    assert split_image("swr.example.com/mindformers/x:20250209") == ("swr.example.com/mindformers/x", "20250209", "")
    assert split_image("localhost:5000/x") == ("localhost:5000/x", "", "")
    assert split_image("x:1@sha256:" + "a" * 64) == ("x", "1", "sha256:" + "a" * 64)
    taken: set[str] = set()
    assert volume_name("/etc/hccn.conf", taken) == "hccn-conf"
    assert volume_name("/other/hccn.conf", taken) == "hccn-conf-2"
    assert k8s_quantity("500g") == "500Gi" and k8s_quantity("64Gi") == "64Gi" and k8s_quantity("1024") == "1024"
    with pytest.raises(ConfigError):
        k8s_quantity("lots")


# --- the scripts inside the manifests, run for real ---------------------------------------------------


def _run_python(script: str, env: dict[str, str], timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, capture_output=True,
                          text=True, timeout=timeout, check=False)


@needs_helm
def test_wait_for_master_script_resolves_or_gives_up(charts):
    init = one(render(charts["train"], "job.masterWaitSeconds=3"), "Job")["spec"]["template"]["spec"][
        "initContainers"][0]
    assert init["command"][:2] == ["python3", "-c"]
    script = init["command"][2]
    ok = _run_python(script, {"MASTER_ADDR": "localhost", "MASTER_WAIT_SECONDS": "3"})
    assert ok.returncode == 0 and "master localhost is" in ok.stdout
    started = time.monotonic()
    bad = _run_python(script, {"MASTER_ADDR": "pod-0.no-such-service.invalid", "MASTER_WAIT_SECONDS": "2"})
    assert bad.returncode != 0 and "did not resolve within 2 s" in bad.stderr
    assert time.monotonic() - started < 20


@needs_helm
def test_statefulset_probe_checks_the_leader_only(charts):
    import http.server
    import threading

    status = {"code": 503}

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(status["code"] if self.path == "/health" else 404)
            self.end_headers()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Health)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        port = server.server_address[1]
        container = one(render(charts["infer"], f"server.port={port}"), "StatefulSet")["spec"]["template"]["spec"][
            "containers"][0]
        script = container["readinessProbe"]["exec"]["command"][2]
        assert _run_python(script, {"NODE_RANK": "0"}).returncode != 0          # leader, server not ready
        assert _run_python(script, {"NODE_RANK": "2"}).returncode == 0          # a worker always passes
        status["code"] = 200
        assert _run_python(script, {"NODE_RANK": "0"}).returncode == 0          # leader, server ready
        proxied = {"NODE_RANK": "0", "HTTP_PROXY": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
        assert _run_python(script, proxied).returncode == 0                     # the pod's proxy is not used
    finally:
        server.shutdown()
        server.server_close()
    down = _run_python(script, {"NODE_RANK": "0"})                              # leader, nothing listening
    assert down.returncode != 0
