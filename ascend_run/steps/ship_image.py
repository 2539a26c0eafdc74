"""`image ship`: copy an image from the local engine to every node that lacks it, with no registry.

`docker save` is read once and fanned out to every target's `docker load` over its SSH connection at
the same time (`transport.broadcast`: a slow node slows the stream instead of filling memory).
Afterwards each node's image id must equal the local one: the image is content-addressed, so equal ids
mean equal bits.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ascend_run.errors import RemoteCommandError, TransportError
from ascend_run.inputs.deployment import Node
from ascend_run.launch import nodeops
from ascend_run.transport.broadcast import broadcast
from ascend_run.transport.cluster import Cluster

CHUNK = 1 << 20


@dataclass(frozen=True)
class ShipResult:
    node: str
    action: str  # "present" | "shipped"
    image_id: str


def ship_image(cluster: Cluster, client, image: str, on_bytes: Callable[[int], None] = lambda n: None,
               nodes: list[Node] | None = None) -> list[ShipResult]:
    """Ship `image` from `client` (docker SDK) to the nodes that lack it; verify ids. Returns per node."""
    local = client.images.get(image)
    nodes = nodes or cluster.nodes
    present = cluster.each_or_raise(lambda n, t: nodeops.image_id(t, image), nodes)
    results = [ShipResult(n.name, "present", local.id) for n in nodes if present[n.name] == local.id]
    targets = [n for n in nodes if present[n.name] != local.id]
    if not targets:
        return results

    def produce(write) -> None:
        for chunk in local.save(chunk_size=CHUNK, named=True):
            write(chunk)
            on_bytes(len(chunk))

    def loader(node: Node):
        return lambda chunks: cluster.transport(node).run(["docker", "load", "--quiet"], stdin=chunks,
                                                        timeout=None).check(node.name)

    failed = broadcast(produce, {n.name: loader(n) for n in targets})
    if failed:
        name, exc = next(iter(failed.items()))
        raise TransportError(f"docker load failed: {exc}", host=name,
                             fix="check free disk space in the node's Docker data-root, then ship again")
    ids = cluster.each_or_raise(lambda n, t: nodeops.image_id(t, image), targets)
    for node in targets:
        if ids[node.name] != local.id:
            raise RemoteCommandError(node.name, ["docker", "image", "inspect", image], 1,
                                     f"image id after load is {ids[node.name]}, expected {local.id}")
        results.append(ShipResult(node.name, "shipped", local.id))
    return results
