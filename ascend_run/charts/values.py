"""A deployment file as values for `charts/ascend-train` or `charts/ascend-infer`.

The same file that drives the SSH launcher drives `helm install`: nodes become pods, and the image, env,
mounts and msrun settings carry over. What Kubernetes decides by itself (addresses, SSH, which NPUs a pod
gets, the master address, which is pod 0's DNS name) is dropped with a note; what the chart cannot express
(per-node env, synced directories) is an error, not a silent difference between the two worlds. With the
ascendjob workload (MindCluster), `job.restarts` becomes fault rescheduling and resume, and `job.rank_table`
the Ascend Operator's rank table.
"""

from __future__ import annotations

import io
import posixpath
import shlex
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from ascend_run.charts import CHARTS
from ascend_run.charts import mindcluster as mc
from ascend_run.charts.naming import k8s_quantity, split_image, volume_name
from ascend_run.charts.render import host_mounts
from ascend_run.inputs.deployment import Deployment
from ascend_run.errors import ConfigError

# Helm reads values as YAML 1.1, where these plain words are booleans or null; YAML 1.2 writers leave them bare.
_YAML11_SPECIAL = {"y", "yes", "n", "no", "on", "off", "true", "false", "null", "~", ""}


def _security_context(dep: Deployment) -> dict[str, Any]:
    container = dep.spec.container
    user = container.user or dep.profile.container.user
    context: dict[str, Any] = {}
    if user == "root":
        context["runAsUser"] = 0
    elif user is not None and user.isdigit():
        context["runAsUser"] = int(user)
    elif user is not None:
        raise ConfigError(f"user {user!r} has no Kubernetes equivalent (runAsUser takes a numeric uid)",
                          file=str(dep.path), key="container.user", fix="write the numeric uid, e.g. \"1000\"")
    if container.privileged:
        context["privileged"] = True
    return context


def _check_expressible(dep: Deployment) -> None:
    """Refuse what pods of one template cannot do, naming the key, instead of dropping it."""
    for node in dep.nodes:
        if node.env:
            raise ConfigError("per-node environment has no equivalent in the chart: every pod shares one template",
                              file=str(dep.path), key=f"nodes (rank {node.rank}, {node.name}).env",
                              fix="move the variables to the file-wide env:, or set them in a wrapper script")
    if dep.job and dep.job.sync:
        raise ConfigError("job.sync copies local directories over SSH, which Kubernetes cannot do",
                          file=str(dep.path), key="job.sync",
                          fix="put the files in the image or on a shared volume (mounts:)")


def _job_values(dep: Deployment, npus: int) -> dict[str, Any]:
    job = dep.require_job()
    # msrun_launcher.sh `eval`s its first argument, so it stays one string; msrun takes an argument list.
    command: str | list[str] = job.command if job.launcher == "msrun_launcher" else shlex.split(job.command)
    return {
        "launcher": job.launcher,
        "command": command,
        "workdir": job.workdir,
        "launcherScript": job.launcher_script,
        "masterPort": job.master_port,
        "logDir": job.log_dir,
        "clusterTimeout": job.cluster_timeout,
    }


def _covered(path: str, volumes: list[dict[str, Any]]) -> bool:
    """True when a writable volume is mounted at `path` or above it."""
    for volume in volumes:
        at = volume["mountPath"].rstrip("/")
        if not volume.get("readOnly") and (path == at or path.startswith(at + "/")):
            return True
    return False


def _ascendjob_values(dep: Deployment, volumes: list[dict[str, Any]], notes: list[str]) -> dict[str, Any]:
    """The MindCluster settings from the file: restarts become fault rescheduling, rank_table the
    operator's ConfigMap, and restarts also turn on resume from the shared checkpoint directory."""
    job = dep.require_job()
    clashes = sorted(set(dep.spec.env) & set(mc.OPERATOR_ENV))
    if clashes:
        raise ConfigError(f"{', '.join(clashes)} is set by the Ascend Operator in every pod of an {mc.KIND}",
                          file=str(dep.path), key=f"env.{clashes[0]}",
                          fix="drop it from env: the operator's value is the one msrun gets")
    if job.restarts > mc.MAX_RESTARTS:
        raise ConfigError(f"MindCluster retries a job at most {mc.MAX_RESTARTS} times (fault-retry-times)",
                          file=str(dep.path), key="job.restarts", fix=f"use at most {mc.MAX_RESTARTS}")
    checkpoint_dir = posixpath.join(job.workdir, "output", "checkpoint")
    resume = job.restarts > 0
    if resume and not _covered(checkpoint_dir, volumes):
        raise ConfigError(f"job.restarts needs the checkpoints ({checkpoint_dir}) on storage every server sees: a "
                          "job MindCluster restarts on other servers resumes from them",
                          file=str(dep.path), key="job.restarts",
                          fix=f"mount shared storage at {checkpoint_dir} or above it (mounts:)")
    if job.rank_table:
        notes.append(f"job.rank_table {job.rank_table}: in the {mc.KIND} the Ascend Operator writes the rank table "
                     f"into ConfigMap {mc.RANK_TABLE_PREFIX}<job>, mounted at {mc.RANK_TABLE_DIR}/{mc.RANK_TABLE_KEY} "
                     "(RANK_TABLE_FILE)")
    if getattr(dep.spec, "spares", None):
        notes.append("spares: not used on Kubernetes: MindCluster reschedules onto any healthy server of the pool")
    return {
        "workload": "ascendjob",
        "volcano": {"enabled": True, "schedulerName": "volcano", "queue": "default"},
        "ascendjob": {"restarts": job.restarts, "rankTable": {"enabled": bool(job.rank_table)},
                      "resume": {"enabled": resume, "checkpointDir": checkpoint_dir}},
    }


