"""Preflight warnings for a job that is meant to restart: can a relaunch resume, can a spare take over?

With `job.restarts > 0` on several servers, a relaunch is only worth it from a checkpoint, and a spare can
only take a failed server's ranks if it sees that server's rank directories. So, before the launch:
the job names no output_dir, or its config saves no checkpoints (no CheckpointMonitor); the checkpoint
directory is under no mount (inside the container, gone with it); the servers and spares do not share it.
Warnings, not errors: the job itself may well run.
"""

from __future__ import annotations

from ascend_run.errors import AscendRunError
from ascend_run.supervise.resume import checkpoint_dir, saves_checkpoints
from ascend_run.transport.cluster import Cluster

_EXISTING_PARENT = 'd=$1; while [ ! -d "$d" ]; do d=$(dirname "$d"); done; echo "$d"'


def resume_warnings(cluster: Cluster, config_text: str | None) -> list[str]:
    """Warnings for `preflight` and the supervisor's start, over the cluster's nodes (spares included)."""
    dep = cluster.dep
    job = dep.job
    if job is None or job.restarts == 0 or len(dep.nodes) < 2:
        return []
    ckpt = checkpoint_dir(dep, config_text)
    if ckpt is None:
        return [f"job.restarts is {job.restarts} but the job names no output_dir (job.output_dir, or job.config's): "
                "a relaunch starts again from step 1"]
    out = []
    if config_text is not None and not job.output_dir and not saves_checkpoints(config_text):
        out.append(f"job.restarts is {job.restarts} but {job.config} saves no checkpoints (no CheckpointMonitor in "
                   "callbacks): a relaunch starts again from step 1")
    if ckpt.host is None:
        out.append(f"the checkpoints ({ckpt.container}, from {ckpt.source}) are under no mount: inside the container, "
                   "gone with it; mount shared storage there so a relaunch can resume")
        return out
    apart = not_sharing(cluster, ckpt.host)
    if apart:
        out.append(f"the checkpoint directory {ckpt.host} is not on storage every server shares "
                   f"({', '.join(apart[:5])}{' …' if len(apart) > 5 else ''} do(es) not see "
                   f"{cluster.nodes[0].name}'s): a spare could not take a failed server's ranks")
    return out


def not_sharing(cluster: Cluster, path: str) -> list[str]:
    """The servers that do not see the first server's `path` (probed where it exists, or at its deepest existing
    parent, since the job creates the directory itself): `weights --from-node`'s probe."""
    from ascend_run.steps.spread import sharing_nodes

    first, *others = cluster.nodes
    if not others:
        return []
    t = cluster.transport(first)
    where = t.run(["sh", "-c", _EXISTING_PARENT, "sh", path], timeout=30).stdout.strip() or "/"
    if where == "/":
        return [n.name for n in others]
    try:
        seen = set(sharing_nodes(cluster, first, others, where))
    except AscendRunError:
        return [n.name for n in others]  # cannot write a probe there: cannot tell, so say so
    return [n.name for n in others if n.name not in seen]
