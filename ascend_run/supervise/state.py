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

The directory is 0700 and its files 0600 (the job's output is nobody else's to read), every file is opened
through `open_private` (O_NOFOLLOW: a link planted in the directory is refused, not followed), and a held
lock is believed only when its holder is this user's `ascend-run supervise` for this job (`holder_pid`):
another process holding the lock file is never signalled.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import os
import shlex
import stat
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from ascend_run import secrets
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


PRIVATE_DIR, PRIVATE_FILE = 0o700, 0o600
TEAM_DIR, TEAM_FILE = 0o750, 0o640  # a team's shared state folder: the group reads, nobody else


def state_modes() -> tuple[int, int]:
    """(folder, file) modes of the state: private (0700/0600), unless the state root is a team's folder,
    one a person made group-writable with the setgid bit (`install -d -m 2770 -g TEAM DIR`, docs/supervisor.md):
    then the group may read (0750/0640), so `jobs` and `status --job` work for teammates; never anyone else."""
    try:
        info = os.stat(state_root())
    except OSError:
        return PRIVATE_DIR, PRIVATE_FILE
    shared = info.st_mode & stat.S_ISGID and info.st_mode & stat.S_IWGRP and not info.st_mode & 0o007
    return (TEAM_DIR, TEAM_FILE) if shared else (PRIVATE_DIR, PRIVATE_FILE)


def open_private(path: Path, flags: int) -> int:
    """A file of a job's directory opened without following a link (O_NOFOLLOW), created 0600 (0640 in a
    team's folder); a file someone else owns there is refused. The one place the state files are opened or
    created."""
    file_mode = state_modes()[1]
    try:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, file_mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise AscendRunError(f"{path} is a symbolic link; the kit never follows links in its state directory",
                                 fix=f"remove it (rm {shlex.quote(str(path))}) and check who planted it") from None
        raise
    info = os.fstat(fd)
    if info.st_uid != os.getuid() or not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise AscendRunError(f"{path} is not a file of yours (owner uid {info.st_uid}); the kit refuses it",
                             fix=f"remove it (rm {shlex.quote(str(path))}) and check who planted it")
    if info.st_mode & 0o777 & ~file_mode:
        os.fchmod(fd, file_mode)  # written by an older version, 0644
    return fd


