"""The ascendjob workload of charts/ascend-train: MindCluster's AscendJob, checked as its operator runs it.

No Ascend Operator runs here, so the test does what it would (Ascend/mind-cluster,
component/ascend-operator): it validates the replica specs as `ascendjob_validate.go` does, numbers the
pods as `pod.go` does (the Scheduler replica requests NPUs, so it is node rank 0 and worker i is rank
i + 1), creates the Scheduler Service from the container port `ascendjob-port`, and injects the env of
`env.go` (MS_SCHED_HOST is the Scheduler pod's IP in that pod, the Service's IP elsewhere). The kubelet's
fieldRef and $(VAR) expansion then gives every pod's msrun argv, which is compared with what
`ascend-run launch` runs over SSH for the same deployment file. The AscendJob is validated against the
real CRD's openAPIV3Schema with unknown fields refused (kubectl's strict field validation), its pod
template and the ConfigMap with kubernetes-validate --strict.
"""

from __future__ import annotations

import copy
import csv
import os
import re
import subprocess
from functools import cache
from pathlib import Path

import jsonschema
import kubernetes_validate
import pytest
from click.testing import CliRunner
from ruamel.yaml import YAML

from ascend_run.charts.values import chart_values, values_yaml
from ascend_run.cli import cli
from ascend_run.errors import ConfigError
from ascend_run.inputs.deployment import Deployment, deployment_from_data, load_deployment
from ascend_run.launch.plan import launch_plan
from tests.test_charts import CRDS, K8S_VERSIONS, NS, ROOT, charts, expand, helm, needs_helm, notes, one, render  # noqa: F401, F811

EXAMPLES = ["pretrain-1b-single.yaml", "pretrain-671b-128nodes.yaml"]
ASCEND = "huawei.com/Ascend910"
SERVICE_IP = "10.96.0.10"

# What the operator adds to the `ascend` container of a MindSpore job, read from env.go and consts.go
# (setMindSporeEnv, setCommonEnv); written out here on purpose, apart from the package's own list.
OPERATOR_MINDSPORE_ENV = ["MS_SCHED_HOST", "MS_LOCAL_WORKER", "MS_WORKER_NUM", "MS_NODE_RANK", "MS_SCHED_PORT",
                          "MS_SERVER_NUM", "MS_ROLE", "NPU_POD"]
OPERATOR_COMMON_ENV = ["ASCEND_VISIBLE_DEVICES", "MINDX_TASK_ID", "MINDX_SERVER_IP", "HostNetwork",
                       "HCCL_LOGIC_SUPERPOD_ID"]


# --- the Ascend Operator and the kubelet, as far as the chart depends on them ---------------------------


def ascend_container(template: dict) -> dict:
    found = [c for c in template["spec"]["containers"] if c["name"] == "ascend"]
    if len(found) != 1:
        raise AssertionError("the operator wires only the container named ascend, and there must be one")
    return found[0]


def npu_request(template: dict) -> int:
    requests = ascend_container(template).get("resources", {}).get("requests", {})
    return int(requests.get(ASCEND, 0))


def operator_check(job: dict) -> None:
    """checkReplicaSpecs and validateContainer of ascendjob_validate.go for a MindSpore job."""
    assert job["metadata"]["labels"]["framework"] == "mindspore"
    specs = job["spec"]["replicaSpecs"]
    assert set(specs) <= {"Scheduler", "Worker"}, specs.keys()
    for rtype, spec in specs.items():
        assert spec.get("replicas", 1) > 0
        container = ascend_container(spec["template"])
        assert container["image"]
        if rtype == "Scheduler":
            assert spec.get("replicas", 1) == 1
        else:
            assert npu_request(spec["template"]) > 0
    if "Scheduler" not in specs:
        assert npu_request(specs["Worker"]["template"]) * specs["Worker"].get("replicas", 1) <= 1


def operator_service(job: dict) -> dict:
    """The Service the operator makes for the Scheduler replica (genService): the ascendjob-port port."""
    container = ascend_container(job["spec"]["replicaSpecs"]["Scheduler"]["template"])
    ports = [p for p in container.get("ports", []) if p["name"] == "ascendjob-port"]
    port = ports[0]["containerPort"] if ports else 2222  # setDefaultPort
    name = job["metadata"]["name"]
    return {"name": f"{name}-scheduler-0", "clusterIP": SERVICE_IP, "port": port,
            "selector": {"job-name": name, "replica-type": "scheduler", "replica-index": "0"}}


