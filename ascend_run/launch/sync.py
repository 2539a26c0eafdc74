"""`job.sync`: a local directory mirrored into a directory on a node, sending only what changed.

The local tree is hashed once (sha256 of every file, its executable bit, the directories) and compared with
the node's, which one command lists (`find` and `sha256sum` there). Then only the difference travels:
files that are gone locally are removed on the node, new or changed files go as one tar stream that is
built while it is sent (file by file, 1 MiB at a time: memory stays bounded whatever the sizes), into
`tar -x` on the node. A launch with unchanged sources sends no file contents at all, whatever their size.

Symbolic links are followed (the node gets the content); names with a newline are refused (the node's
listing is line-based).
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import stat
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ascend_run.errors import AscendRunError, ConfigError

CHUNK = 1 << 20
HASH_TIMEOUT_S = 600

# On the node: nothing if the directory does not exist; else its directories, files' modes, files' sha256.
LIST_SCRIPT = """cd "$1" 2>/dev/null || exit 0
echo present
find . -mindepth 1 -type d -printf 'd %p\\n'
find . -type f -printf 'm %m %p\\n'
find . -type f -print0 | xargs -0 -r sha256sum
"""
# On the node: make the directory, then remove the NUL-separated names read from stdin.
REMOVE_SCRIPT = 'mkdir -p "$1" && cd "$1" && xargs -0 -r rm -rf --'


@dataclass
class Tree:
    """A directory's content: {relative path: (sha256, executable)} and its subdirectories."""

    files: dict[str, tuple[str, bool]] = field(default_factory=dict)
    dirs: set[str] = field(default_factory=set)
    present: bool = True


@dataclass(frozen=True)
class Changes:
    send: list[str]     # directories first, then files, each relative to the synced directory
    remove: list[str]

    @property
    def empty(self) -> bool:
        return not self.send and not self.remove


@dataclass(frozen=True)
class SyncResult:
    files_sent: int
    bytes_sent: int     # the tar stream's size: headers and padding included
    removed: int


def local_tree(source: str | Path) -> Tree:
    """Hash a local directory once; every node's copy is compared with this."""
    root = Path(source)
    if not root.is_dir():
        raise ConfigError(f"job.sync source {root} is not a directory", key="job.sync",
                          fix="the path is relative to the deployment file")
    tree = Tree()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = os.path.relpath(dirpath, root)
        for name in [*dirnames, *filenames]:
            if "\n" in name:
                raise ConfigError(f"job.sync: {os.path.join(dirpath, name)!r} has a newline in its name",
                                  key="job.sync", fix="rename it")
        for name in dirnames:
            tree.dirs.add(_rel(rel_dir, name))
        for name in filenames:
            path = Path(dirpath, name)
            if path.is_file():  # sockets, fifos and dangling links are not content
                tree.files[_rel(rel_dir, name)] = (_sha256(path), bool(path.stat().st_mode & 0o111))
    return tree


def local_trees(sync_dirs) -> dict[str, Tree]:
    """{source: Tree} for every source named in the nodes' (source, remote) lists, each hashed once."""
    return {source: local_tree(source) for pairs in sync_dirs for source, _ in pairs}


def summary(results: dict[str, object]) -> str:
    """One line for the launch output from {node: [SyncResult, ...]}."""
    done = [r for value in results.values() if isinstance(value, list) for r in value]
    files, size = sum(r.files_sent for r in done), sum(r.bytes_sent for r in done)
    removed = sum(r.removed for r in done)
    if not files and not removed:
        return f"job.sync: unchanged on all {len(results)} nodes (sha256), nothing sent"
    return (f"job.sync: {files} changed file(s) sent ({size} bytes of tar) and {removed} removed, "
            f"over {len(results)} nodes; unchanged files were not sent")


