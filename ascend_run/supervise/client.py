"""What the command line does with a supervisor: start one that outlives it, follow it, stop it, ask it.

`spawn` starts `python -m ascend_run supervise -f FILE …` in a session of its own (setsid: no controlling
terminal, so closing the terminal or the SSH session does not reach it), stdin from /dev/null, output to
the job's supervisor.log. `follow` reads the job's events and output lines as they are appended, handing
each to the caller, until the run ends (or an event the caller waits for: `started` for `--detach`).
Nothing here prints: the CLI does.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ascend_run.errors import AscendRunError
from ascend_run.inputs.deployment import Deployment
from ascend_run.supervise.state import (
    TERMINAL_EVENTS,
    StateStore,
    open_private,
    private_dir,
    read_records,
    rotated,
    servers_in_use,
)

POLL_S = 0.2
STOP_WAIT_S = 60.0


def spawn(dep: Deployment, args: Sequence[str], store: StateStore) -> subprocess.Popen:
    """The supervisor for `dep`, detached from this process's terminal and session."""
    private_dir(store.dir)
    if Path(dep.path).is_file():
        from ascend_run.supervise.joblist import save_snapshot

        save_snapshot(store, dep)  # `--job NAME` finds the job after its file moved
    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH", "")) if p)
    argv = [sys.executable, "-m", "ascend_run", "supervise", "-f", str(Path(dep.path).resolve()), *args]
    with os.fdopen(open_private(store.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT), "ab") as log:
        log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {' '.join(argv)}\n".encode())
        log.flush()
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True, cwd="/", env=env, close_fds=True)


@dataclass
class Follower:
    """Reads a job's events and output lines from their files as they grow (a new file is read from 0)."""

    store: StateStore
    on_event: Callable[[dict], None] = lambda record: None
    on_line: Callable[[dict], None] = lambda record: None
    lines: bool = True
    _offsets: dict[Path, tuple[int, int]] = field(default_factory=dict)

    def skip_to_end(self, path: Path) -> None:
        try:
            stat = path.stat()
            self._offsets[path] = (stat.st_ino, stat.st_size)
        except FileNotFoundError:
            pass

    def _read(self, path: Path) -> list[dict]:
        try:
            inode = path.stat().st_ino
        except FileNotFoundError:
            inode = None  # not written yet, or just rotated
        known, offset = self._offsets.get(path, (inode, 0))
        before: list[dict] = []
        if known is not None and known != inode:
            old = rotated(path)
            if old.exists() and old.stat().st_ino == known:  # rotated (a bounded file): the rest of it first
                before, at = read_records(old, offset)
                if inode is None:
                    self._offsets[path] = (known, at)
                    return before
            offset = 0  # the file was replaced (rotated, or a new run): read the new one from its start
        if inode is None:
            return before
        records, offset = read_records(path, offset)
        self._offsets[path] = (inode, offset)
        return before + records

    def poll(self, until: Sequence[str] = ()) -> dict | None:
        """Hand over what is new; the first event whose kind ends the run or is in `until`, else None."""
        if self.lines:
            for record in self._read(self.store.output_file):
                self.on_line(record)
        for record in self._read(self.store.events_file):
            self.on_event(record)
            if record.get("kind") in TERMINAL_EVENTS or record.get("kind") in until:
                if self.lines:  # the lines written before the event
                    for line in self._read(self.store.output_file):
                        self.on_line(line)
                return record
        return None

    def run(self, alive: Callable[[], bool], until: Sequence[str] = (), poll_s: float = POLL_S) -> dict | None:
        """Until an ending event (returned), or the supervisor is gone without one (None)."""
        while True:
            found = self.poll(until)
            if found is not None:
                return found
            if not alive():
                return self.poll(until)  # what it wrote just before it went
            time.sleep(poll_s)


def ending_error(record: dict | None, store: StateStore) -> AscendRunError | None:
    """The error a CLI raises for how a run ended: None when it succeeded (or a stop was asked for)."""
    if record is None:
        tail = ""
        try:
            tail = store.log_file.read_text(errors="replace")[-1500:]
        except OSError:
            pass
        return AscendRunError(f"the supervisor ended without saying why; its log ({store.log_file}) ends with:\n{tail}",
                              fix="see the log; the job's containers may still run: ascend-run status -f FILE")
    if record.get("kind") != "failed":
        return None
    error = AscendRunError(record.get("detail") or "the job failed", fix=record.get("fix"))
    error.exit_code = int(record.get("exit_code") or 1)
    return error


