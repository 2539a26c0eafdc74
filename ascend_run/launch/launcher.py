"""Start a job on every node, watch it, and stop all of it the moment any part fails.

The job runs as each node's container main process (`msrun --join True`), so:
- `docker wait` on every node tells the launcher the job's exit code the moment msrun exits there;
- `docker rm -f` kills everything of the job on a node (msrun only stops its own node's workers, and its
  setsid workers survive a SIGTERM to msrun: NOTES.md section 5), so stopping the job means removing
  the containers everywhere;
- the job's logs live on each server (`host_log_dir`, mounted over the container's log dir) and survive
  the container.
"""

from __future__ import annotations

import queue
import shlex
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.errors import AscendRunError, JobFailed, TransportError
from ascend_run.launch import nodeops, sync
from ascend_run.launch.plan import NodePlan, launch_plan

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


def parallel(nodes: list[Node], func: Callable[[Node], object]) -> dict[str, object]:
    """Run `func(node)` for every node at once; results or exceptions, by node name."""
    results: dict[str, object] = {}
    lock = threading.Lock()

    def work(node: Node) -> None:
        try:
            value = func(node)
        except BaseException as exc:  # collected, re-raised by the caller with context
            value = exc
        with lock:
            results[node.name] = value

    threads = [threading.Thread(target=work, args=(n,), daemon=True) for n in nodes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def raise_first(results: Mapping[str, object], what: str) -> None:
    """Raise the first node's exception from `parallel`'s results; a non-package one names the node."""
    errors = {name: value for name, value in results.items() if isinstance(value, BaseException)}
    if errors:
        name, exc = next(iter(errors.items()))
        if isinstance(exc, AscendRunError):
            raise exc
        raise TransportError(f"{what} failed: {exc}", host=name) from exc


class Launcher:
    """One job on one deployment; transports by node name (one reused connection per node)."""

    def __init__(self, dep: Deployment, transports: Mapping[str, object], *, on_line: LinePrinter,
                 notice: Notice = lambda s: None) -> None:
        self.dep = dep
        self.transports = transports
        self.on_line = on_line
        self.notice = notice
        self.plans: dict[str, NodePlan] = {p.node.name: p for p in launch_plan(dep)}
        self.name = dep.container_name
        self._stopping = threading.Event()

    def t(self, node: Node):
        return self.transports[node.name]

    # --- before the start -------------------------------------------------------------------------

    def running_elsewhere(self) -> dict[str, list[str]]:
        """Nodes that already have a container of this job: {node: [container (state)]}."""
        results = parallel(list(self.dep.nodes), lambda n: nodeops.job_containers(self.t(n), self.dep.name))
        raise_first(results, "listing containers")
        return {name: [f"{c.name} ({c.state})" for c in found] for name, found in results.items() if found}

    def remove_existing(self) -> None:
        def work(node: Node) -> None:
            found = nodeops.job_containers(self.t(node), self.dep.name)
            nodeops.remove_containers(self.t(node), [c.name for c in found])
        raise_first(parallel(list(self.dep.nodes), work), "removing old containers")

    def prepare_nodes(self) -> None:
        """Log dir rotated (old logs kept as .prev), synced dirs brought up to date, on every node at once."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        trees = sync.local_trees(plan.sync_dirs for plan in self.plans.values())  # hashed once, not per node

        def work(node: Node) -> list[sync.SyncResult]:
            t = self.t(node)
            log_dir = self.dep.host_log_dir
            # world-writable: the image's own user (HwHiAiUser, uid 1000) writes the logs unless the
            # profile runs the container as root
            rotate = ('if [ -d "$1" ] && [ -n "$(ls -A "$1")" ]; then mv "$1" "$1.prev-$2"; fi; '
                      'mkdir -p "$1" && chmod 0777 "$1"')
            t.run(["sh", "-c", rotate, "sh", log_dir, stamp], timeout=60).check(node.name)
            return [sync.sync_dir(t, source, trees[source], remote) for source, remote in self.plans[node.name].sync_dirs]
        results = parallel(list(self.dep.nodes), work)
        raise_first(results, "preparing nodes")
        if trees:
            self.notice(sync.summary(results))

    # --- start, watch, stop -----------------------------------------------------------------------

    def start(self) -> None:
        """`docker run` on every node; if any node fails to start, remove what did start and raise."""
        results = parallel(list(self.dep.nodes),
                           lambda n: self.t(n).run(self.plans[n.name].docker_argv, timeout=300))
        failed = {name: r for name, r in results.items() if isinstance(r, BaseException) or r.rc != 0}
        if failed:
            self.stop_all("a node failed to start")
            name, result = next(iter(failed.items()))
            if isinstance(result, BaseException):
                raise TransportError(f"could not start the job: {result}", host=name)
            result.check(name)

    def watch(self) -> JobOutcome:
        """Stream every node's output; on the first failure stop the whole job. Returns the outcome."""
        events: queue.Queue = queue.Queue()
        outcome = JobOutcome()
        for node in self.dep.nodes:
            threading.Thread(target=self._stream, args=(node,), daemon=True).start()
            threading.Thread(target=self._wait, args=(node, events), daemon=True).start()
        pending = {n.name for n in self.dep.nodes}
        try:
            while pending:
                try:
                    name, rc, error = events.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
                except queue.Empty:
                    continue
                pending.discard(name)
                outcome.exit_codes[name] = rc
                if error is not None or rc != 0:
                    outcome.failed_node = name
                    outcome.reason = error or f"exited with code {rc}"
                    self.stop_all(f"{name} {outcome.reason}")
                    break
        except KeyboardInterrupt:
            outcome.failed_node, outcome.reason = "(you)", "interrupted"
            self.stop_all("interrupted (Ctrl-C)")
            raise
        return outcome

    def _wait(self, node: Node, events: queue.Queue) -> None:
        try:
            rc = nodeops.wait_container(self.t(node), self.name)
            events.put((node.name, rc, None))
        except Exception as exc:  # a lost connection is a failure of the whole job
            events.put((node.name, None, f"lost: {exc}"))

    def _stream(self, node: Node) -> None:
        try:
            self.t(node).stream(["docker", "logs", "--follow", self.name],
                                lambda line: self.on_line(node, line))
        except Exception:
            pass  # the waiter reports lost nodes; streaming is best effort

    def stop_all(self, reason: str) -> dict[str, str]:
        """Remove the job's containers on every reachable node and wait until they are gone."""
        if self._stopping.is_set():
            return {}
        self._stopping.set()
        self.notice(f"stopping the job on all {len(self.dep.nodes)} nodes: {reason}")
        return stop_job(self.dep, self.transports)


def stop_job(dep: Deployment, transports: Mapping[str, object], attempts: int = 3) -> dict[str, str]:
    """Remove every container of the job on every node, retrying unreachable ones. {node: problem}."""
    def work(node: Node) -> None:
        t = transports[node.name]
        last: Exception | None = None
        for attempt in range(attempts):
            try:
                found = nodeops.job_containers(t, dep.name)
                nodeops.remove_containers(t, [c.name for c in found])
                if not nodeops.job_containers(t, dep.name):
                    return None
            except Exception as exc:
                last = exc
            time.sleep(0.5 * (attempt + 1))
        raise TransportError(f"could not remove the job's containers: {last}", host=node.name,
                             fix=f"when the node is back: ascend-run stop -f {shlex.quote(str(dep.path))}")

    results = parallel(list(dep.nodes), work)
    return {name: str(value) for name, value in results.items() if isinstance(value, BaseException)}


def outcome_error(outcome: JobOutcome) -> JobFailed:
    rc = next((c for c in outcome.exit_codes.values() if c not in (None, 0)), None)
    error = JobFailed(f"the job failed on {outcome.failed_node}: {outcome.reason}; stopped on every node",
                      fix="see the node's log above, or collect all logs: ascend-run logs -f FILE --collect DIR")
    if rc is not None and 0 < rc < 126:
        error.exit_code = rc
    return error
