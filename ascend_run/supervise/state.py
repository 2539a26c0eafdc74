"""A supervised job's directory on the launching machine: what any later shell reads.

    $ASCEND_RUN_STATE_DIR, else $XDG_STATE_HOME/ascend-run, else ~/.local/state/ascend-run
      <job name>-<8 hex of the deployment file's absolute path>/
        state.json      the supervisor's view: pid, state, attempt k of N, servers in use, progress
        events.jsonl    what it did and why, one JSON object per line (time, kind, detail, fields)
        output.jsonl    the job's output lines (node, rank, line), for `launch` attached and `logs --follow`
        supervisor.log  the supervisor's own stdout/stderr
        lock            held (flock) by the supervisor for its whole life: never two owners of one job

Only the lock holder writes state.json (atomically, temp file + rename); lines are appended whole, so a
reader never sees half a record, and a reader skips a last line that has no newline yet.

events.jsonl and output.jsonl are bounded for jobs that run for weeks: past ROTATE_BYTES a file becomes
`<name>.1` (the one before is dropped) and a new one starts, so a job keeps at most twice ROTATE_BYTES of each
(`logs --follow` notices the new file by its inode and reads it from its start).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ascend_run.errors import AscendRunError

STATE_DIR_ENV = "ASCEND_RUN_STATE_DIR"
ACTIVE = ("starting", "running", "restarting")
TERMINAL = ("failed", "succeeded", "stopped")
TERMINAL_EVENTS = TERMINAL  # the last event of a run has the kind of its final state
ROTATE_BYTES = {"events.jsonl": 16 << 20, "output.jsonl": 64 << 20}


class SupervisorBusy(AscendRunError):
    """Another supervisor owns this job."""


def state_root() -> Path:
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return Path(base) / "ascend-run"


def job_dir(deployment_path: str | Path, name: str) -> Path:
    """One directory per (job name, deployment file): two files naming the same job do not share state."""
    digest = hashlib.sha256(str(Path(deployment_path).resolve()).encode()).hexdigest()[:8]
    return state_root() / f"{name}-{digest}"


@dataclass
class JobState:
    """state.json. `nodes`: the servers in use in rank order ({name, address, rank, spare}); `spares`: the
    standby servers still free; `progress`: the per-stage summary (`decide.summarize_progress`)."""

    job: str
    deployment: str
    state: str = "starting"
    pid: int | None = None
    attempt: int = 1
    attempts: int = 1
    nodes: list[dict] = field(default_factory=list)
    spares: list[str] = field(default_factory=list)
    last_checkpoint_step: int | None = None
    rank_table: str | None = None   # a rebuilt rank table in use (server path), after a spare took a place
    progress: dict = field(default_factory=dict)
    started_at: float | None = None
    attempt_started_at: float | None = None
    updated_at: float | None = None
    error: dict | None = None

    @classmethod
    def from_json(cls, data: dict) -> JobState:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    @property
    def active(self) -> bool:
        return self.state in ACTIVE


class StateStore:
    """The files of one job's directory."""

    def __init__(self, directory: str | Path) -> None:
        self.dir = Path(directory)
        self.state_file = self.dir / "state.json"
        self.events_file = self.dir / "events.jsonl"
        self.output_file = self.dir / "output.jsonl"
        self.log_file = self.dir / "supervisor.log"
        self.lock_file = self.dir / "lock"
        self._write_lock = threading.Lock()
        self._lock_fd: int | None = None
        self.echo = None  # called with every event written (the supervisor's own log)

    @classmethod
    def for_deployment(cls, dep) -> StateStore:
        return cls(job_dir(dep.path, dep.name))

    # --- state.json ---------------------------------------------------------------------------------

    def read(self) -> JobState | None:
        try:
            return JobState.from_json(json.loads(self.state_file.read_text()))
        except (OSError, ValueError, TypeError):
            return None

    def write(self, state: JobState) -> None:
        state.updated_at = time.time()
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._write_lock:
            tmp = self.state_file.with_name(f".state.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(asdict(state), indent=2))
            os.replace(tmp, self.state_file)

    # --- events and output lines ----------------------------------------------------------------------

    def event(self, kind: str, detail: str = "", /, **extra) -> dict:
        now = time.time()
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}",
                  "t": round(now, 3), "kind": kind, "detail": detail, **extra}
        self._append(self.events_file, record)
        if self.echo is not None:
            self.echo(record)
        return record

    def last_line_time(self) -> float | None:
        """When the newest recorded output line arrived (a takeover reads the job's output from there on)."""
        tail = ""
        for path in (self.output_file, rotated(self.output_file)):  # just rotated: the newest is in .1
            try:
                with path.open("rb") as fh:
                    size = fh.seek(0, os.SEEK_END)
                    fh.seek(max(0, size - 65536))
                    tail = fh.read().decode(errors="replace")
            except FileNotFoundError:
                continue
            if tail.strip():
                break
        for line in reversed(tail.splitlines()):
            if line.endswith("}"):
                try:
                    return float(json.loads(line)["t"])
                except (ValueError, KeyError, TypeError):
                    continue
        return None

    def line(self, node: str, rank: int, text: str) -> None:
        self._append(self.output_file, {"t": round(time.time(), 3), "node": node, "rank": rank, "line": text})

    def _append(self, path: Path, record: dict) -> None:
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode()
        self.dir.mkdir(parents=True, exist_ok=True)
        with self._write_lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            try:
                os.write(fd, data)  # one write of a whole line with O_APPEND: readers never see half of it
                size = os.fstat(fd).st_size
            finally:
                os.close(fd)
            rotate_if_full(path, size)

    def events(self) -> list[dict]:
        return read_records(self.events_file, 0)[0]

    def new_run(self) -> None:
        """A new launch: the previous run's events and output are kept once, as .prev."""
        self.dir.mkdir(parents=True, exist_ok=True)
        for path in (self.events_file, self.output_file):
            if path.exists():
                os.replace(path, path.with_suffix(path.suffix + ".prev"))

    # --- the lock -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Held for the supervisor's life; SupervisorBusy when another process holds it."""
        self.dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.lock_file, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            state = self.read()
            pid = state.pid if state else None
            raise SupervisorBusy(f"the job {self.dir.name} is already supervised (pid {pid or '?'}, {self.dir})",
                                 fix="follow it with `ascend-run logs --follow -f FILE`, or stop it with "
                                     "`ascend-run stop -f FILE`") from None
        os.set_inheritable(fd, False)
        self._lock_fd = fd
        try:
            yield
        finally:
            self._lock_fd = None
            os.close(fd)  # closing releases the lock

    def owner_alive(self) -> bool:
        """Whether a supervisor holds the lock right now (a dead one's lock is released by the kernel)."""
        if self._lock_fd is not None:
            return True
        if not self.lock_file.exists():
            return False
        fd = os.open(self.lock_file, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also releases it if we got it
        return False

    def owner_pid(self) -> int | None:
        """The pid of the live supervisor, or None."""
        if not self.owner_alive():
            return None
        state = self.read()
        return state.pid if state else None


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def rotate_if_full(path: Path, size: int) -> bool:
    """(the writer's lock held) `path` past its ROTATE_BYTES becomes `path.1`, replacing the older one; the
    next line starts a new file. True when it rotated."""
    limit = ROTATE_BYTES.get(path.name)
    if limit is None or size < limit:
        return False
    os.replace(path, rotated(path))
    return True


def servers_in_use(dep, state: JobState | None):
    """The deployment on the servers the supervisor last used (spares in failed servers' places, with their
    ranks), or as the file lists them when there is no state or the file has changed since."""
    from dataclasses import replace

    if state is None or not state.nodes:
        return dep
    by_name = {n.name: n for n in (*dep.nodes, *dep.spares)}
    nodes = [replace(by_name[e["name"]], rank=e["rank"]) for e in state.nodes if e.get("name") in by_name]
    return dep.with_nodes(nodes) if len(nodes) == len(dep.nodes) else dep


def read_records(path: Path, offset: int) -> tuple[list[dict], int]:
    """The whole JSON lines of `path` from byte `offset` on, and the offset after the last whole line."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    end = data.rfind(b"\n")
    if end < 0:
        return [], offset
    records = []
    for raw in data[:end].split(b"\n"):
        try:
            records.append(json.loads(raw))
        except ValueError:
            continue  # not ours: skip rather than stop following
    return records, offset + end + 1