def request_stop(store: StateStore, wait_s: float = STOP_WAIT_S) -> int | None:
    """SIGTERM the live supervisor (it stops the job on every server, then exits); SIGKILL it if it has not
    ended after `wait_s`. The pid signalled, or None when no supervisor is alive."""
    pid = store.owner_pid()
    if pid is None:
        return None
    _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + wait_s
    while store.owner_alive() and time.monotonic() < deadline:
        time.sleep(POLL_S)
    if store.owner_alive():
        _signal(pid, signal.SIGKILL)
        while store.owner_alive() and time.monotonic() < deadline + 5:
            time.sleep(POLL_S)
    return pid


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def stop_everywhere(dep: Deployment, accept_new: bool = False, parallel: int = 256) -> tuple[list[str], dict[str, str]]:
    """`stop` from any shell: the supervisor first (so it starts nothing more), then the job's containers on
    every server it may be on (the servers in use, the file's nodes and spares), directly, so that a stop
    works without a live supervisor too. (servers stopped, {server in use: problem}); a spare that is not in
    use and does not answer is not a problem."""
    from ascend_run.launch.launcher import stop_job
    from ascend_run.transport.cluster import Cluster
    from ascend_run.transport.fanout import close_all, connect_each

    store = StateStore.for_deployment(dep)
    request_stop(store)
    state = store.read()
    in_use = servers_in_use(dep, state)
    servers = list({n.name: n for n in (*in_use.nodes, *dep.nodes, *dep.spares)}.values())
    results = connect_each(dep, accept_new=accept_new, parallelism=parallel, nodes=servers)
    transports = {name: t for name, t in results.items() if not isinstance(t, BaseException)}
    needed = {n.name for n in (*in_use.nodes, *dep.nodes)}
    problems = {name: str(err) for name, err in results.items() if isinstance(err, BaseException) and name in needed}
    cluster = Cluster(dep.with_nodes([n for n in servers if n.name in transports]), transports, parallel)
    try:
        problems.update(stop_job(cluster))
    finally:
        close_all(transports)
    if state is not None and state.active and not store.owner_alive():
        with store.owned():  # the supervisor is gone (stopped now, or dead before): the record says so
            state.state, state.pid = "stopped", None
            store.write(state)
            store.event("stopped", f"job {dep.name} stopped by `ascend-run stop`")
    return sorted(transports), problems


def job_status(dep: Deployment, accept_new: bool = False, parallel: int = 256,
               select: Callable[[Deployment], list] | None = None) -> dict:
    """The supervisor's view (state, attempt k of N, servers and spares, progress) and each server's own row;
    `select` picks the servers to ask among those in use (`status -w/-x`), default all."""
    from ascend_run.launch.status import collect_status
    from ascend_run.transport.cluster import Cluster
    from ascend_run.transport.fanout import close_all, connect_each

    store = StateStore.for_deployment(dep)
    state = store.read()
    in_use = servers_in_use(dep, state)
    asked = list(in_use.nodes) if select is None else select(in_use)
    results = connect_each(dep, accept_new=accept_new, parallelism=parallel, nodes=asked)
    transports = {name: t for name, t in results.items() if not isinstance(t, BaseException)}
    try:
        found = {row["node"]: row for row in collect_status(Cluster(in_use, transports, parallel))}
    finally:
        close_all(transports)
    rows = [found.get(n.name) or {"node": n.name, "rank": n.rank, "state": "unreachable",
                                  "status": str(results[n.name]), "last_line": None, "last_loss": None, "steps": []}
            for n in asked]
    return {"job": dep.name, "supervisor": supervisor_view(state, store) if state else None, "nodes": rows}


def supervisor_view(state, store: StateStore, now: float | None = None) -> dict:
    now = time.time() if now is None else now
    progress = state.progress or {}
    last = progress.get("last_progress_at")
    alive = store.owner_alive()
    return {
        "state": state.state if alive or not state.active else f"{state.state} (supervisor not running)",
        "supervisor_pid": state.pid if alive else None,
        "attempt": state.attempt, "attempts": state.attempts,
        "servers": [f"{n['name']}" + (" (spare)" if n.get("spare") else "") for n in state.nodes],
        "spares_free": state.spares,
        "stages": progress.get("stages", []),
        "step_ms": progress.get("step_ms"),
        "seconds_since_progress": round(now - last, 1) if last else None,
        "last_checkpoint_step": state.last_checkpoint_step,
        "error": state.error,
        "state_dir": str(store.dir),
    }


def follow_output(dep: Deployment, on_line: Callable[[dict], None], on_event: Callable[[dict], None],
                  tail: int | None = None, accept_new: bool = False) -> dict | None:
    """`logs --follow`: the job's output from the supervisor's record (the last `tail` lines first, else all of
    this run), then as it comes, until the run ends; the ending event (None: the supervisor died without one,
    or the job was never supervised and its containers were followed directly over SSH)."""
    store = StateStore.for_deployment(dep)
    state = store.read()
    if state is None or (state.active and not store.owner_alive()):
        follow_containers(servers_in_use(dep, state), on_line, accept_new)  # running, but nobody supervises it
        return None
    follower = Follower(store, on_event=on_event, on_line=on_line)
    if tail is not None and store.output_file.exists():  # no output yet (just launched): from its first line
        records, offset = read_records(store.output_file, 0)
        for record in records[len(records) - tail:] if tail else []:
            on_line(record)
        follower._offsets[store.output_file] = (store.output_file.stat().st_ino, offset)
    return follower.run(alive=store.owner_alive)


def follow_containers(dep: Deployment, on_line: Callable[[dict], None], accept_new: bool = False) -> None:
    """A job nobody supervises (started by an older kit): its containers' output over SSH until they end."""
    from ascend_run.launch.watch import JobWatch
    from ascend_run.transport.cluster import connect

    with connect(dep, accept_new=accept_new) as cluster:
        watch = JobWatch(cluster, dep.container_name,
                         on_line=lambda node, line: on_line({"node": node.name, "rank": node.rank, "line": line}))
        watch.start()
        pending = {n.name for n in dep.nodes}
        try:
            while pending:
                event = watch.get(0.5)
                if event is not None and event.kind in ("exit", "lost"):
                    pending.discard(event.node)
        finally:
            watch.close()