def operator_pods(job: dict) -> list[dict]:
    """The pods of a MindSpore AscendJob as the operator creates them (createPodSpec, setMindSporeEnv)."""
    operator_check(job)
    name, specs = job["metadata"]["name"], job["spec"]["replicaSpecs"]
    chips_on_scheduler = "Scheduler" in specs and npu_request(specs["Scheduler"]["template"]) > 0
    npu_spec = specs["Scheduler"] if chips_on_scheduler else specs["Worker"]
    per_pod = npu_request(npu_spec["template"])
    npu_pods = sum(s.get("replicas", 1) for t, s in specs.items() if chips_on_scheduler or t == "Worker")
    service = operator_service(job)
    pods = []
    for rtype in ("Scheduler", "Worker"):
        spec = specs.get(rtype)
        for index in range(spec.get("replicas", 1) if spec else 0):
            pod = copy.deepcopy(spec["template"])
            rank = index + 1 if chips_on_scheduler and rtype == "Worker" else index
            pod["metadata"]["name"] = f"{name}-{rtype.lower()}-{index}"
            pod["metadata"].setdefault("labels", {}).update(
                {"job-name": name, "replica-type": rtype.lower(), "replica-index": str(index)})
            pod["metadata"].setdefault("annotations", {})[ASCEND] = ",".join(f"Ascend910-{i}" for i in range(per_pod))
            pod["spec"]["restartPolicy"] = spec["restartPolicy"]
            pod["status"] = {"podIP": f"10.244.{len(pods) // 200}.{len(pods) % 200 + 10}"}
            container = ascend_container(pod)
            injected: list[dict] = [
                {"name": "ASCEND_VISIBLE_DEVICES", "valueFrom": {"fieldRef": {
                    "fieldPath": f"metadata.annotations['{ASCEND}']"}}},
                {"name": "MINDX_TASK_ID", "value": "uid-1234"},
                {"name": "MINDX_SERVER_IP", "value": "clusterd-grpc-svc.mindx-dl.svc.cluster.local"},
                {"name": "HostNetwork", "value": str(bool(pod["spec"].get("hostNetwork"))).lower()},
                {"name": "HCCL_LOGIC_SUPERPOD_ID", "value": "0"},
            ]
            if not (len(specs) == 1 and rtype == "Worker"):  # setEnv skips a Worker-only MindSpore job
                sched_host = ({"name": "MS_SCHED_HOST", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}}
                              if rtype == "Scheduler" else {"name": "MS_SCHED_HOST", "value": SERVICE_IP})
                injected += [sched_host,
                             {"name": "MS_LOCAL_WORKER", "value": str(per_pod)},
                             {"name": "MS_WORKER_NUM", "value": str(per_pod * npu_pods)},
                             {"name": "MS_NODE_RANK", "value": str(rank)},
                             {"name": "MS_SCHED_PORT", "value": str(service["port"])},
                             {"name": "MS_SERVER_NUM", "value": "0"},
                             {"name": "MS_ROLE", "value": "MS_SCHED" if rtype == "Scheduler" else "MS_WORKER"},
                             {"name": "NPU_POD", "value": "true"}]
            doubled = {e["name"] for e in container.get("env", [])} & {e["name"] for e in injected}
            assert not doubled, f"the chart sets what the operator injects: {doubled}"
            container["env"] = container.get("env", []) + injected
            pods.append(pod)
    return pods


def field(pod: dict, path: str) -> str:
    if path == "status.podIP":
        return pod["status"]["podIP"]
    match = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    assert match, f"unexpected fieldRef {path}"
    return pod["metadata"][match.group(1)][match.group(2)]


