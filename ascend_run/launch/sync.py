"""`job.sync`: a local directory mirrored into a directory on a node, sending only what changed.

The local tree is hashed once (sha256 of every file, its executable bit, the directories) and compared with
the node's, which one command lists (`find` and `sha256sum` there). Then only the difference travels:
files that are gone locally are removed on the node, new or changed files go as one tar stream that is
built while it is sent (file by file, 1 MiB at a time: memory stays bounded whatever the sizes), into
`tar -x` on the node. A launch with unchanged sources sends no file contents at all, whatever their size.

Symbolic links are never followed: a relative link that stays inside the source tree travels as a link
(`l` lines of the listing carry its target), any other link (absolute, or climbing out with `..`) is refused
with its path named, so a link to /etc cannot ship /etc/shadow. Files are opened with O_NOFOLLOW and
checked to be regular files on the opened descriptor, so a file swapped for a link or a FIFO after the walk
is refused too. The walk is bounded (MAX_FILES entries, MAX_DEPTH levels, MAX_BYTES of file content) with
one error naming the bound. Names and link targets with a newline are refused (the node's listing is
line-based).
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
from ascend_run.inputs.text import printable

CHUNK = 1 << 20
HASH_TIMEOUT_S = 600

MAX_FILES = 200_000     # files, directories and links in one synced tree
MAX_DEPTH = 64          # directory levels under the source
MAX_BYTES = 16 << 30    # file content hashed (and at most sent) per synced tree
LINK = "link:"          # a link's entry in Tree.files: (LINK + target, False)

# On the node: nothing if the directory does not exist; else its directories, links (name, then target, on
# two lines), files' modes, files' sha256.
LIST_SCRIPT = """cd "$1" 2>/dev/null || exit 0
echo present
find . -mindepth 1 -type d -printf 'd %p\\n'
find . -type l -printf 'l %p\\n%l\\n'
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


def check_tree(source: str | Path) -> None:
    """The walk of `local_tree` without reading a file: its links and bounds checked (validate, dry runs)."""
    local_tree(source, hash_files=False)


def local_tree(source: str | Path, hash_files: bool = True) -> Tree:
    """Hash a local directory once; every node's copy is compared with this. Links are not followed
    (`_link_entry`); the walk stops with one ConfigError at the first bound it passes."""
    root = Path(source)
    if not root.is_dir():
        raise ConfigError(f"job.sync source {printable(str(root))} is not a directory", key="job.sync",
                          fix="the path is relative to the deployment file")
    tree = Tree()
    total = 0
    stack: list[tuple[Path, str, int]] = [(root, ".", 0)]
    while stack:
        directory, rel_dir, depth = stack.pop()
        try:
            entries = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as exc:
            raise _refused(directory, f"cannot be read ({exc.strerror or exc})", "make it readable") from None
        for entry in entries:
            path, rel = Path(entry.path), _rel(rel_dir, entry.name)
            if "\n" in entry.name:
                raise _refused(path, "has a newline in its name", "rename it")
            if len(tree.files) + len(tree.dirs) >= MAX_FILES:
                raise _bound(root, f"more than {MAX_FILES:,} files, directories and links")
            if entry.is_symlink():
                tree.files[rel] = _link_entry(root, path, rel)
            elif entry.is_dir(follow_symlinks=False):
                if depth + 1 > MAX_DEPTH:
                    raise _bound(root, f"directories nested more than {MAX_DEPTH} levels deep (at {rel})")
                tree.dirs.add(rel)
                stack.append((path, rel, depth + 1))
            elif entry.is_file(follow_symlinks=False):  # sockets and fifos are not content
                size = entry.stat(follow_symlinks=False).st_size
                total += size
                if total > MAX_BYTES:
                    raise _bound(root, f"more than {MAX_BYTES >> 30} GiB of files")
                tree.files[rel] = (_sha256(path) if hash_files else "",
                                   bool(entry.stat(follow_symlinks=False).st_mode & 0o111))
    return tree


def _link_entry(root: Path, path: Path, rel: str) -> tuple[str, bool]:
    """A link's Tree entry (its target, travelling as a link) when the target is relative and, read as a
    path, stays inside the synced tree; ConfigError naming the link otherwise (it would ship what it
    points to, or point elsewhere on the node)."""
    target = os.readlink(path)
    if "\n" in target or "\0" in target:
        raise _refused(path, "is a link whose target has a newline", "replace the link")
    if target.startswith("/"):
        raise _refused(path, f"is a link to an absolute path ({printable(target)}); job.sync copies only links "
                       "that stay inside the synced directory", "make it relative inside the directory, or copy "
                       "the file in its place")
    inside = posixpath.normpath(posixpath.join(posixpath.dirname(rel), target))
    real, real_root = os.path.realpath(path), os.path.realpath(root)  # through other links (resolved, not read)
    if inside == ".." or inside.startswith("../") or os.path.commonpath([real, real_root]) != real_root:
        raise _refused(path, f"is a link leading out of the synced directory ({printable(target)})",
                       "copy what it points to into the directory, or remove the link")
    return LINK + target, False


def _refused(path: Path, what: str, fix: str) -> ConfigError:
    return ConfigError(f"{printable(str(path))} {what}", key="job.sync", fix=fix)


def _bound(root: Path, what: str) -> ConfigError:
    return ConfigError(f"job.sync source {printable(str(root))} holds {what}; the walk stops there",
                       key="job.sync", fix="sync a smaller directory (code and configs; data belongs on a "
                       "mount)")


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


def open_file(path: Path):
    """A file of the tree opened for reading without following a link (O_NOFOLLOW) or waiting on a FIFO
    (O_NONBLOCK), and only if it is a regular file: one swapped after the walk is refused, not followed."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError as exc:
        raise _refused(path, f"cannot be opened without following a link ({exc.strerror or exc})",
                       "launch again once the directory holds plain files") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise _refused(path, "is no longer a regular file", "launch again")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open_file(path) as fh:
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
    rest = iter(lines[1:])
    for line in rest:
        if line.startswith("l "):
            tree.files[posixpath.normpath(line[2:])] = (LINK + next(rest, ""), False)
        elif line.startswith("d "):
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
        st = path.lstat()
        info = tarfile.TarInfo(name)
        info.mode, info.mtime = stat.S_IMODE(st.st_mode), int(st.st_mtime)
        if stat.S_ISLNK(st.st_mode):  # inside the tree, checked by the walk: travels as a link
            info.type = tarfile.SYMTYPE  # checked again: a link changed since the walk is refused, not sent
            info.linkname = _link_entry(source, path, name)[0][len(LINK):]
            yield out(info.tobuf(format=tarfile.PAX_FORMAT))
            continue
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            yield out(info.tobuf(format=tarfile.PAX_FORMAT))
            continue
        info.size = st.st_size
        yield out(info.tobuf(format=tarfile.PAX_FORMAT))
        left = info.size
        with open_file(path) as fh:
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
