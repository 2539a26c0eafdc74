"""Watch a running job on every server at once, as a stream of events.

One channel per server: the kit starts a small watcher there (`watch_agent.py`, run by the server's python3
from the command line, nothing installed) that follows the container's output, waits for its exit and reads
every rank's worker log itself, and sends back only what the kit acts on: the container's own output lines
(msrun's, handed to `on_line`), each rank's newest step line (the progress that tells a
hang from a slow step; its first at once, then every STEP_EVERY_S, dated by when the server read it; the
ranks' INFO chatter stays on the server), the exit code, and a heartbeat every
`probe_s` seconds. The heartbeat is the probe: no command is run to ask a server whether it answers, and a
server whose link went down (no refusal, no reset: nothing arrives) is reported `lost` once it has been
silent for `silent_s`, with `at` the time of its last answer, so that a caller's timeout counts from there.
A lost server is reconnected in the background and reported `back` when a new connection is made, its
watcher started again on it. The caller decides what a lost server means (the launcher: a failure at once;
the supervisor: a failure `job.unreachable_timeout` after the last answer).

Per server, on the launching machine: one thread (it reads the watcher's channel; paramiko adds its own per
connection) and one SSH channel; a reconnection thread only while the server is lost. One monitor thread
for all servers looks at the heartbeats.
"""

from __future__ import annotations

import functools
import json
import queue
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from ascend_run.errors import TransportError, reason_of
from ascend_run.inputs.deployment import Node
from ascend_run.launch import nodeops
from ascend_run.launch.losslog import _START, LossPoint, parse_step_line
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster
from ascend_run.transport.fanout import close_all, connect_each

AGENT = Path(__file__).with_name("watch_agent.py")
AGENT_MARK = "ascend-run job watcher"   # the program's first line: how a fake server recognises it
SILENT_BEATS = 3          # heartbeats missed before a server is lost …
MIN_SILENT_S = 2.0        # … and never sooner than this (a busy launching machine reads late)
RECONNECT_PAUSE_S = 1.0   # between reconnection attempts to a lost server
# A rank's newest step line is sent at most this often (its first at once): parsing one costs ~0.1 ms here, so
# 1,024 ranks at one a second would take 10% of a core; dated by when it was read, a hang is still timed from
# the rank's real last step. (The supervisor sends them more often for a short hang_timeout: a hang is
# decided on what arrived, so the lines must come well within it.)
STEP_EVERY_S = 5.0


@dataclass(frozen=True)
class WatchEvent:
    """exit (rc; None: unknown), worker-failed (rc: the worker's, detail: msrun's line), lost (detail; `at`
    is the last answer), back, step (rank, point). `at` is time.time()."""

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


# --- tail -F output: which rank a line belongs to (pure; what `logs` and the test servers read) ------------

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


# --- the watcher on the server (its command line, pure) ----------------------------------------------------

def agent_config(container: str, log_dir: str | None, ranks: Sequence[int], beat_s: float,
                 since: float | None = None, tail: int | None = None, step_every_s: float = STEP_EVERY_S,
                 quiet: bool = False) -> dict:
    """What the watcher is told: the container, the worker logs to read, the heartbeat, how often a rank's
    newest step line is sent, the output wanted."""
    logs = nodeops.logs_argv(container, since=since, tail=tail)[3:-1]  # the options between --follow and the name
    return {"container": container, "log_dir": log_dir if ranks else None, "ranks": list(ranks),
            "logs": logs, "beat": beat_s, "step_every": step_every_s, "step": _START.pattern, "quiet": quiet}


def agent_argv(config: dict) -> list[str]:
    """`python3 -I -S -c PROGRAM CONFIG`: isolated from the server's environment and site packages; the
    program without its comment lines but the first (what `ps` shows on the server)."""
    return ["python3", "-I", "-S", "-c", _agent_program(), json.dumps(config, separators=(",", ":"))]


@functools.cache
def _agent_program() -> str:
    lines = AGENT.read_text().splitlines()
    return "\n".join([lines[0], *(line for line in lines[1:] if not line.lstrip().startswith("#"))]) + "\n"


# --- the watch ------------------------------------------------------------------------------------------------