def environment(pod: dict) -> dict[str, str]:
    """The container's environment as the kubelet resolves it."""
    env: dict[str, str] = {}
    for item in ascend_container(pod).get("env", []):
        if "valueFrom" in item:
            env[item["name"]] = field(pod, item["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            env[item["name"]] = expand(item["value"], env)
    return env


def started(pod: dict) -> tuple[list[str], list[str]]:
    """(start script parameters, msrun argv) of the ascend container after the kubelet's expansion."""
    container, env = ascend_container(pod), environment(pod)
    command = [expand(a, env) for a in container["command"]]
    args = [expand(a, env) for a in container["args"]]
    assert command[:2] == ["bash", "-c"] and command[3:] == ["ascend-run"], command
    return args[:3], args[3:]


def node_rank(pod: dict) -> int:
    return int(environment(pod)["MS_NODE_RANK"])


def master_of(argv: list[str]) -> str:
    if argv[0] == "bash":
        return argv[5]
    return next(a.split("=", 1)[1] for a in argv if a.startswith("--master_addr="))


def mask_master(argv: list[str], master: str) -> list[str]:
    return ["MASTER" if a == master else "--master_addr=MASTER" if a == f"--master_addr={master}" else a
            for a in argv]


def pod_mounts(pod: dict) -> dict[str, tuple[str, bool]]:
    """mountPath -> (host path or volume kind, read-only), joined through volume names."""
    volumes = {v["name"]: v for v in pod["spec"]["volumes"]}
    out = {}
    for m in ascend_container(pod)["volumeMounts"]:
        vol = volumes[m["name"]]
        source = (vol["hostPath"]["path"] if "hostPath" in vol else
                  "configMap:" + vol["configMap"]["name"] if "configMap" in vol else
                  "emptyDir:" + vol["emptyDir"].get("medium", ""))
        out[m["mountPath"]] = (source, bool(m.get("readOnly", False)))
    return out


# --- the chart ---------------------------------------------------------------------------------------


def strict(schema):
    """The CRD schema with unknown fields refused, as `kubectl apply --validate=strict` refuses them
    (the API server would prune them silently): objects with `properties` become closed."""
    if isinstance(schema, list):
        return [strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: strict(v) for k, v in schema.items()}
    if "properties" in out and "additionalProperties" not in out and \
            not out.get("x-kubernetes-preserve-unknown-fields"):
        out["additionalProperties"] = False
    return out


@cache
def acjob_schema() -> dict:
    crd = YAML(typ="safe").load((CRDS / "ascendjob-crd.yaml").read_text(encoding="utf-8"))
    version = next(v for v in crd["spec"]["versions"] if v.get("storage"))
    assert (crd["spec"]["group"], version["name"], crd["spec"]["names"]["kind"]) == \
        ("mindxdl.gitee.com", "v1", "AscendJob")
    return strict(version["schema"]["openAPIV3Schema"])


def validate(docs: list[dict], version: str) -> None:
    for doc in docs:
        if doc["kind"] == "AscendJob":
            assert doc["apiVersion"] == "mindxdl.gitee.com/v1"
            jsonschema.validate(doc, acjob_schema())
            for rtype, spec in doc["spec"]["replicaSpecs"].items():
                pod = {"apiVersion": "v1", "kind": "Pod",
                       "metadata": {"name": f"p-{rtype.lower()}", **spec["template"]["metadata"]},
                       "spec": {**spec["template"]["spec"], "restartPolicy": spec["restartPolicy"]}}
                kubernetes_validate.validate(pod, version, strict=True)
        else:
            kubernetes_validate.validate(doc, version, strict=True)


def deployment(example: str, **job) -> Deployment:
    """An example deployment file, with `job` settings changed (restarts, rank_table)."""
    data = YAML(typ="safe").load((ROOT / "examples" / example).read_text(encoding="utf-8"))
    data["job"].update(job)
    return deployment_from_data(data)


def rendered(chart: Path, tmp_path: Path, dep: Deployment, *sets: str) -> list[dict]:
    values, _ = chart_values(dep, "train", "ascendjob")
    path = tmp_path / f"values-{dep.name}-{len(list(tmp_path.iterdir()))}.yaml"
    path.write_text(values_yaml(values, "test"), encoding="utf-8")
    return render(chart, *sets, values=path)


ASCENDJOB = ("workload=ascendjob", "volcano.enabled=true")


@needs_helm
def test_ascendjob_renders_the_acjob_and_nothing_the_operator_makes(charts):
    docs = render(charts["train"], *ASCENDJOB)
    assert [d["kind"] for d in docs] == ["AscendJob"]       # no Job, Service or PodGroup: the operator's own
    docs = render(charts["train"], *ASCENDJOB, "ascendjob.rankTable.enabled=true")
    assert sorted(d["kind"] for d in docs) == ["AscendJob", "ConfigMap"]
    assert one(docs, "ConfigMap")["metadata"]["name"] == f"rings-config-{one(docs, 'AscendJob')['metadata']['name']}"


@needs_helm
@pytest.mark.parametrize("sets", [(), ("volcano.enabled=true",), ASCENDJOB,
                                  (*ASCENDJOB, "nodes=4", "ascendjob.restarts=3", "ascendjob.rankTable.enabled=true",
                                   "ascendjob.resume.enabled=true", "job.launcher=msrun")],
                         ids=["job", "job-volcano", "ascendjob", "ascendjob-all"])
def test_lint_strict_for_each_workload(charts, sets):
    argv = ["lint", "--strict", str(charts["train"])]
    for item in sets:
        argv += ["--set", item]
    result = helm(*argv)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout


@needs_helm
@pytest.mark.parametrize("example", EXAMPLES)
def test_lint_strict_with_example_ascendjob_values(charts, tmp_path, example):
    values, _ = chart_values(deployment(example, restarts=2, rank_table="/etc/hccl.json"), "train", "ascendjob")
    path = tmp_path / "values.yaml"
    path.write_text(values_yaml(values, "test"), encoding="utf-8")
    result = helm("lint", "--strict", str(charts["train"]), "-f", str(path))
    assert result.returncode == 0 and "[WARNING]" not in result.stdout, result.stdout + result.stderr


@needs_helm
@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_ascendjob_validates_against_the_crd(charts, tmp_path, version, example):
    docs = rendered(charts["train"], tmp_path, load_deployment(ROOT / "examples" / example))
    validate(docs, version)
    with_all = rendered(charts["train"], tmp_path, deployment(example, restarts=2, rank_table="/etc/hccl.json"))
    assert sorted(d["kind"] for d in with_all) == ["AscendJob", "ConfigMap"]
    validate(with_all, version)


def test_strict_crd_check_refuses_unknown_fields():
    job = {"apiVersion": "mindxdl.gitee.com/v1", "kind": "AscendJob", "metadata": {"name": "x"},
           "spec": {"replicaSpecs": {"Worker": {"replicas": 1, "template": {"spec": {"containers": [
               {"name": "ascend", "image": "i"}]}}}}}}
    jsonschema.validate(job, acjob_schema())
    job["spec"]["runPolicy"] = {"minAvailable": 2}             # belongs in runPolicy.schedulingPolicy
    with pytest.raises(jsonschema.ValidationError, match="minAvailable"):
        jsonschema.validate(job, acjob_schema())


@needs_helm
@pytest.mark.parametrize("example", EXAMPLES)
def test_example_ascendjob_manifest(charts, tmp_path, example):
    dep = load_deployment(ROOT / "examples" / example)
    job = one(rendered(charts["train"], tmp_path, dep), "AscendJob")
    labels, spec = job["metadata"]["labels"], job["spec"]
    assert labels["framework"] == "mindspore" and labels["ring-controller.atlas"] == "ascend-910b"
    assert spec["schedulerName"] == "volcano"
    replicas = {t: s["replicas"] for t, s in spec["replicaSpecs"].items()}
    pods = operator_pods(job)
    assert spec["runPolicy"]["schedulingPolicy"]["minAvailable"] == sum(replicas.values()) == len(pods) == \
        len(dep.nodes)
    assert replicas == ({"Scheduler": 1} if len(dep.nodes) == 1 else {"Scheduler": 1, "Worker": len(dep.nodes) - 1})
    for rtype, rspec in spec["replicaSpecs"].items():
        template = rspec["template"]
        container = ascend_container(template)
        resources = container["resources"]
        assert resources["requests"][ASCEND] == resources["limits"][ASCEND] == str(len(dep.nodes[0].npus))
        assert template["spec"]["nodeSelector"] == {"accelerator-type": "module-910b-8", "host-arch": "huawei-arm"}
        assert container["ports"] == [{"name": "ascendjob-port", "containerPort": dep.job.master_port,
                                       "protocol": "TCP"}]
        assert rspec["restartPolicy"] == "Never" and "restartPolicy" not in template["spec"]
        chart_env = {e["name"] for e in container.get("env", [])}
        assert not chart_env & set(OPERATOR_MINDSPORE_ENV + OPERATOR_COMMON_ENV), rtype
        assert "schedulerName" not in template["spec"]          # the operator sets it from spec.schedulerName


@needs_helm
@pytest.mark.parametrize("restarts", [0, 1, 3, 100])
def test_fault_scheduling_labels_follow_job_restarts(charts, tmp_path, restarts):
    job = one(rendered(charts["train"], tmp_path, deployment("pretrain-671b-128nodes.yaml", restarts=restarts)),
              "AscendJob")
    labels, run_policy = job["metadata"]["labels"], job["spec"]["runPolicy"]
    params, _ = started(operator_pods(job)[0])
    if restarts == 0:
        assert (labels["fault-scheduling"], labels["pod-rescheduling"]) == ("off", "off")
        assert "fault-retry-times" not in labels and "backoffLimit" not in run_policy
        assert params == ["msrun_launcher", "", "0"]           # no resume: the first start is the only one
    else:
        assert (labels["fault-scheduling"], labels["fault-retry-times"]) == ("force", str(restarts))
        assert labels["pod-rescheduling"] == "off" and run_policy["backoffLimit"] == restarts
        assert params == ["msrun_launcher", "/home/work/mindformers/output/checkpoint", "0"]


@needs_helm
def test_pod_rescheduling_and_grace_are_opt_in(charts):
    job = one(render(charts["train"], *ASCENDJOB, "ascendjob.restarts=2", "ascendjob.podRescheduling=true",
                     "ascendjob.faultScheduling=grace"), "AscendJob")
    labels = job["metadata"]["labels"]
    assert (labels["fault-scheduling"], labels["fault-retry-times"], labels["pod-rescheduling"]) == \
        ("grace", "2", "on")


@needs_helm
@pytest.mark.parametrize("launcher", ["msrun_launcher", "msrun"])
def test_msrun_takes_address_and_rank_from_the_operator(charts, launcher):
    job = one(render(charts["train"], *ASCENDJOB, "nodes=4", f"job.launcher={launcher}"), "AscendJob")
    pods = operator_pods(job)
    service = operator_service(job)
    scheduler = next(p for p in pods if p["metadata"]["labels"]["replica-type"] == "scheduler")
    assert all(scheduler["metadata"]["labels"][k] == v for k, v in service["selector"].items())
    by_rank = {node_rank(p): started(p)[1] for p in pods}
    assert sorted(by_rank) == [0, 1, 2, 3] and node_rank(scheduler) == 0
    for rank, argv in by_rank.items():
        if launcher == "msrun_launcher":
            assert argv[:2] == ["bash", "scripts/msrun_launcher.sh"]
            assert argv[3:] == ["32", "8", master_of(argv), "8118", str(rank), "output/msrun_log", "True", "7200"]
        else:
            assert argv[:9] == ["msrun", "--worker_num=32", "--local_worker_num=8", f"--master_addr={master_of(argv)}",
                                "--master_port=8118", f"--node_rank={rank}", "--log_dir=output/msrun_log",
                                "--join=True", "--cluster_time_out=7200"]
        # msrun starts its scheduler where --master_addr is a local address: in the Scheduler pod only.
        # The other pods reach it through the operator's Service, which selects the Scheduler pod.
        expected = scheduler["status"]["podIP"] if rank == 0 else service["clusterIP"]
        assert master_of(argv) == expected
    assert service["port"] == 8118


# --- the same deployment file over SSH and in the AscendJob ---------------------------------------------


def ssh_container(docker_argv: list[str], job_argv: list[str]) -> dict:
    """What `docker run` gives the job's container: image, env, mounts, NPUs, workdir, user."""
    flags = docker_argv[:len(docker_argv) - len(job_argv) - 1]
    out: dict = {"image": docker_argv[len(flags)], "env": {}, "mounts": {}, "devices": []}
    it = iter(flags)
    for flag in it:
        if flag == "--env":
            name, _, value = next(it).partition("=")
            out["env"][name] = value
        elif flag.startswith("--mount="):
            fields = next(csv.reader([flag.removeprefix("--mount=")]))
            opts = dict(f.partition("=")[::2] for f in fields)
            out["mounts"][opts["target"]] = (opts["source"], "readonly" in opts)
        elif flag.startswith("--device="):
            out["devices"].append(flag.removeprefix("--device="))
        elif flag in ("--workdir", "--user"):
            out[flag[2:]] = next(it)
    return out


def differences(ssh: dict, k8s: dict) -> dict:
    """{key: (over SSH, in the pod)} for every key whose value differs (None: absent)."""
    return {k: (ssh.get(k), k8s.get(k)) for k in sorted(set(ssh) | set(k8s)) if ssh.get(k) != k8s.get(k)}


def compare(charts, tmp_path, dep: Deployment) -> tuple[dict, dict]:
    """Check every node's job against its pod's: the same image, msrun argv but for the master address,
    workdir, user and NPUs. Return the env and mount differences, which must be the same on every node."""
    job = one(rendered(charts["train"], tmp_path, dep), "AscendJob")
    pods = {node_rank(p): p for p in operator_pods(job)}
    plans = launch_plan(dep)
    assert sorted(pods) == [p.node.rank for p in plans]
    seen: set[str] = set()
    for plan in plans:
        pod = pods[plan.node.rank]
        ssh = ssh_container(plan.docker_argv, plan.job_argv)
        container = ascend_container(pod)
        _, argv = started(pod)
        assert container["image"] == ssh["image"] == dep.image
        assert mask_master(argv, master_of(argv)) == mask_master(plan.job_argv, plan.values.master_addr)
        assert container["workingDir"] == ssh["workdir"]
        assert container["securityContext"]["runAsUser"] == (0 if ssh["user"] == "root" else int(ssh["user"]))
        npus = [d for d in ssh["devices"] if re.fullmatch(r"/dev/davinci[0-9]+", d)]
        requests, limits = container["resources"]["requests"], container["resources"]["limits"]
        assert requests[ASCEND] == limits[ASCEND] == str(len(npus)) == str(len(plan.node.npus))
        rtype = pod["metadata"]["labels"]["replica-type"].capitalize()
        template_env = ascend_container(job["spec"]["replicaSpecs"][rtype]["template"]).get("env", [])
        env = differences(ssh["env"], {e["name"]: e["value"] for e in template_env})
        mounts = differences(ssh["mounts"], pod_mounts(pod))
        seen.add(repr((env, mounts)))
    assert len(seen) == 1, "the differences depend on the node"
    return env, mounts


SHM = {"/dev/shm": (None, ("emptyDir:Memory", False))}  # docker gets --ipc=host instead


@needs_helm
@pytest.mark.parametrize("example", EXAMPLES)
def test_same_job_over_ssh_and_in_the_ascendjob(charts, tmp_path, example):
    """Image, msrun argv (all but the master address), env, mounts and NPUs match on every node; the pod
    adds only /dev/shm."""
    env, mounts = compare(charts, tmp_path, load_deployment(ROOT / "examples" / example))
    assert env == {} and mounts == SHM


@needs_helm
def test_same_job_with_restarts_and_a_rank_table(charts, tmp_path):
    """With resume and the operator's rank table, the differences are exactly those two features."""
    dep = deployment("pretrain-671b-128nodes.yaml", restarts=2, rank_table="/etc/hccl.json")
    env, mounts = compare(charts, tmp_path, dep)
    assert env == {"RANK_TABLE_FILE": ("/etc/hccl.json", "/user/serverid/devindex/config/hccl.json"),
                   "SHARED_PATHS": (None, "/home/work/mindformers/output/checkpoint")}
    assert mounts == {**SHM, "/etc/hccl.json": (("/etc/hccl.json", True), None),
                      "/user/serverid/devindex/config": (None, ("configMap:rings-config-deepseek-v3-671b", True))}


# --- the start script, run for real ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def start_script(charts) -> str:
    job = one(render(charts["train"], *ASCENDJOB), "AscendJob")
    return ascend_container(job["spec"]["replicaSpecs"]["Scheduler"]["template"])["command"][2]


def run_start(script: str, tmp_path: Path, params: list[str], argv: list[str], **env: str):
    """The container's main process with stand-ins for msrun_launcher.sh (it evals its first argument,
    as MindFormers' does) and msrun (prints its arguments)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "msrun_launcher.sh").write_text('eval "set -- $1"\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    msrun = bin_dir / "msrun"
    msrun.write_text('#!/bin/bash\nprintf "%s\\n" "$@"\n', encoding="utf-8")
    msrun.chmod(0o755)
    argv = [str(bin_dir / a) if a == "msrun_launcher.sh" else a for a in argv]
    full_env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "MS_WORKER_NUM": "2", **env}
    return subprocess.run(["bash", "-c", script, "ascend-run", *params, *argv], env=full_env, capture_output=True,
                          text=True, timeout=60, check=False)


def checkpoints(root: Path, ranks: list[int]) -> Path:
    for r in ranks:
        (root / f"rank_{r}").mkdir(parents=True, exist_ok=True)
        (root / f"rank_{r}" / "meta.json").write_text('{"last_epoch": 1, "last_step": 20}', encoding="utf-8")
    return root


def test_start_script_leaves_nothing_for_the_kubelet_to_expand(start_script):
    assert "$(" not in start_script and "$$" not in start_script


LAUNCHER_ARGV = ["bash", "msrun_launcher.sh", "run_mindformer.py --config 'my config.yaml'", "16", "8"]


@pytest.mark.parametrize("ranks,resumed", [([], False), ([0], False), ([0, 1], True)])
def test_start_script_resumes_only_from_a_complete_checkpoint(start_script, tmp_path, ranks, resumed):
    ckpt = checkpoints(tmp_path / "ckpt dir's", ranks)
    result = run_start(start_script, tmp_path, ["msrun_launcher", str(ckpt), "0"], LAUNCHER_ARGV)
    assert result.returncode == 0, result.stderr
    words = [w for w in result.stdout.splitlines() if not w.startswith("ascend-run: ")]
    expected = ["run_mindformer.py", "--config", "my config.yaml"]
    assert words == (expected + ["--load_checkpoint", str(ckpt), "--resume_training", "True"] if resumed else expected)
    assert ("1 of 2 ranks have no checkpoint" in result.stderr) == (ranks == [0])


def test_start_script_resumes_msrun_and_passes_through_without_resume(start_script, tmp_path):
    ckpt = checkpoints(tmp_path / "ckpt", [0, 1])
    argv = ["msrun", "--worker_num=2", "run_mindformer.py", "--config", "c.yaml"]
    result = run_start(start_script, tmp_path, ["msrun", str(ckpt), "0"], argv)
    assert result.stdout.splitlines() == [f"ascend-run: resuming from the checkpoints in {ckpt}", *argv[1:],
                                          "--load_checkpoint", str(ckpt), "--resume_training", "True"]
    plain = run_start(start_script, tmp_path, ["msrun", "", "0"], argv)
    assert plain.returncode == 0 and plain.stdout.splitlines() == argv[1:]


def test_start_script_waits_for_the_operators_rank_table(start_script, tmp_path):
    table = tmp_path / "hccl.json"
    table.write_text('{"status":"initializing"}', encoding="utf-8")
    late = run_start(start_script, tmp_path, ["msrun", "", "1"], ["msrun", "x"], RANK_TABLE_FILE=str(table))
    assert late.returncode == 1 and "did not complete the rank table" in late.stderr and "x" not in late.stdout
    table.write_text('{"version":"1.0","server_count":"1","server_list":[],"status": "completed"}', encoding="utf-8")
    ready = run_start(start_script, tmp_path, ["msrun", "", "600"], ["msrun", "x"], RANK_TABLE_FILE=str(table))
    assert ready.returncode == 0 and ready.stdout.splitlines()[-1] == "x"


# --- values: the schema, the deployment file, the CLI, NOTES ----------------------------------------------

BAD = [
    (("workload=ascendjob",), "volcano.enabled does not match: true"),
    ((*ASCENDJOB, "volcano.schedulerName=default-scheduler"), 'volcano.schedulerName does not match: "volcano"'),
    ((*ASCENDJOB, "env.MS_NODE_RANK=x"), 'Property name of "MS_NODE_RANK" does not match'),
    ((*ASCENDJOB, "env.ASCEND_VISIBLE_DEVICES=0"), 'Property name of "ASCEND_VISIBLE_DEVICES" does not match'),
    (("ascendjob.restarts=2",), "ascendjob.restarts does not match: 0"),
    (("ascendjob.rankTable.enabled=true",), "ascendjob.rankTable.enabled does not match: false"),
    (("ascendjob.resume.enabled=true",), "ascendjob.resume.enabled does not match: false"),
    ((*ASCENDJOB, "ascendjob.podRescheduling=true"), "ascendjob.restarts: Must be greater than or equal to 1"),
    ((*ASCENDJOB, "ascendjob.restarts=1", "ascendjob.podRescheduling=true", "ascendjob.rankTable.enabled=true"),
     "ascendjob.rankTable.enabled does not match: false"),
    ((*ASCENDJOB, "ascendjob.restarts=101"), "ascendjob.restarts: Must be less than or equal to 100"),
    ((*ASCENDJOB, "ascendjob.hostArch=x86_64"), "ascendjob.hostArch must be one of the following"),
    (("workload=lws",), "workload must be one of the following"),
]


@needs_helm
@pytest.mark.parametrize("sets,message", BAD, ids=[",".join(s) for s, _ in BAD])
def test_schema_rejects_combinations_that_cannot_work(charts, sets, message):
    argv = ["template", "rel", str(charts["train"])]
    for item in sets:
        argv += ["--set", item]
    result = helm(*argv)
    assert result.returncode != 0 and message in result.stderr, result.stderr


@needs_helm
@pytest.mark.parametrize("sets,message", [
    (("ascendjob.resume.enabled=true", "volumes[0].name=ckpt,volumes[0].hostPath=/c,volumes[0].readOnly=true,"
      "volumes[0].mountPath=/home/work/mindformers/output"), "is on no writable entry of volumes"),
    (("ascendjob.rankTable.enabled=true", "env.RANK_TABLE_FILE=/x"), "env.RANK_TABLE_FILE"),
    (("volumes[0].name=rank-table,volumes[0].hostPath=/x,volumes[0].mountPath=/y",), '"rank-table" is taken'),
])
def test_render_fails_on_what_the_pods_cannot_do(charts, sets, message):
    argv = ["template", "rel", str(charts["train"])]
    for item in (*ASCENDJOB, *sets):
        argv += ["--set", item]
    result = helm(*argv)
    assert result.returncode != 0 and message in result.stderr, result.stderr


def test_chart_values_ascendjob_from_the_examples():
    values, notes_ = chart_values(load_deployment(ROOT / "examples/pretrain-671b-128nodes.yaml"), "train", "ascendjob")
    assert values["workload"] == "ascendjob" and values["nodes"] == 128
    assert values["volcano"] == {"enabled": True, "schedulerName": "volcano", "queue": "default"}
    checkpoints_at = "/home/work/mindformers/output/checkpoint"
    assert values["ascendjob"] == {"restarts": 0, "rankTable": {"enabled": False},
                                   "resume": {"enabled": False, "checkpointDir": checkpoints_at}}
    values, notes_ = chart_values(deployment("pretrain-1b-single.yaml", restarts=4, rank_table="/etc/hccl.json"),
                                  "train", "ascendjob")
    assert values["ascendjob"]["restarts"] == 4 and values["ascendjob"]["resume"]["enabled"] is True
    assert values["ascendjob"]["rankTable"] == {"enabled": True}
    assert any("rings-config-" in n for n in notes_)


def test_chart_values_indexed_job_says_what_it_does_not_use():
    _, notes_ = chart_values(deployment("pretrain-1b-single.yaml", restarts=2, rank_table="/etc/hccl.json"), "train")
    assert any(n.startswith("job.restarts is not used") for n in notes_)
    assert any(n.startswith("job.rank_table is not used") for n in notes_)


@pytest.mark.parametrize("change,key", [
    ({"env": {"MS_SCHED_HOST": "10.0.0.1"}}, "env.MS_SCHED_HOST"),
    ({"job": {"command": "x", "restarts": 101}}, "job.restarts"),
    ({"job": {"command": "x", "restarts": 1}}, "job.restarts"),       # no shared checkpoint storage
])
def test_chart_values_ascendjob_refuses(change, key):
    data = {"name": "t", "profile": "atlas-800t-a2", "image": "reg/img:1", "nodes": [{"address": "10.0.0.[1-2]"}],
            "job": {"command": "x"}, **change}
    with pytest.raises(ConfigError) as info:
        chart_values(deployment_from_data(data), "train", "ascendjob")
    assert key in str(info.value)
    with pytest.raises(ConfigError):
        chart_values(deployment_from_data(data), "infer", "ascendjob")


def test_chart_values_cli_workload(tmp_path):
    out = tmp_path / "values.yaml"
    example = str(ROOT / "examples/pretrain-1b-single.yaml")
    result = CliRunner().invoke(cli, ["chart", "values", "train", "-f", example, "--workload", "ascendjob",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    text = out.read_text(encoding="utf-8")
    assert "--workload ascendjob" in text.splitlines()[0]
    assert YAML(typ="safe").load(text)["workload"] == "ascendjob"
    wrong = CliRunner().invoke(cli, ["chart", "values", "infer", "-f", example, "--workload", "ascendjob"])
    assert wrong.exit_code == 2 and "workload of the train chart" in wrong.output


@needs_helm
def test_ascendjob_notes_and_names(charts, tmp_path):
    release = "a-release-name-of-the-longest-length-helm-allows-53ch"
    job = one(render(charts["train"], *ASCENDJOB, "nodes=128", release=release), "AscendJob")
    names = [p["metadata"]["name"] for p in operator_pods(job)] + [operator_service(job)["name"]]
    assert len(job["metadata"]["name"]) <= 51 and max(len(n) for n in names) <= 63
    text = notes(charts["train"], tmp_path, *ASCENDJOB, "nodes=4", "ascendjob.restarts=2")
    assert "rel-ascend-train-worker-2 -c ascend" in text and "worker_31.log" in text
    assert "up to 2 time(s)" in text and "kubectl get acjob" in text