def _indexed_job_notes(dep: Deployment, notes: list[str]) -> None:
    job = dep.job
    if job and job.restarts:
        notes.append("job.restarts is not used by the Indexed Job (its first failure fails the job): "
                     "use --workload ascendjob for MindCluster's fault rescheduling")
    if job and job.rank_table:
        notes.append("job.rank_table is not used by the Indexed Job (msrun's dynamic cluster needs none): "
                     "--workload ascendjob mounts the Ascend Operator's rank table")


def chart_values(dep: Deployment, kind: str, workload: str = "job") -> tuple[dict[str, Any], list[str]]:
    """(values, notes): the values for chart `kind`, and what did not carry over (for the user to read).

    `workload` picks what runs the training pods (train chart): "job" (an Indexed Job) or "ascendjob"
    (MindCluster's AscendJob).
    """
    if kind not in CHARTS:
        raise ConfigError(f"unknown chart {kind!r}", fix=f"use one of: {', '.join(CHARTS)}")
    if workload not in mc.WORKLOADS or (workload != "job" and kind != "train"):
        raise ConfigError(f"workload {workload!r} does not exist for the {kind} chart",
                          fix="the train chart takes job or ascendjob; the infer chart has no workload choice")
    _check_expressible(dep)
    notes: list[str] = []
    profile = dep.profile
    if profile.role != kind:
        notes.append(f"profile {profile.name} is meant for {profile.role}, used here with the {kind} chart")
    job = dep.job
    npus = (job.local_workers if job and job.local_workers else None) or len(dep.nodes[0].npus)
    if any(len(n.npus) != profile.npu_count for n in dep.nodes):
        notes.append(f"pods request {npus} NPUs each; Kubernetes' device plugin picks which ones (nodes[].npus "
                     "indices do not carry over)")
    repository, tag, digest = split_image(dep.image)
    taken = {m["name"] for m in host_mounts(profile)} | {"dshm", "msrun-logs"}
    volumes = [{"name": volume_name(m.target, taken), "hostPath": m.source, "mountPath": m.target,
                "readOnly": m.read_only} for m in dep.mounts]
    if volumes:
        notes.append("mounts: became hostPath volumes; each must hold the same files on every server (a shared "
                     "filesystem), or give it a claimName instead")
    if job and job.master_address:
        notes.append(f"job.master_address {job.master_address} is not used: Kubernetes gives the master address "
                     "(pod 0's DNS name, or the Ascend Operator's MS_SCHED_HOST)")
    shm = dep.spec.container.shm_size
    values: dict[str, Any] = {
        "fullnameOverride": dep.name,
        "nodes": len(dep.nodes),
        "npusPerNode": npus,
        "resourceName": profile.kubernetes.resource_name,
        "image": {"repository": repository, "tag": tag, "digest": digest},
        "job": _job_values(dep, npus),
        "env": dict(dep.spec.env),
        "volumes": volumes,
        "shm": {"enabled": True, "sizeLimit": k8s_quantity(shm) if shm else profile.kubernetes.shm_size},
        "driverMounts": {"enabled": True, "mounts": host_mounts(profile)},
        "logs": {"hostPath": dep.host_log_dir},
        "securityContext": _security_context(dep),
        "nodeSelector": dict(profile.kubernetes.node_labels),
    }
    if kind == "train" and workload == "ascendjob":
        values.update(_ascendjob_values(dep, volumes, notes))
    elif kind == "train":
        _indexed_job_notes(dep, notes)
    if kind == "infer":
        if job and job.serve_port:
            values["server"] = {"port": job.serve_port}
            values["service"] = {"type": "ClusterIP", "port": job.serve_port}
        else:
            notes.append("job.serve_port is not set: the chart probes and exposes an HTTP server on port 8000 "
                         "of the leader; set serve_port to your server's port")
    return values, notes


def _quote_special(data: Any) -> Any:
    if isinstance(data, dict):
        return {k: _quote_special(v) for k, v in data.items()}
    if isinstance(data, list):
        return [_quote_special(v) for v in data]
    if isinstance(data, str) and data.lower() in _YAML11_SPECIAL:
        return DoubleQuotedScalarString(data)
    return data


def values_yaml(values: dict[str, Any], header: str) -> str:
    """Values as YAML text under a comment header; words YAML 1.1 would misread (off, yes) are quoted."""
    yaml = YAML(typ="rt")
    yaml.default_flow_style = False
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    out = io.StringIO()
    yaml.dump(_quote_special(values), out)
    comment = "".join(f"# {line}\n" if line else "#\n" for line in header.splitlines())
    return comment + out.getvalue()
