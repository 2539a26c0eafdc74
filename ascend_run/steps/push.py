"""`ascend-run push SRC DEST`: a file or a folder of this machine onto every server (as pdcp and clush --copy),
through the pipelined broadcast (`transport.broadcast`): this machine sends the bytes once, down a chain of
relays, and every server writes each file beside its final name and renames it into place only once its sha256
equals this machine's. Files a server already holds with the same sha256 are not written there (as `job.sync`
skips them); nothing on the servers is deleted.

SRC a file: DEST is the file's path on the servers (or, ending with `/`, the directory it goes into).
SRC a folder: its files go under DEST, keeping their relative paths (as `rsync SRC/ DEST`).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ascend_run.errors import AscendRunError, ConfigError
from ascend_run.inputs import text
from ascend_run.transport.broadcast import (
    FileEntry,
    FileSet,
    LocalStream,
    Member,
    Progress,
    broadcast,
    chain_text,
    raise_unserved,
)
from ascend_run.transport.cluster import Cluster

CHUNK = 1 << 20


@dataclass(frozen=True)
class LocalFile:
    name: str   # relative path under the destination directory (posix)
    path: Path  # where it is here
    size: int
    sha256: str


@dataclass(frozen=True)
class Plan:
    """What goes where: the destination directory on the servers, this machine's files, and per server the
    files it lacks (or holds with another sha256)."""

    directory: str
    files: tuple[LocalFile, ...]
    todo: dict[str, list[str]]

    @property
    def by_name(self) -> dict[str, LocalFile]:
        return {f.name: f for f in self.files}

    def bytes_for(self, node: str) -> int:
        files = self.by_name
        return sum(files[n].size for n in self.todo.get(node, []))


@dataclass
class Pushed:
    """One server's result: files written and skipped, bytes written, seconds from the start until verified."""

    node: str
    written: int = 0
    skipped: int = 0
    bytes: int = 0
    seconds: float | None = None
    error: str | None = None
    timeline: list = field(default_factory=list, repr=False)

    def as_json(self) -> dict:
        return {"node": self.node, "files_written": self.written, "files_skipped": self.skipped,
                "bytes": self.bytes, "seconds": None if self.seconds is None else round(self.seconds, 3),
                "error": self.error}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _name(rel: str, src: str) -> str:
    """A relative name that survives the trip: one printable line, no `..`, no leading `/`."""
    try:
        text.one_line(rel)
    except text.Invalid as exc:
        raise ConfigError(f"{rel!r} under {src}: {exc}", key="SRC", fix="rename the file, or push another folder") \
            from None
    return rel


def local_files(src: str, dest: str) -> tuple[str, tuple[LocalFile, ...]]:
    """(the destination directory on the servers, this machine's files with their sha256) for SRC and DEST."""
    from ascend_run.inputs.deployment import server_path

    try:
        dest = server_path(dest) or ""
    except ValueError as exc:
        raise ConfigError(str(exc), key="DEST", fix="give an absolute path on the servers, e.g. /data/conf") from None
    source = Path(src)
    if source.is_file():
        if dest.endswith("/"):
            directory, name = dest.rstrip("/") or "/", source.name
        else:
            directory, name = posixpath.dirname(dest) or "/", posixpath.basename(dest)
        return directory, (LocalFile(_name(name, src), source, source.stat().st_size, _sha256(source)),)
    if not source.is_dir():
        raise ConfigError(f"{src}: no such file or folder", key="SRC", fix="give a file or a folder of this machine")
    files = []
    for root, dirs, names in os.walk(source):
        dirs.sort()
        for name in sorted(names):
            path = Path(root) / name
            if path.is_symlink() or not path.is_file():
                continue  # links and special files are not copied (as job.sync)
            rel = path.relative_to(source).as_posix()
            files.append(LocalFile(_name(rel, src), path, path.stat().st_size, _sha256(path)))
    if not files:
        raise ConfigError(f"{src} holds no files", key="SRC", fix="push a folder with files in it")
    return dest.rstrip("/") or "/", tuple(files)


REMOTE_SUMS = 'cd "$1" 2>/dev/null || exit 0; xargs -0 -r sha256sum -- 2>/dev/null; exit 0'


