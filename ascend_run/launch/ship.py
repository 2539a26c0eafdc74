"""`image ship`: copy an image from the local engine to every node that lacks it, with no registry.

`docker save` is read once and fanned out to every target's `docker load` over its SSH connection at
the same time (one bounded queue per node, so a slow node slows the stream instead of filling memory).
Afterwards each node's image id must equal the local one: the image is content-addressed, so equal ids
mean equal bits.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ascend_run.deployment import Deployment, Node
from ascend_run.errors import RemoteCommandError, TransportError
from ascend_run.launch import nodeops
from ascend_run.launch.launcher import parallel

CHUNK = 1 << 20
QUEUE_CHUNKS = 64  # at most 64 MiB in flight per node
_END = object()


@dataclass(frozen=True)
class ShipResult:
    node: str
    action: str  # "present" | "shipped"
    image_id: str


def _chunks(q: queue.Queue) -> Iterator[bytes]:
    while True:
        item = q.get()
        if item is _END:
            return
        yield item


def ship_image(dep: Deployment, transports: dict, client, image: str,
               on_bytes: Callable[[int], None] = lambda n: None,
               nodes: list[Node] | None = None) -> list[ShipResult]:
    """Ship `image` from `client` (docker SDK) to the nodes that lack it; verify ids. Returns per node."""
    local = client.images.get(image)
    nodes = nodes or list(dep.nodes)
    present = parallel(nodes, lambda n: nodeops.image_id(transports[n.name], image))
    errors = {k: v for k, v in present.items() if isinstance(v, BaseException)}
    if errors:
        name, exc = next(iter(errors.items()))
        raise TransportError(f"cannot check the image: {exc}", host=name)
    results = [ShipResult(n.name, "present", local.id) for n in nodes if present[n.name] == local.id]
    targets = [n for n in nodes if present[n.name] != local.id]
    if not targets:
        return results
    queues = {n.name: queue.Queue(maxsize=QUEUE_CHUNKS) for n in targets}
    failed: dict[str, BaseException] = {}

    def load(node: Node):
        t = transports[node.name]
        try:
            result = t.run(["docker", "load", "--quiet"], stdin=_chunks(queues[node.name]), timeout=None)
            result.check(node.name)
        except BaseException as exc:
            failed[node.name] = exc
            _drain(queues[node.name])
            raise

    loaders = {n.name: threading.Thread(target=lambda n=n: _guard(load, n), daemon=True) for n in targets}
    for thread in loaders.values():
        thread.start()
    for chunk in local.save(chunk_size=CHUNK, named=True):
        for name, q in queues.items():
            if name not in failed:
                q.put(chunk)
        on_bytes(len(chunk))
    for q in queues.values():
        q.put(_END)
    for thread in loaders.values():
        thread.join()
    if failed:
        name, exc = next(iter(failed.items()))
        raise TransportError(f"docker load failed: {exc}", host=name,
                             fix="check free disk space in the node's Docker data-root, then ship again")
    ids = parallel(targets, lambda n: nodeops.image_id(transports[n.name], image))
    for node in targets:
        if ids[node.name] != local.id:
            raise RemoteCommandError(node.name, ["docker", "image", "inspect", image], 1,
                                     f"image id after load is {ids[node.name]}, expected {local.id}")
        results.append(ShipResult(node.name, "shipped", local.id))
    return results


def _guard(func, node) -> None:
    try:
        func(node)
    except BaseException:
        pass  # recorded in `failed` by the loader itself


def _drain(q: queue.Queue) -> None:
    """Keep consuming a failed node's queue so the reader never blocks on it."""
    def drain():
        while q.get() is not _END:
            pass
    threading.Thread(target=drain, daemon=True).start()