def private_dir(path: Path) -> Path:
    """`path` created 0700 (0750 in a team's folder; its parents as the umask says), or tightened to that; a
    link or a directory of another user is refused."""
    dir_mode = state_modes()[0]
    path.mkdir(mode=dir_mode, parents=True, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():
        raise AscendRunError(f"{path} is not a directory of yours; the kit keeps a job's state only there",
                             fix=f"remove it, or set {STATE_DIR_ENV} to a directory of yours")
    if info.st_mode & 0o777 & ~dir_mode:
        os.chmod(path, dir_mode)
    return path


def holder_pid(lock_file: Path) -> int | None:
    """The pid holding an flock on `lock_file`, from /proc/locks (None: no holder found, or no /proc)."""
    try:
        inode = os.stat(lock_file).st_ino
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            for line in fh:
                fields_ = line.split()
                if len(fields_) > 5 and fields_[1] == "FLOCK" and fields_[5].rsplit(":", 1)[-1] == str(inode):
                    return int(fields_[4])
    except (OSError, ValueError):
        pass
    return None


def is_supervisor(pid: int, directory: Path) -> bool:
    """Whether `pid` is this user's `ascend-run supervise` for the job kept in `directory`: its real uid is
    ours and its command line is `… ascend_run supervise -f FILE` with FILE's digest in the directory's
    name (`job_dir`), or this very process (a supervisor run in-process). Anything else holding the lock is
    not believed, and never signalled."""
    if pid == os.getpid():
        return True
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as fh:
            uid = next((int(line.split()[1]) for line in fh if line.startswith("Uid:")), None)
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            argv = [os.fsdecode(arg) for arg in fh.read().split(b"\0")]
    except (OSError, ValueError):
        return False
    if uid != os.getuid() or "supervise" not in argv:
        return False
    path = _file_argument(argv) or _environ(pid).get(STATE_FILE_ENV)
    if not path:
        return False
    try:
        path = os.path.join(os.readlink(f"/proc/{pid}/cwd"), path)  # relative to where it runs (absolute: kept)
    except OSError:
        return False
    digest = hashlib.sha256(str(Path(path).resolve()).encode()).hexdigest()[:8]
    return directory.name.endswith("-" + digest)


STATE_FILE_ENV = "ASCEND_RUN_FILE"


def _file_argument(argv: list[str]) -> str | None:
    """The deployment file a command line names: -f X, -fX, --file X, --file=X (the last one wins)."""
    found = None
    for index, arg in enumerate(argv):
        if arg in ("-f", "--file") and index + 1 < len(argv):
            found = argv[index + 1]
        elif arg.startswith("--file="):
            found = arg[len("--file="):]
        elif arg.startswith("-f") and len(arg) > 2 and not arg.startswith("--"):
            found = arg[2:]
    return found


def _environ(pid: int) -> dict[str, str]:
    try:
        with open(f"/proc/{pid}/environ", "rb") as fh:
            pairs = [item.partition(b"=") for item in fh.read().split(b"\0") if item]
    except OSError:
        return {}
    return {os.fsdecode(k): os.fsdecode(v) for k, _, v in pairs}


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
            with os.fdopen(open_private(self.state_file, os.O_RDONLY), "rb") as fh:
                return JobState.from_json(json.loads(fh.read()))
        except (OSError, ValueError, TypeError, AscendRunError):
            return None

    def write(self, state: JobState) -> None:
        state.updated_at = time.time()
        private_dir(self.dir)
        with self._write_lock:
            tmp = self.state_file.with_name(f".state.{os.getpid()}.{threading.get_ident()}.tmp")
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)  # a leftover (or a planted link): never written through
            with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL), "w") as fh:
                fh.write(json.dumps(asdict(state), indent=2))
            os.replace(tmp, self.state_file)

    # --- events and output lines ----------------------------------------------------------------------

    def event(self, kind: str, detail: str = "", /, **extra) -> dict:
        now = time.time()
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(now)) + f".{int(now % 1 * 1000):03d}",
                  "t": round(now, 3), "kind": kind, "detail": detail, **extra}
        record = secrets.redact_all(record)  # a secret value never lands in the events
        self._append(self.events_file, record)
        if self.echo is not None:
            self.echo(record)
        return record

    def last_line_time(self) -> float | None:
        """When the newest recorded output line arrived (a takeover reads the job's output from there on)."""
        tail = ""
        for path in (self.output_file, rotated(self.output_file)):  # just rotated: the newest is in .1
            try:
                with os.fdopen(open_private(path, os.O_RDONLY), "rb") as fh:
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
        private_dir(self.dir)
        with self._write_lock:
            fd = open_private(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT)
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
        private_dir(self.dir)
        for path in (self.events_file, self.output_file):
            if path.exists():
                os.replace(path, path.with_suffix(path.suffix + ".prev"))

    # --- the lock -------------------------------------------------------------------------------------

    @contextlib.contextmanager
    def owned(self) -> Iterator[None]:
        """Held for the supervisor's life; SupervisorBusy when another process holds it."""
        private_dir(self.dir)
        fd = open_private(self.lock_file, os.O_RDWR | os.O_CREAT)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            pid = self.owner_pid()
            if pid is None and holder_pid(self.lock_file) is not None:
                raise SupervisorBusy(f"the lock of the job {self.dir.name} is held by pid "
                                     f"{holder_pid(self.lock_file)}, which is not your supervisor of this job "
                                     f"({self.lock_file})", fix="find out what holds it (ls -l /proc/PID/exe); "
                                     "the kit signals no process it has not checked") from None
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
        """Whether a supervisor holds the lock right now (a dead one's lock is released by the kernel). A lock
        held by anything but this user's supervisor of this job (`is_supervisor`) is not believed."""
        if self._lock_fd is not None:
            return True
        try:
            fd = open_private(self.lock_file, os.O_RDONLY)
        except (OSError, AscendRunError):
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except BlockingIOError:
            pid = holder_pid(self.lock_file)
            return pid is None or is_supervisor(pid, self.dir)  # None: no /proc/locks to ask, so believe it
        finally:
            os.close(fd)  # also releases it if we got it
        return False

    def owner_pid(self) -> int | None:
        """The pid of the live supervisor, checked (`is_supervisor`) before anyone signals it; None otherwise."""
        if self._lock_fd is not None:
            return os.getpid()
        if not self.owner_alive():
            return None
        pid = holder_pid(self.lock_file)
        if pid is None:
            state = self.read()
            pid = state.pid if state else None
        return pid if pid is not None and is_supervisor(pid, self.dir) else None


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
        with os.fdopen(open_private(path, os.O_RDONLY), "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except (OSError, AscendRunError):
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