def remote_sums(transport, directory: str, names: list[str]) -> dict[str, str]:
    """{name: sha256} of those of `names` a server holds under `directory` (the names go on stdin, NUL-separated:
    no argument list limit, and no file of the folder that is not pushed is read)."""
    result = transport.run(["sh", "-c", REMOTE_SUMS, "sh", directory], stdin=b"\0".join(n.encode() for n in names),
                           timeout=6 * 3600)
    sums = {}
    for line in result.stdout.splitlines():
        digest, _, name = line.partition("  ")
        if len(digest) == 64:
            sums[posixpath.normpath(name)] = digest
    return sums


def plan(cluster: Cluster, nodes: list, directory: str, files: tuple[LocalFile, ...]) -> Plan:
    names = [f.name for f in files]
    have = cluster.each_or_raise(lambda n, t: remote_sums(t, directory, names), nodes)
    todo = {n.name: [f.name for f in files if have[n.name].get(f.name) != f.sha256] for n in nodes}
    return Plan(directory, files, todo)


def _check_room(cluster: Cluster, nodes: list, push_plan: Plan) -> None:
    from ascend_run.steps.spread import free_bytes

    need = {n.name: push_plan.bytes_for(n.name) for n in nodes if push_plan.bytes_for(n.name)}
    if not need:
        return
    frees = cluster.each_or_raise(lambda n, t: free_bytes(t, push_plan.directory), [n for n in nodes if n.name in need])
    short = [f"{name} needs {need[name]:,} bytes under {push_plan.directory}, has {free:,} free"
             for name, free in frees.items() if need[name] > free]
    if short:
        raise AscendRunError("not enough disk space, nothing sent: " + "; ".join(short))


def _stream(files: list[LocalFile]) -> Callable[[], Iterator[bytes]]:
    """The payload: the files one after the other, read again from the start for each feed (a server that
    loses the first of the chain is fed again from here); a file changed since it was hashed fails it there."""

    def read() -> Iterator[bytes]:
        for f in files:
            with f.path.open("rb") as fh:
                yield from iter(lambda fh=fh: fh.read(CHUNK), b"")

    return read


def push(cluster: Cluster, nodes: list, push_plan: Plan, *, encrypt: bool = False,
         on_progress: Callable[[Progress], None] | None = None) -> list[Pushed]:
    """Send each server the files it lacks; one result per server. Raises a BroadcastError naming the servers
    that could not be served (the others hold every file, verified)."""
    _check_room(cluster, nodes, push_plan)
    results = {n.name: Pushed(n.name, skipped=len(push_plan.files) - len(push_plan.todo[n.name]),
                              written=len(push_plan.todo[n.name]), bytes=push_plan.bytes_for(n.name)) for n in nodes}
    receivers = [n for n in nodes if push_plan.todo[n.name]]
    for node in nodes:
        if not push_plan.todo[node.name]:
            results[node.name].seconds = 0.0
    if not receivers:
        return list(results.values())
    needed = sorted({name for n in receivers for name in push_plan.todo[n.name]})
    by_name = push_plan.by_name
    entries = tuple(FileEntry(name, by_name[name].size, by_name[name].sha256) for name in needed)
    members = [Member(n, cluster.transport(n), FileSet(push_plan.directory, entries,
                                                       write=frozenset(push_plan.todo[n.name])))
               for n in receivers]
    stream = LocalStream(_stream([by_name[name] for name in needed]), sum(e.size for e in entries))
    started = time.monotonic()

    def progress(p: Progress) -> None:
        for state in p.nodes:
            result = results[state.name]
            if state.ok and result.seconds is None:
                result.seconds = time.monotonic() - started
        if on_progress is not None:
            on_progress(p)

    states = broadcast(members, stream, encrypt=encrypt, on_progress=progress)
    for state in states:
        result = results[state.name]
        if state.ok and result.seconds is None:
            result.seconds = time.monotonic() - started
        if not state.ok:
            result.error, result.written, result.bytes = state.error, 0, 0
    raise_unserved(states, f"pushing to {push_plan.directory}")
    return list(results.values())


def describe_chain(cluster: Cluster, nodes: list, push_plan: Plan) -> str:
    receivers = [n for n in nodes if push_plan.todo[n.name]]
    members = [Member(n, cluster.transport(n), FileSet(push_plan.directory, ())) for n in receivers]
    return chain_text(members, LocalStream(lambda: iter(()))) if members else "nothing to send"
