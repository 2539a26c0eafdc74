"""Start a job on every node, watch it, and stop all of it the moment any part fails.

The job runs as each node's container main process (`msrun --join True`), so:
- `docker wait` on every node tells the launcher the job's exit code the moment msrun exits there;
- `docker rm -f` kills everything of the job on a node (msrun only stops its own node's workers, and its
  setsid workers survive a SIGTERM to msrun: NOTES.md section 5), so stopping the job means removing
  the containers everywhere;
- the job's logs live on each server (`host_log_dir`, mounted over the container's log dir) and survive
  the container. msrun truncates `worker_N.log` when it starts, so a supervised relaunch first moves the
  last attempt's logs into `host_log_dir/attempt-K/` (`logs --collect` copies those too, and `logs --loss`
  reads them in order: each step once, from the attempt that got furthest with it).
"""

from __future__ import annotations

import shlex
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ascend_run import secrets
from ascend_run.errors import JobFailed, TransportError
from ascend_run.inputs.deployment import Node
from ascend_run.launch import nodeops, sync
from ascend_run.launch.plan import NodePlan, Overrides, launch_plan
from ascend_run.launch.watch import JobWatch
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster
from ascend_run.transport.fanout import raise_first

LinePrinter = Callable[[Node, str], None]
Notice = Callable[[str], None]


@dataclass
class JobOutcome:
    """How the job ended: per-node exit codes (None = unknown/unreachable) and the first failure."""

    exit_codes: dict[str, int | None] = field(default_factory=dict)
    failed_node: str | None = None
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.failed_node is None and all(rc == 0 for rc in self.exit_codes.values())


class Launcher:
    """One job on one cluster (one reused connection per node)."""

    def __init__(self, cluster: Cluster, *, on_line: LinePrinter = lambda node, line: None,
                 notice: Notice = lambda s: None, overrides: Overrides | None = None) -> None:
        self.cluster = cluster
        self.dep = cluster.dep
        self.on_line = on_line
        self.notice = notice
        self.plans: dict[str, NodePlan] = {p.node.name: p for p in launch_plan(self.dep, overrides)}
        self.name = self.dep.container_name
        self._stopping = threading.Event()

    # --- before the start -------------------------------------------------------------------------

    def running_elsewhere(self) -> dict[str, list[str]]:
        """Nodes that already have a container of this job: {node: [container (state)]}."""
        found = self.cluster.each_or_raise(lambda n, t: nodeops.job_containers(t, self.dep.name))
        return {name: [f"{c.name} ({c.state})" for c in containers] for name, containers in found.items()
                if containers}

    def remove_existing(self) -> None:
        def work(node: Node, t: Transport) -> None:
            nodeops.remove_containers(t, [c.name for c in nodeops.job_containers(t, self.dep.name)])
        self.cluster.each_or_raise(work)

    def prepare_nodes(self, keep_logs_as: str | None = None) -> None:
        """Log dir rotated (old logs kept as .prev), synced dirs brought up to date, on every node at once. With
        `keep_logs_as` (a relaunch: "attempt-1"), the last attempt's logs move into that subdirectory instead."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        trees = sync.local_trees(plan.sync_dirs for plan in self.plans.values())  # hashed once, not per node

        owner = log_owner(self.dep)

        def work(node: Node, t: Transport) -> list[sync.SyncResult]:
            # writable by the job's user only (0755, owned by it): another local user cannot forge step lines
            if keep_logs_as:
                script = ('mkdir -p "$1/$2" && chown -- "$3" "$1" && chmod 0755 "$1" && cd "$1" && '
                          'for f in worker_*.log scheduler.log; do [ -f "$f" ] && mv "$f" "$2/"; done; true')
                argv = ["sh", "-c", script, "sh", self.dep.host_log_dir, keep_logs_as, owner]
            else:
                script = ('if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then mv "$1" "$1.prev-$2"; fi; '
                          'mkdir -p "$1" && chown -- "$3" "$1" && chmod 0755 "$1"')
                argv = ["sh", "-c", script, "sh", self.dep.host_log_dir, stamp, owner]
            t.run(argv, timeout=60).check(node.name)
            return [sync.sync_dir(t, source, trees[source], remote)
                    for source, remote in self.plans[node.name].sync_dirs]
        results = self.cluster.each_or_raise(work)
        if trees:
            self.notice(sync.summary(results))

    # --- start, watch, stop -----------------------------------------------------------------------

    def start(self) -> None:
        """`docker run` on every node; if any node fails to start, remove what did start and raise. With
        `secrets:`, each node's 0600 env file is written from stdin first and removed after its start."""
        found = secrets.values(self.dep) if self.dep.spec.secrets else {}
        path = secrets.env_file_path(self.dep)

        def work(node: Node, t: Transport) -> None:
            # the error shows the command's head and the image, not its fifty flags
            shown = ["docker", "run", "...", self.dep.image]
            if not found:
                t.run(self.plans[node.name].docker_argv, timeout=300).check(node.name, shown)
                return
            try:
                t.run(["sh", "-c", secrets.WRITE_SCRIPT, "sh", path], stdin=secrets.env_file(found),
                      timeout=60).check(node.name, ["sh", "-c", "(write the 0600 secrets file)", path])
                t.run(self.plans[node.name].docker_argv, timeout=300).check(node.name, shown)
            finally:
                t.run([*secrets.REMOVE_ARGV, path], timeout=60)
        outcomes = self.cluster.each(work)
        if any(not o.ok for o in outcomes):
            self.stop_all("a node failed to start")
            raise_first(outcomes)

    def watch(self) -> JobOutcome:
        """Stream every node's output; on the first failure (a non-zero exit, a lost connection) stop the
        whole job. Returns the outcome."""
        watch = JobWatch(self.cluster, self.name, on_line=self.on_line).start()
        outcome = JobOutcome()
        pending = {n.name for n in self.cluster.nodes}
        try:
            while pending:
                event = watch.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                if event is None or event.kind not in ("exit", "lost"):
                    continue
                pending.discard(event.node)
                outcome.exit_codes[event.node] = event.rc
                if event.kind == "lost" or event.rc != 0:
                    outcome.failed_node = event.node
                    outcome.reason = f"lost: {event.detail}" if event.kind == "lost" else \
                        event.detail or f"exited with code {event.rc}"
                    self.stop_all(f"{event.node} {outcome.reason}")
                    break
        except KeyboardInterrupt:
            outcome.failed_node, outcome.reason = "(you)", "interrupted"
            self.stop_all("interrupted (Ctrl-C)")
            raise
        finally:
            watch.close()
        return outcome

    def stop_all(self, reason: str) -> dict[str, str]:
        """Remove the job's containers on every reachable node and wait until they are gone."""
        if self._stopping.is_set():
            return {}
        self._stopping.set()
        self.notice(f"stopping the job on all {len(self.cluster.nodes)} nodes: {reason}")
        return stop_job(self.cluster)


