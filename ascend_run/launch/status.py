"""`status`: one row per node from the node itself (container state, last log line, last loss, and any
one-off step still running there, such as a weights download)."""

from __future__ import annotations

from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.launch import nodeops
from ascend_run.launch.losslog import parse_step_line
from ascend_run.render.docker_run import TASK_LABEL
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster

_TAIL_SCRIPT = 'for f in "$1"/worker_*.log; do [ -f "$f" ] && { echo "@@ $f"; tail -n 200 "$f"; }; done; true'


def _node_row(dep: Deployment, node: Node, t: Transport) -> dict:
    containers = nodeops.job_containers(t, dep.name)
    steps = nodeops.job_containers(t, dep.name, label=TASK_LABEL)
    tails = t.run(["sh", "-c", _TAIL_SCRIPT, "sh", dep.host_log_dir], timeout=60).stdout
    last_line, last_loss = None, None
    for line in tails.splitlines():
        if line.startswith("@@ "):
            continue
        if line.strip():
            last_line = line.strip()
        point = parse_step_line(line)
        if point is not None and point.loss is not None:
            last_loss = f"{point.loss:.6g} (step {point.step})"
    state = containers[0].state if containers else "none"
    return {"node": node.name, "rank": node.rank, "state": state,
            "status": containers[0].status if containers else "", "last_line": last_line, "last_loss": last_loss,
            "steps": [f"{c.name} ({c.status})" for c in steps]}


def collect_status(cluster: Cluster) -> list[dict]:
    """One row per node, in the deployment's order; a node that fails to answer is a row saying so."""
    rows = []
    for outcome in cluster.each(lambda n, t: _node_row(cluster.dep, n, t)):
        node = outcome.node
        rows.append(outcome.value if outcome.ok else {
            "node": node.name, "rank": node.rank, "state": "unreachable", "status": str(outcome.error),
            "last_line": None, "last_loss": None, "steps": []})
    return rows
