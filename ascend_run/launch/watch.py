"""Watch a running job on every node at once, as a stream of events.

Per node, over its one connection: `docker wait` (the job's exit code the moment msrun exits there),
`docker logs --follow` (the job's output, handed to `on_line` as it comes), and, when the ranks are given,
`tail -F` over that node's `worker_N.log` files (each rank's step lines: the progress that tells a hang
from a slow step). With `probe_s`, the node is also asked to answer every `probe_s` seconds; a node that
stops answering (or whose connection breaks) is reported `lost`, reconnected in the background, and
`back` when it answers again, its watchers resumed on the new connection. The caller decides what a lost
node means (the launcher: a failure at once; the supervisor: a failure after `job.unreachable_timeout`).

Threads, not the bounded fan-out: a running job is watched on every node for its whole life.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ascend_run.errors import reason_of
from ascend_run.inputs.deployment import Node
from ascend_run.launch import nodeops
from ascend_run.launch.losslog import LossPoint, parse_step_line
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster

PROBE_TIMEOUT_S = 10.0   # a node that takes longer to run `true` is not answering


@dataclass(frozen=True)
class WatchEvent:
    """exit (rc; None: unknown), worker-failed (rc: the worker's, detail: msrun's line), lost (detail), back,
    step (rank, point). `at` is time.time()."""

    kind: str
    node: str
    at: float
    rc: int | None = None
    detail: str = ""
    rank: int | None = None
    point: LossPoint | None = None


# --- msrun's verdict on a worker (pure) -------------------------------------------------------------------

# msrun polls its workers every second; when one exits non-zero it logs this, kills the node's other workers
# and exits 1. Its own exit (interpreter and MindSpore teardown, the container's end, `docker wait` answering
# over SSH) takes 1 s on an idle machine and was seen to take 8 s on a busy one: the line is the earlier news.
_WORKER_FAILED = re.compile(r"Worker process (\d+) exit with exception\. Error code: (-?\d+)")


def worker_failure(line: str) -> int | None:
    """The exit code msrun reports for a failed worker in this output line, or None."""
    if "exit with exception" not in line:
        return None
    match = _WORKER_FAILED.search(line)
    return int(match.group(2)) if match else None


# --- tail -F output: which rank a line belongs to (pure) ---------------------------------------------------

_HEADER = re.compile(r"^==> .*?worker_(\d+)\.log <==$")


def tail_argv(log_dir: str, ranks: Sequence[int], last: int | None = None) -> list[str]:
    """`tail -F` over the ranks' worker logs (they may not exist yet: -F waits for them), with headers; from
    the start, or from the `last` lines."""
    return ["tail", "-v", "-F", "-n", "+1" if last is None else str(last),
            *(f"{log_dir}/worker_{r}.log" for r in ranks)]


class RankLines:
    """Splits `tail -v -F` output of several worker logs back into (rank, line)."""

    def __init__(self, ranks: Sequence[int]) -> None:
        self.rank: int | None = ranks[0] if len(ranks) == 1 else None

    def feed(self, line: str) -> tuple[int, str] | None:
        header = _HEADER.match(line.strip())
        if header:
            self.rank = int(header.group(1))
            return None
        if line.startswith("tail: ") or self.rank is None or not line.strip():
            return None  # tail's own notes ("has appeared; following new file"), or before any header
        return self.rank, line


# --- the watch ------------------------------------------------------------------------------------------------

class _NodeState:
    def __init__(self) -> None:
        self.generation = 0       # bumped at every reconnection; a watcher on an older one restarts
        self.lost = False
        self.changed = threading.Condition()


class JobWatch:
    """Everything a running job does, as `WatchEvent`s from `get()`; output lines go to `on_line` directly."""

    def __init__(self, cluster: Cluster, container: str, *, on_line: Callable[[Node, str], None] = lambda n, s: None,
                 ranks: Mapping[str, Sequence[int]] | None = None, log_dir: str | None = None,
                 probe_s: float | None = None, tail_last: int | None = None,
                 output_since: float | None = None) -> None:
        self.cluster = cluster
        self.container = container
        self.on_line = on_line
        self.ranks = dict(ranks or {})
        self.log_dir = log_dir
        self.probe_s = probe_s
        self.tail_last = tail_last
        self.output_since = output_since  # a takeover: the output lines already recorded are not read again
        self.events: queue.Queue[WatchEvent] = queue.Queue()
        self.stopped = threading.Event()
        self.nodes = list(cluster.nodes)
        self._state = {n.name: _NodeState() for n in self.nodes}

    def start(self) -> JobWatch:
        for node in self.nodes:
            self._thread(self._wait, node)
            self._thread(self._output, node)
            if self.log_dir and self.ranks.get(node.name):
                self._thread(self._tail, node)
            if self.probe_s:
                self._thread(self._probe, node)
        return self

    def get(self, timeout: float) -> WatchEvent | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop watching (the job itself is left as it is); streams end within a second."""
        self.stopped.set()
        for state in self._state.values():
            with state.changed:
                state.changed.notify_all()

    def _thread(self, target, node: Node) -> None:
        threading.Thread(target=target, args=(node,), daemon=True, name=f"watch-{node.name}").start()

    def _put(self, kind: str, node: Node, **fields) -> None:
        if not self.stopped.is_set():
            self.events.put(WatchEvent(kind, node.name, time.time(), **fields))

    # --- connection state shared by a node's watchers ----------------------------------------------------

    def _current(self, node: Node) -> tuple[Transport, int]:
        state = self._state[node.name]
        with state.changed:
            return self.cluster.transport(node), state.generation

    def _broke(self, node: Node, generation: int, exc: BaseException) -> bool:
        """A watcher's command failed on `generation`'s connection. True when it should try again (a newer
        connection exists, or one will be made); False when it should give up (no reconnection, or stopped)."""
        state = self._state[node.name]
        with state.changed:
            if state.generation != generation:
                return not self.stopped.is_set()
            if not state.lost:
                state.lost = True
                self._put("lost", node, detail=reason_of(exc))
            if not self.probe_s:
                return False  # nobody reconnects: the caller treats the node as lost
            while state.generation == generation and not self.stopped.is_set():
                state.changed.wait(1.0)
        return not self.stopped.is_set()

    # --- the watchers ------------------------------------------------------------------------------------------

    def _wait(self, node: Node) -> None:
        while not self.stopped.is_set():
            t, generation = self._current(node)
            try:
                result = t.run(nodeops.wait_argv(self.container))
            except Exception as exc:  # noqa: BLE001 - a broken connection: reported as lost, maybe resumed
                if not self._broke(node, generation, exc):
                    return
                t, _ = self._current(node)
                try:
                    if nodeops.container_state(t, self.container) == "running":
                        continue
                except Exception:  # noqa: BLE001,S112 - lost again: the next wait reports it
                    continue
                self._put("exit", node, rc=None, detail="the job's container was gone when the node answered again")
                return
            if self._state[node.name].generation != generation and result.rc != 0:
                continue  # the old connection was closed under the command: wait again on the new one
            self._put("exit", node, rc=nodeops.exit_code_of_wait(result))
            return

    def _output(self, node: Node) -> None:
        argv = nodeops.logs_argv(self.container, since=self.output_since)
        reported = False

        def take(line: str) -> None:
            nonlocal reported
            self.on_line(node, line)
            rc = worker_failure(line)
            if rc is not None and not reported:
                reported = True
                self._put("worker-failed", node, rc=rc, detail=line.strip())

        while not self.stopped.is_set():
            t, generation = self._current(node)
            try:
                t.stream(argv, take, stop=self.stopped)
                return
            except Exception as exc:  # noqa: BLE001 - resumed after a reconnection, without the old lines
                if not self._broke(node, generation, exc):
                    return
                argv = nodeops.logs_argv(self.container, tail=0)

    def _tail(self, node: Node) -> None:
        ranks = self.ranks[node.name]
        last = self.tail_last
        while not self.stopped.is_set():
            t, generation = self._current(node)
            split = RankLines(ranks)

            def take(line: str) -> None:  # used within this iteration only
                found = split.feed(line)  # noqa: B023
                if found is not None:
                    point = parse_step_line(found[1])
                    if point is not None:
                        self._put("step", node, rank=found[0], point=point)

            try:
                t.stream(tail_argv(self.log_dir, ranks, last), take, stop=self.stopped)
                return
            except Exception as exc:  # noqa: BLE001 - resumed after a reconnection from the logs' ends
                if not self._broke(node, generation, exc):
                    return
                last = 0

    def _probe(self, node: Node) -> None:
        state = self._state[node.name]
        while not self.stopped.wait(self.probe_s if not state.lost else min(self.probe_s, 2.0)):
            t, generation = self._current(node)
            if not state.lost:
                if _answers(t):
                    continue
                with state.changed:
                    if state.generation == generation and not state.lost:
                        state.lost = True
                        self._put("lost", node, detail=f"no answer within {PROBE_TIMEOUT_S:g} s")
            try:
                self.cluster.reconnect(node)
            except Exception:  # noqa: BLE001,S112 - still unreachable: tried again at the next probe
                continue
            with state.changed:
                state.generation += 1
                state.lost = False
                state.changed.notify_all()
            self._put("back", node)


def _answers(t: Transport) -> bool:
    """Whether the node runs `true` within PROBE_TIMEOUT_S. A link that is down does not fail a command, it
    leaves it hanging: the probe runs in a thread of its own and is given up on (the reconnection closes
    the old connection, which ends it)."""
    answer: list[bool] = []

    def probe() -> None:
        try:
            answer.append(t.run(["true"], timeout=PROBE_TIMEOUT_S).rc == 0)
        except Exception:  # noqa: BLE001 - a broken connection is a no
            answer.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(PROBE_TIMEOUT_S)
    return bool(answer and answer[0])