def _rel(rel_dir: str, name: str) -> str:
    return posixpath.normpath(posixpath.join(rel_dir.replace(os.sep, "/"), name))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def remote_tree(t, directory: str) -> Tree:
    """The node's copy as a Tree (present=False when the directory does not exist yet)."""
    result = t.run(["sh", "-c", LIST_SCRIPT, "sh", directory], timeout=HASH_TIMEOUT_S)
    result.check(t.host, ["sh", "-c", "(list and sha256sum) " + directory])
    return parse_listing(result.stdout)


def parse_listing(text: str) -> Tree:
    lines = text.splitlines()
    if not lines or lines[0] != "present":
        return Tree(present=False)
    tree, modes = Tree(), {}
    for line in lines[1:]:
        if line.startswith("d "):
            tree.dirs.add(posixpath.normpath(line[2:]))
        elif line.startswith("m "):
            mode, _, name = line[2:].partition(" ")
            modes[posixpath.normpath(name)] = bool(int(mode, 8) & 0o111)
        else:
            digest, _, name = line.partition("  ")
            name = posixpath.normpath(name)
            tree.files[name] = (digest, modes.get(name, False))
    return tree


def changes(local: Tree, remote: Tree) -> Changes:
    """What to send and what to remove so that `remote` equals `local` (pure)."""
    send_dirs = sorted(d for d in local.dirs if d not in remote.dirs)
    send_files = sorted(f for f, info in local.files.items() if remote.files.get(f) != info)
    stale = {f for f in remote.files if f not in local.files} | {d for d in remote.dirs if d not in local.dirs}
    stale |= {f for f in local.files if f in remote.dirs} | {d for d in local.dirs if d in remote.files}
    # removing a directory removes what is under it: name only the topmost
    remove = sorted(p for p in stale if not any(p.startswith(parent + "/") for parent in stale))
    return Changes(send=send_dirs + send_files, remove=remove)


def tar_stream(source: Path, names: list[str], counter: list[int] | None = None) -> Iterator[bytes]:
    """A tar of `names` under `source`, produced while it is read: headers, then each file in 1 MiB chunks.
    `counter[0]` grows by every byte produced."""
    def out(chunk: bytes) -> bytes:
        if counter is not None:
            counter[0] += len(chunk)
        return chunk

    for name in names:
        path = source / name
        st = path.stat()
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield out(info.tobuf(format=tarfile.PAX_FORMAT))
            continue
        info.size = st.st_size
        yield out(info.tobuf(format=tarfile.PAX_FORMAT))
        left = info.size
        with path.open("rb") as fh:
            while left:
                chunk = fh.read(min(CHUNK, left))
                if not chunk:
                    raise AscendRunError(f"job.sync: {path} shrank while it was being sent", fix="launch again")
                left -= len(chunk)
                yield out(chunk)
        if info.size % tarfile.BLOCKSIZE:
            yield out(b"\0" * (tarfile.BLOCKSIZE - info.size % tarfile.BLOCKSIZE))
    yield out(b"\0" * (2 * tarfile.BLOCKSIZE))


def sync_dir(t, source: str | Path, local: Tree, directory: str) -> SyncResult:
    """Make `directory` on the node equal to `source` (already hashed as `local`); send only the difference."""
    host = t.host
    remote = remote_tree(t, directory)
    todo = changes(local, remote)
    if todo.remove or not remote.present:  # one command: create the directory, remove what is gone
        names = b"".join(f"./{p}".encode() + b"\0" for p in todo.remove)
        t.run(["sh", "-c", REMOVE_SCRIPT, "sh", directory], stdin=names, timeout=300).check(host)
    counter = [0]
    if todo.send:
        argv = ["tar", "-x", "--no-same-owner", "-C", directory, "-f", "-"]
        t.run(argv, stdin=tar_stream(Path(source), todo.send, counter), timeout=None).check(host, argv)
    return SyncResult(files_sent=sum(n in local.files for n in todo.send), bytes_sent=counter[0],
                      removed=len(todo.remove))
