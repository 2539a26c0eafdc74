"""`logs --collect --out DIR`: every node's msrun logs (worker_*.log, and scheduler.log from the master) into
DIR/<node>/, with the logs of a supervised job's earlier attempts (attempt-K/) in DIR/<node>/attempt-K/."""

from __future__ import annotations

from pathlib import Path

from ascend_run.inputs.deployment import Node
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster


def _list_logs(t: Transport, log_dir: str) -> list[str]:
    script = ('cd "$1" 2>/dev/null || exit 0; for f in worker_*.log scheduler.log attempt-*/worker_*.log '
              'attempt-*/scheduler.log; do [ -f "$f" ] && echo "$f"; done; true')
    result = t.run(["sh", "-c", script, "sh", log_dir], timeout=60)
    result.check(t.host)
    return [line for line in result.stdout.splitlines() if line.strip()]


def collect_logs(cluster: Cluster, dest: Path) -> dict[str, list[str]]:
    """Copy the logs of every node, in parallel; returns the file names copied per node."""
    log_dir = cluster.dep.host_log_dir

    def work(node: Node, t: Transport) -> list[str]:
        names = _list_logs(t, log_dir)
        target = dest / node.name
        target.mkdir(parents=True, exist_ok=True)
        for name in names:
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            t.get(f"{log_dir}/{name}", target / name)
        return names

    return cluster.each_or_raise(work)