class _NodeState:
    def __init__(self) -> None:
        self.generation = 0       # bumped at every reconnection; a watcher on an older one starts again
        self.lost = False
        self.done = False         # the watcher reported the exit: nothing more to hear from this server
        self.heard = time.time()  # the last answer (any record from the watcher)
        self.reconnecting = False
        self.changed = threading.Condition()


class JobWatch:
    """Everything a running job does, as `WatchEvent`s from `get()`; output lines go to `on_line` directly.

    `probe_s`: the heartbeat; with it, a silent or broken server is reconnected, without it a broken one is
    lost for good (and a silent one is not noticed)."""

    def __init__(self, cluster: Cluster, container: str, *, on_line: Callable[[Node, str], None] = lambda n, s: None,
                 ranks: Mapping[str, Sequence[int]] | None = None, log_dir: str | None = None,
                 probe_s: float | None = None, tail_last: int | None = None,
                 output_since: float | None = None, step_every_s: float = STEP_EVERY_S, quiet: bool = False) -> None:
        self.cluster = cluster
        self.step_every_s = step_every_s
        self.quiet = quiet  # the container's output without MindSpore's log lines and with one line per step
        self.container = container
        self.on_line = on_line
        self.ranks = dict(ranks or {})
        self.log_dir = log_dir
        self.probe_s = probe_s
        self.beat_s = probe_s or 5.0
        self.silent_s = max(SILENT_BEATS * self.beat_s, MIN_SILENT_S)
        self.tail_last = tail_last  # unused: the watcher always reads a log from its last 64 KiB
        self.output_since = output_since  # a takeover: the output lines already recorded are not read again
        self.events: queue.Queue[WatchEvent] = queue.Queue()
        self.stopped = threading.Event()
        self.nodes = list(cluster.nodes)
        self._state = {n.name: _NodeState() for n in self.nodes}
        self._install = threading.Lock()

    def start(self) -> JobWatch:
        for node in self.nodes:
            threading.Thread(target=self._follow, args=(node,), daemon=True, name=f"watch-{node.name}").start()
        if self.probe_s:
            threading.Thread(target=self._monitor, daemon=True, name="watch-heartbeats").start()
        return self

    def get(self, timeout: float) -> WatchEvent | None:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            return None

    def close(self) -> None:
        """Stop watching (the job itself is left as it is); the watchers end within a second."""
        self.stopped.set()
        for state in self._state.values():
            with state.changed:
                state.changed.notify_all()

    def _put(self, kind: str, node: Node, at: float | None = None, **fields) -> None:
        if not self.stopped.is_set():
            self.events.put(WatchEvent(kind, node.name, time.time() if at is None else at, **fields))

    # --- one server's watcher --------------------------------------------------------------------------------

    def _current(self, node: Node) -> tuple[Transport, int]:
        state = self._state[node.name]
        with state.changed:
            return self.cluster.transport(node), state.generation

    def _follow(self, node: Node) -> None:
        """Run the watcher on the server, and again on every new connection, until the job's exit there."""
        since, tail = self.output_since, None
        while not self.stopped.is_set():
            t, generation = self._current(node)
            records = _Records(self, node)
            config = agent_config(self.container, self.log_dir, self.ranks.get(node.name, ()), self.beat_s,
                                  since=since, tail=tail, step_every_s=self.step_every_s, quiet=self.quiet)
            try:
                rc = t.stream(agent_argv(config), records.take, stop=self.stopped)
                if records.exited or self.stopped.is_set():
                    return
                if self._state[node.name].generation == generation and not records.heard:
                    self._put("exit", node, rc=None, detail=f"cannot watch the job there: the watcher (python3 on "
                              f"the server) ended with code {rc}: {records.other[-1] if records.other else ''}")
                    return
                raise TransportError(f"the watcher ended with code {rc}", host=node.name)
            except Exception as exc:  # noqa: BLE001 - a broken connection: reported as lost, maybe resumed
                if not self._broke(node, generation, exc):
                    return
                since, tail = None, 0  # resumed after a reconnection, without the old lines

    def _heard(self, node: Node) -> None:
        self._state[node.name].heard = time.time()

    def _broke(self, node: Node, generation: int, exc: BaseException) -> bool:
        """The watcher's channel broke on `generation`'s connection. True when it should start again (a newer
        connection exists, or one will be made); False when it should give up (no reconnection, or stopped)."""
        state = self._state[node.name]
        with state.changed:
            if state.generation != generation:
                return not self.stopped.is_set()
            self._lose(node, state, reason_of(exc))
            if not self.probe_s:
                return False  # nobody reconnects: the caller treats the server as lost
            while state.generation == generation and not self.stopped.is_set():
                state.changed.wait(1.0)
        return not self.stopped.is_set()

    def _lose(self, node: Node, state: _NodeState, detail: str) -> None:
        """(state.changed held) Report the server lost, as of its last answer, and start reconnecting."""
        if not state.lost:
            state.lost = True
            self._put("lost", node, at=state.heard, detail=detail)
        if self.probe_s and not state.reconnecting:
            state.reconnecting = True
            threading.Thread(target=self._reconnect, args=(node,), daemon=True,
                             name=f"reconnect-{node.name}").start()

    # --- heartbeats and reconnection ---------------------------------------------------------------------------

    def _monitor(self) -> None:
        """One thread for every server: a server silent for `silent_s` is lost."""
        tick = min(0.25, self.beat_s / 2)
        while not self.stopped.wait(tick):
            now = time.time()
            for node in self.nodes:
                state = self._state[node.name]
                if state.lost or state.done or now - state.heard < self.silent_s:
                    continue
                with state.changed:
                    if not state.lost and not state.done:
                        self._lose(node, state, f"no answer for {now - state.heard:.1f} s")

    def _reconnect(self, node: Node) -> None:
        """A new connection, tried until one is made: it replaces the old one (whose watcher then breaks and
        starts again on the new one), and the server is back."""
        state = self._state[node.name]
        while not self.stopped.is_set():
            fresh = connect_each(self.cluster.dep, accept_new=self.cluster.accept_new, nodes=[node],
                                 factory=self.cluster.factory)[node.name]
            if isinstance(fresh, BaseException):
                self.stopped.wait(RECONNECT_PAUSE_S)
                continue
            with self._install:
                if self.stopped.is_set():  # the caller has moved on (a stop, a spare): leave its connections be
                    close_all([fresh])
                    return
                old = self.cluster.transports.get(node.name)
                self.cluster.transports[node.name] = fresh
            if old is not None and old is not fresh:
                close_all([old])
            with state.changed:
                state.generation += 1
                state.lost = state.reconnecting = False
                state.heard = time.time()
                state.changed.notify_all()
            self._put("back", node)
            return


