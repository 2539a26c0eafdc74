"""The jobs this machine's supervisors own or owned: `ascend-run jobs`, and `--job NAME` on status/stop/events/logs.

Every read of the state folder for listing lives here (one small module), so a change to how the folder is
opened (permissions, links) touches one place. The folder is `state.state_root()`; each job has a directory
`<name>-<8 hex of the deployment file's path>` holding state.json, and `deployment.json`: the deployment as
launched (its path and its data, merged over `extends:`), so a job can still be named after its file moved.

A team on one login node shares one folder by setting ASCEND_RUN_STATE_DIR to it (docs/supervisor.md).
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from ascend_run.errors import ConfigError
from ascend_run.supervise.state import ACTIVE, JobState, StateStore, open_private, private_dir, state_root

SNAPSHOT = "deployment.json"


@dataclass
class JobEntry:
    """One job of the folder, as `jobs` shows it."""

    name: str
    key: str                 # its directory's name: unique where two files name the same job
    deployment: str          # the deployment file it was launched from (absolute)
    state: str
    attempt: int
    attempts: int
    step: int | None
    servers: list[str]
    started_at: float | None
    updated_at: float | None
    supervisor_pid: int | None
    dir: Path
    file_exists: bool = True
    error: str | None = None
    extra: dict = field(default_factory=dict)

    def age_s(self, now: float | None = None) -> float | None:
        return None if self.started_at is None else max(0.0, (now or time.time()) - self.started_at)

    def as_json(self, now: float | None = None) -> dict:
        age = self.age_s(now)
        return {"name": self.name, "key": self.key, "deployment": self.deployment, "file_exists": self.file_exists,
                "state": self.state, "attempt": self.attempt, "attempts": self.attempts, "step": self.step,
                "servers": self.servers, "age_s": None if age is None else round(age, 1),
                "started_at": self.started_at, "updated_at": self.updated_at,
                "supervisor_pid": self.supervisor_pid, "state_dir": str(self.dir), "error": self.error}


def supervisor_alive(directory: Path) -> bool:
    """Whether a supervisor holds the job's lock. Opened read-only: flock needs no write access, so a teammate
    who may read the shared folder sees the truth too."""
    try:
        fd = os.open(directory / "lock", os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        os.close(fd)
    return False


def _read_state(directory: Path) -> JobState | None:
    try:
        return JobState.from_json(json.loads((directory / "state.json").read_text()))
    except (OSError, ValueError, TypeError):
        return None


def _step(state: JobState) -> int | None:
    steps = [s.get("step") for s in (state.progress or {}).get("stages", []) if isinstance(s, dict)]
    steps = [s for s in steps if isinstance(s, int)]
    return max(steps) if steps else None


def entry_of(directory: Path) -> JobEntry | None:
    """The job of one directory of the folder (None: not a job's directory, or no state yet)."""
    state = _read_state(directory)
    if state is None:
        return None
    alive = supervisor_alive(directory)
    shown = state.state if alive or state.state not in ACTIVE else f"{state.state} (supervisor not running)"
    return JobEntry(name=state.job, key=directory.name, deployment=state.deployment, state=shown,
                    attempt=state.attempt, attempts=state.attempts, step=_step(state),
                    servers=[str(n.get("name")) for n in state.nodes], started_at=state.started_at,
                    updated_at=state.updated_at, supervisor_pid=state.pid if alive else None, dir=directory,
                    file_exists=Path(state.deployment).is_file(),
                    error=(state.error or {}).get("message") if isinstance(state.error, dict) else None)


def list_jobs(root: Path | None = None) -> list[JobEntry]:
    """Every job of the folder, the newest start first."""
    root = state_root() if root is None else root
    try:
        directories = [d for d in root.iterdir() if d.is_dir() and not d.is_symlink()]
    except OSError:
        return []
    entries = [e for e in map(entry_of, directories) if e is not None]
    return sorted(entries, key=lambda e: -(e.started_at or e.updated_at or 0))


def find_job(name: str, root: Path | None = None) -> JobEntry:
    """The job called `name`, or whose directory is `name` (which tells apart two files naming one job)."""
    jobs = list_jobs(root)
    found = [j for j in jobs if j.key == name] or [j for j in jobs if j.name == name]
    where = str(state_root() if root is None else root)
    if not found:
        known = ", ".join(sorted({j.name for j in jobs})) or "none"
        raise ConfigError(f"no job called {name!r} in {where} (jobs there: {known})", key="--job",
                          fix="list them with `ascend-run jobs`; a teammate's jobs need the same ASCEND_RUN_STATE_DIR")
    if len(found) > 1:
        which = "; ".join(f"{j.key} ({j.deployment})" for j in found)
        raise ConfigError(f"{len(found)} jobs are called {name!r}: {which}", key="--job",
                          fix=f"name one by its key, e.g. --job {found[0].key}")
    return found[0]


def save_snapshot(store: StateStore, dep) -> None:
    """The deployment as launched, beside the job's state: what `--job NAME` reads once the file moved."""
    from ascend_run.inputs.deployment import read_merged

    private_dir(store.dir)
    data = {"path": str(Path(dep.path).resolve()), "data": read_merged(Path(dep.path))}
    tmp = store.dir / f".{SNAPSHOT}.{os.getpid()}.tmp"
    with os.fdopen(open_private(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC), "w") as fh:
        fh.write(json.dumps(data, ensure_ascii=False, default=str))
    os.replace(tmp, store.dir / SNAPSHOT)


def deployment_of(entry: JobEntry):
    """The job's deployment: its file where it still is, else the copy taken at launch (with the file's own path,
    so relative paths and the state folder stay the file's)."""
    from ascend_run.inputs.deployment import deployment_from_data, load_deployment

    if entry.file_exists:
        return load_deployment(entry.deployment)
    try:
        snapshot = json.loads((entry.dir / SNAPSHOT).read_text())
    except (OSError, ValueError) as exc:
        raise ConfigError(f"the job {entry.name!r} was launched from {entry.deployment}, which is gone, and its "
                          f"copy in {entry.dir} cannot be read ({exc})", key="--job",
                          fix="give its deployment file with -f") from None
    return deployment_from_data(snapshot["data"], snapshot["path"])
