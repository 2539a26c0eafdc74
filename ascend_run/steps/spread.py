"""Spread a weights directory from node 0 to the other nodes, checked with sha256 manifests.

The files some target lacks stream from node 0 once, node to node down a chain of relays
(`transport.broadcast`): nothing passes through this machine, and each node writes a file beside its
final name and renames it into place only once its sha256 equals node 0's (from the manifest, which the
kit read over SSH). Files already identical on a target are not written there; free space is checked on
every target before anything is copied. A node lost mid-way leaves the others complete, and only whole,
verified files under their names.
"""

from __future__ import annotations

import json
import posixpath
import secrets
from collections.abc import Callable

from ascend_run.errors import AscendRunError
from ascend_run.transport.broadcast import FileEntry, FileSet, Member, Progress, broadcast, raise_unserved
from ascend_run.transport.cluster import Cluster

MARKER = ".ascend-run-complete.json"  # written by steps/hub_fetch.py when a download is whole


HASH_JOBS = 8  # sha256sum processes at once per node: 1.4 TB hashed by one core takes over an hour


def manifest(transport, directory: str) -> dict[str, str]:
    """{relative path: sha256} of every file under `directory` on a node (empty if it does not exist)."""
    script = ('cd "$1" 2>/dev/null || exit 0; '
              f"find . -type f ! -name '.ascend-run-*' -print0 | xargs -0 -r -P {HASH_JOBS} -n 4 sha256sum")
    result = transport.run(["sh", "-c", script, "sh", directory], timeout=6 * 3600)
    if not result.ok:
        raise AscendRunError(f"sha256sum under {directory} failed: {result.stderr.strip()[-300:]}")
    sums = {}
    for line in result.stdout.splitlines():
        digest, _, name = line.partition("  ")
        sums[posixpath.normpath(name)] = digest
    return sums


def sizes(transport, directory: str) -> dict[str, int]:
    result = transport.run(["sh", "-c", """cd "$1" && find . -type f -printf '%s %p\\n'""", "sh", directory],
                           timeout=600)
    if not result.ok:
        raise AscendRunError(f"{directory}: {result.stderr.strip()[-300:]}")
    out = {}
    for line in result.stdout.splitlines():
        size, _, name = line.partition(" ")
        out[posixpath.normpath(name)] = int(size)
    return out


def free_bytes(transport, directory: str) -> int:
    """Free bytes on the filesystem that holds (or will hold) `directory`."""
    script = 'd="$1"; while [ ! -e "$d" ]; do d=$(dirname "$d"); done; df -B1 --output=avail "$d" | tail -n 1'
    result = transport.run(["sh", "-c", script, "sh", directory], timeout=60)
    if not result.ok:
        raise AscendRunError(f"df {directory}: {result.stderr.strip()[-300:]}")
    return int(result.stdout.split()[-1])