class _Records:
    """The watcher's records from one server, turned into events as they arrive."""

    def __init__(self, watch: JobWatch, node: Node) -> None:
        self.watch, self.node = watch, node
        self.exited = False
        self.heard = False
        self.reported = False   # msrun's dead worker: reported once
        self.other: list[str] = []

    def take(self, line: str) -> None:
        if not line.startswith("@") or len(line) < 2:
            if line.strip():
                self.other = [*self.other[-4:], line.strip()]  # the python3 on the server complaining, say
            return
        kind, text = line[1], line[3:]
        self.heard = True
        self.watch._heard(self.node)
        if kind == "O":
            self.watch.on_line(self.node, text)
            rc = worker_failure(text)
            if rc is not None and not self.reported:
                self.reported = True
                self.watch._put("worker-failed", self.node, rc=rc, detail=text.strip())
        elif kind == "S":
            rank, age, step_line = (text.split(" ", 2) + ["", ""])[:3]
            point = parse_step_line(step_line)
            if point is not None and rank.isdigit():
                try:
                    at = time.time() - max(0.0, float(age))  # read on the server `age` s ago
                except ValueError:
                    at = None
                self.watch._put("step", self.node, at=at, rank=int(rank), point=point)
        elif kind == "X":
            self.exited = True
            state = self.watch._state[self.node.name]
            state.done = True
            rc = int(text) if text.lstrip("-").isdigit() else -1
            if rc == -1 and state.generation > 0:
                self.watch._put("exit", self.node, rc=None,
                                detail="the job's container was gone when the node answered again")
            else:
                self.watch._put("exit", self.node, rc=rc)
        elif kind == "E":
            self.other = [*self.other[-4:], text]
