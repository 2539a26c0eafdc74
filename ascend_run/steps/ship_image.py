"""`image ship`: copy an image from the local engine to every node that lacks it, with no registry.

`docker save` is read once here and sent once, to the first node of a chain of relays
(`transport.broadcast`): each node stores the stream and forwards it to the next while it still arrives,
so 128 nodes take about the time of one and this machine's link carries the image once. Each node stages
the stream in its Docker data-root (`tmp/`, which dockerd empties when it starts) and `docker load`s it
only once its sha256 equals that of what this machine read; afterwards each node's image id must equal
the local one (content-addressed: equal ids mean equal bits).
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Callable
from dataclasses import dataclass

from ascend_run.errors import AscendRunError, RemoteCommandError, TransportError
from ascend_run.inputs.deployment import Node
from ascend_run.launch import nodeops
from ascend_run.steps.spread import free_bytes
from ascend_run.transport.broadcast import (
    LocalStream,
    Member,
    NodeState,
    Progress,
    StagedFile,
    broadcast,
    raise_unserved,
)
from ascend_run.transport.cluster import Cluster

CHUNK = 1 << 20


@dataclass(frozen=True)
class ShipResult:
    node: str
    action: str  # "present" | "shipped"
    image_id: str


def staging_path(docker_root: str, node: Node) -> str:
    """Where a node stages the stream: one name per node (a rerun overwrites what a killed relay left)."""
    return posixpath.join(docker_root, "tmp", f"ascend-run-image-{re.sub(r'[^A-Za-z0-9_.-]', '_', node.name)}.tar")


def docker_root(t) -> str:
    result = t.run(["docker", "info", "--format", "{{.DockerRootDir}}"], timeout=60)
    if not result.ok or not result.stdout.strip().startswith("/"):
        raise TransportError(f"cannot read the Docker data-root: {result.stderr.strip()[-300:]}", host=t.host,
                             fix="check that dockerd runs on the node (ascend-run preflight)")
    return result.stdout.strip()


def ship_image(cluster: Cluster, client, image: str, *, nodes: list[Node] | None = None,
               encrypt: bool = False, on_progress: Callable[[Progress], None] | None = None,
               on_msg: Callable[[str], None] = lambda m: None) -> list[ShipResult]:
    """Ship `image` from `client` (docker SDK) to the nodes that lack it; verify. Returns one result per node;
    raises a BroadcastError naming the nodes that could not be served (the others have the image)."""
    local = client.images.get(image)
    nodes = nodes or cluster.nodes
    present = cluster.each_or_raise(lambda n, t: nodeops.image_id(t, image), nodes)
    results = [ShipResult(n.name, "present", local.id) for n in nodes if present[n.name] == local.id]
    targets = [n for n in nodes if present[n.name] != local.id]
    if not targets:
        return results
    size = int(local.attrs.get("Size") or 0)
    roots = cluster.each_or_raise(lambda n, t: _room(t, size), targets)
    paths = {n.name: staging_path(roots[n.name], n) for n in targets}
    members = [Member(n, cluster.transport(n), StagedFile(paths[n.name])) for n in targets]
    stream = LocalStream(lambda: local.save(chunk_size=CHUNK, named=True), size or None)
    states = {s.name: s for s in broadcast(members, stream, encrypt=encrypt, on_progress=on_progress)}
    received = [n for n in targets if states[n.name].ok]
    on_msg(f"sha256 verified on {len(received)} node(s); docker load there")
    loaded = cluster.each(lambda n, t: _load(t, paths[n.name], image, local.id), received)
    for outcome in loaded:
        if not outcome.ok:
            _failed(states[outcome.node.name], str(outcome.error))
    raise_unserved(list(states.values()), f"shipping {image}")
    return results + [ShipResult(n.name, "shipped", local.id) for n in targets]


def _room(t, size: int) -> str:
    """The node's Docker data-root, after checking it can hold the staged stream and the loaded image."""
    root = docker_root(t)
    free = free_bytes(t, root)
    if free < 2 * size:
        raise AscendRunError(f"{free / 1e9:.1f} GB free under {root}, shipping needs "
                             f"{2 * size / 1e9:.1f} GB (the staged stream, then the loaded image); nothing sent",
                             fix="free space in the Docker data-root (docker system prune), then ship again")
    return root


def load_argv(path: str) -> list[str]:
    """`docker load` of a staged stream, which is deleted afterwards, loaded or not (what `--dry-run` prints)."""
    return ["sh", "-c", 'docker load --quiet --input "$1"; rc=$?; rm -f "$1"; exit $rc', "sh", path]


def _load(t, path: str, image: str, want: str) -> None:
    """`docker load` of the verified stream (deleted afterwards, loaded or not); then the id must match."""
    argv = load_argv(path)
    t.run(argv, timeout=None).check(t.host, ["docker", "load", "--input", path])
    got = nodeops.image_id(t, image)
    if got != want:
        raise RemoteCommandError(t.host, ["docker", "image", "inspect", image], 1,
                                 f"image id after load is {got}, expected {want}")


def _failed(state: NodeState, reason: str) -> None:
    state.phase, state.error = "failed", reason