def spread_from_node(cluster: Cluster, directory: str, on_msg: Callable[[str], None] = print, *,
                     encrypt: bool = False, on_progress: Callable[[Progress], None] | None = None) -> dict[str, int]:
    """Copy `directory` from the deployment's first node to the others; returns {node: files copied}.

    Raises a BroadcastError naming the nodes that could not be served; the others are complete.
    """
    source, *targets = cluster.nodes
    src = cluster.transport(source)
    want = manifest(src, directory)
    if not want:
        raise AscendRunError(f"{source.name}: no files under {directory} to spread")
    marker = completion_marker(src, directory)
    if marker is not None:
        check_against_marker(source.name, directory, want, marker)
    shared = sharing_nodes(cluster, source, targets, directory)
    for name in shared:
        on_msg(f"{name}: sees {source.name}'s {directory} (shared storage): nothing to copy")
    targets = [n for n in targets if n.name not in shared]
    if not targets:
        return {name: 0 for name in shared}
    file_sizes = sizes(src, directory)
    have = cluster.each_or_raise(lambda n, t: manifest(t, directory), targets)
    todo = {n.name: sorted(f for f, d in want.items() if have[n.name].get(f) != d) for n in targets}
    frees = cluster.each_or_raise(lambda n, t: free_bytes(t, directory), targets)
    short = []
    for node in targets:
        free = frees[node.name]
        need = sum(file_sizes[f] for f in todo[node.name])
        if need > free:
            short.append(f"{node.name} needs {need} bytes under {directory}, has {free} free")
    if short:
        raise AscendRunError("not enough disk space, nothing copied: " + "; ".join(short))
    needed = sorted({f for files in todo.values() for f in files})
    copied = {n.name: len(todo[n.name]) for n in targets}
    if not needed:
        on_msg(f"all {len(targets)} nodes already have the {len(want)} files of {directory}")
        _put_marker(cluster, targets, directory, marker)
        return copied
    receivers = [n for n in targets if todo[n.name]]
    files = tuple(FileEntry(f, file_sizes[f], want[f]) for f in needed)
    members = [Member(n, cluster.transport(n), FileSet(directory, files, write=frozenset(todo[n.name])))
               for n in receivers]
    origin = Member(source, src, FileSet(directory, files, source=True))
    states = broadcast(members, origin, encrypt=encrypt, on_progress=on_progress)
    served = [n for n, state in zip(receivers, states) if state.ok]
    _put_marker(cluster, served + [n for n in targets if not todo[n.name]], directory, marker)
    for node in served:
        on_msg(f"{node.name}: copied {copied[node.name]} of {len(want)} files, sha256 verified")
    raise_unserved(states, f"spreading {directory} from {source.name}")
    return copied


def sharing_nodes(cluster: Cluster, source, targets, directory: str) -> list[str]:
    """The nodes that see the source's `directory` itself (NFS, a parallel filesystem): a file made there on
    the source appears on them. Copying to them would copy a directory onto itself, and hashing it on
    every node would read 1.4 TB once per node for nothing."""
    probe = posixpath.join(directory, f".ascend-run-probe-{secrets.token_hex(8)}")
    src = cluster.transport(source)
    src.run(["touch", probe], timeout=60).check(src.host)
    try:
        seen = cluster.each(lambda n, t: t.run(["test", "-e", probe], timeout=60).ok, targets)
    finally:
        src.run(["rm", "-f", probe], timeout=60)
    return [o.node.name for o in seen if o.value is True]


def completion_marker(transport, directory: str) -> str | None:
    """The text of `weights fetch`'s completion marker in `directory`, None when there is none."""
    result = transport.run(["cat", posixpath.join(directory, MARKER)], timeout=60)
    return result.stdout if result.ok else None


def check_against_marker(node: str, directory: str, sums: dict[str, str], marker_text: str) -> None:
    """A downloaded copy must still be what the hub sent before it is spread: same files, same sha256."""
    try:
        recorded = {name: info.get("sha256", "") for name, info in json.loads(marker_text)["files"].items()}
    except (ValueError, KeyError, AttributeError, TypeError):
        raise AscendRunError(f"{node}: {directory}/{MARKER} is not readable",
                             fix="download again: ascend-run weights fetch -f FILE") from None
    missing = sorted(set(recorded) - set(sums))
    changed = sorted(n for n, digest in recorded.items() if n in sums and len(digest) == 64 and sums[n] != digest)
    if missing or changed:
        first = (missing + changed)[0]
        raise AscendRunError(f"{node}: {directory} no longer matches what the hub sent ({len(missing)} missing, "
                             f"{len(changed)} changed, e.g. {first}); nothing copied",
                             fix="download it again: ascend-run weights fetch -f FILE (it re-fetches what differs)")


def _put_marker(cluster: Cluster, targets, directory: str, marker_text: str | None) -> None:
    """Every copy carries the marker, so each node can tell a complete copy from a partial one."""
    if marker_text is None:
        return
    for node in targets:
        cluster.transport(node).run(["sh", "-c", 'cat > "$1"', "sh", posixpath.join(directory, MARKER)],
                                  stdin=marker_text.encode(), timeout=60).check(node.name)
