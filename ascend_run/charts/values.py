"""A deployment file as values for `charts/ascend-train` or `charts/ascend-infer`.

The same file that drives the SSH launcher drives `helm install`: nodes become pods, and the image, env,
mounts and msrun settings carry over. What Kubernetes decides by itself (addresses, SSH, which NPUs a pod
gets, the master address, which is pod 0's DNS name) is dropped with a note; what the chart cannot express
(per-node env, synced directories) is an error, not a silent difference between the two worlds.
"""

from __future__ import annotations

import io
import shlex
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.scalarstring import DoubleQuotedScalarString

from ascend_run.charts import CHARTS
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
    job = dep.job
    if job is None:
        raise ConfigError("the deployment file has no job: section", file=str(dep.path), key="job",
                          fix="add job: {command: ...} (see examples/)")
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


def chart_values(dep: Deployment, kind: str) -> tuple[dict[str, Any], list[str]]:
    """(values, notes): the values for chart `kind`, and what did not carry over (for the user to read)."""
    if kind not in CHARTS:
        raise ConfigError(f"unknown chart {kind!r}", fix=f"use one of: {', '.join(CHARTS)}")
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
        notes.append(f"job.master_address {job.master_address} is not used: the master is pod 0's DNS name")
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
