"""`launch` checks the job's MindFormers config first: a wrong parallel layout fails in seconds here
instead of after minutes of graph compilation on every node.

The config is read where the job will read it: a local file next to the deployment file if there is one,
otherwise inside the job's image on node 0 (with the deployment's mounts, where configs often live).
"""

from __future__ import annotations

import posixpath

from ascend_run.errors import ConfigError
from ascend_run.inputs.yamlio import read_text
from ascend_run.launch.plan import msrun_values
from ascend_run.render.docker_run import mount_flag
from ascend_run.transport.cluster import Cluster


def read_job_config(cluster: Cluster) -> tuple[str, str] | None:
    """(YAML text, where it was read) of `job.config`, or None when the job names no config."""
    dep = cluster.dep
    job = dep.job
    if job is None or not job.config:
        return None
    local = dep.path.parent / job.config
    if local.is_file():
        return read_text(local, "a MindFormers config", fix="check job.config"), str(local)
    path = job.config if job.config.startswith("/") else posixpath.join(job.workdir, job.config)
    node = dep.nodes[0]
    argv = ["docker", "run", "--rm", *[mount_flag(m) for m in dep.mounts], "--entrypoint", "cat", dep.image, path]
    result = cluster.transport(node).run(argv, timeout=180)
    if result.rc != 0:
        raise ConfigError(f"cannot read {path} in {dep.image} on {node.name}: {result.stderr.strip()[-300:]}",
                          file=str(dep.path), key="job.config",
                          fix="give a path inside the image or a mount, or a file next to the deployment file")
    return result.stdout, f"{node.name}:{path}"


def check_job_config(cluster: Cluster):
    """The config check report for the job (None without `job.config`); errors are the caller's to raise."""
    from ascend_run.mfconfig import JobContext, check_config, transport_path_checker

    dep = cluster.dep
    found = read_job_config(cluster)
    if found is None:
        return None
    text, _where = found
    workers = msrun_values(dep, dep.nodes[0]).worker_num
    job = JobContext.of(dep, npus=workers, path_checker=transport_path_checker(cluster.transports))
    return check_config(text, job)
