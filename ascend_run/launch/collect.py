"""`logs --collect --out DIR`: every node's msrun logs (worker_*.log, and scheduler.log from the master) into
DIR/<node>/, with the logs of a supervised job's earlier attempts (attempt-K/) in DIR/<node>/attempt-K/."""

from __future__ import annotations

import re
from pathlib import Path

from ascend_run.inputs.deployment import Node
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster

# What a server may name (it answers the listing): anything else, `../x` included, is not copied.
LOG_NAME = re.compile(r"\A(?:attempt-[0-9]{1,6}/)?(?:worker_[0-9]{1,6}|scheduler)\.log\Z")


def _list_logs(t: Transport, log_dir: str) -> list[str]:
    script = ('cd "$1" 2>/dev/null || exit 0; for f in worker_*.log scheduler.log attempt-*/worker_*.log '
              'attempt-*/scheduler.log; do [ -f "$f" ] && echo "$f"; done; true')
    result = t.run(["sh", "-c", script, "sh", log_dir], timeout=60)
    result.check(t.host)
    return [line for line in result.stdout.splitlines() if LOG_NAME.match(line)]


def collect_logs(cluster: Cluster, dest: Path) -> dict[str, list[str]]:
    """Copy the logs of every node, in parallel; returns the file names copied per node."""
    log_dir = cluster.dep.host_log_dir

    def work(node: Node, t: Transport) -> list[str]:
        from ascend_run.outputs import staged_output

        names = _list_logs(t, log_dir)
        target = dest / node.name
        with staged_output(dest) as staged:  # into temporary files, renamed over whatever is there (a link too)
            staged._directory(target)
            for name in names:
                staged.stage_with(target / name, lambda tmp, name=name: t.get(f"{log_dir}/{name}", tmp))
        return names

    return cluster.each_or_raise(work)