def stop_job(cluster: Cluster, attempts: int = 3, pause_s: float = 0.5) -> dict[str, str]:
    """Remove every container of the job on every node, retrying unreachable ones. {node: problem}."""
    dep = cluster.dep

    def work(node: Node, t: Transport) -> None:
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                nodeops.remove_containers(t, [c.name for c in nodeops.job_containers(t, dep.name)])
                if not nodeops.job_containers(t, dep.name):
                    return
            except Exception as exc:  # noqa: BLE001 - retried, then reported with the node's name
                last = exc
            time.sleep(pause_s * (attempt + 1))
        raise TransportError(f"could not remove the job's containers: {last}", host=node.name,
                             fix=f"when the node is back: ascend-run stop -f {shlex.quote(str(dep.path))}")

    return {o.node.name: str(o.error) for o in cluster.each(work) if not o.ok}


def outcome_error(outcome: JobOutcome) -> JobFailed:
    rc = next((c for c in outcome.exit_codes.values() if c not in (None, 0)), None)
    error = JobFailed(f"the job failed on {outcome.failed_node}: {outcome.reason}; stopped on every node",
                      fix="see the node's log above, or collect all logs: ascend-run logs -f FILE --collect --out DIR")
    if rc is not None and 0 < rc < 126:
        error.exit_code = rc
    return error


IMAGE_USER = "1000:1000"  # the kit's images run as HwHiAiUser, 1000:1000 (templates/images/Dockerfile.j2)


def log_owner(dep) -> str:
    """Who owns the job's log directory on the servers: the user the container runs as (docker --user's
    name|uid[:group|gid], which chown takes too), else the kit's images' own user."""
    return dep.spec.container.user or dep.profile.container.user or IMAGE_USER
