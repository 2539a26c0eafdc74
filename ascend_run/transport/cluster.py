"""A deployment's nodes over open connections: what every multi-node step works on.

`connect(dep)` opens one connection per node (in parallel, bounded) and yields a `Cluster`; everything that
acts on several nodes does it through `Cluster.each`, the one bounded fan-out (`fanout.fan_out`), so
`--parallel N` bounds connections and remote commands alike, every node's outcome is kept, and the first
failure is raised naming its node. Long-lived per-node work that must run on every node at once (watching a
running job) does not go through `each`: see `launch.launcher`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.transport.base import Transport
from ascend_run.transport.fanout import (DEFAULT_PARALLELISM, Factory, Outcome, Progress, close_all, connect_all,
                                         fan_out, values_or_raise)

T = TypeVar("T")


@dataclass
class Cluster:
    """The deployment, one transport per connected node, and how many nodes to contact at once."""

    dep: Deployment
    transports: Mapping[str, Transport]
    parallelism: int = DEFAULT_PARALLELISM

    @property
    def nodes(self) -> list[Node]:
        """The connected nodes, in the deployment's order."""
        return [n for n in self.dep.nodes if n.name in self.transports]

    def transport(self, node: Node | str) -> Transport:
        return self.transports[node if isinstance(node, str) else node.name]

    def each(self, func: Callable[[Node, Transport], T], nodes: Sequence[Node] | None = None,
             on_done: Progress | None = None) -> list[Outcome[T]]:
        """`func(node, transport)` on every node (or `nodes`), at most `parallelism` at a time."""
        return fan_out(self.nodes if nodes is None else nodes, lambda n: func(n, self.transport(n)),
                       parallelism=self.parallelism, on_done=on_done)

    def each_or_raise(self, func: Callable[[Node, Transport], T],
                      nodes: Sequence[Node] | None = None) -> dict[str, T]:
        """`each`, then {node name: value}, or the first node's error raised (it names the node)."""
        return values_or_raise(self.each(func, nodes))

    def close(self) -> None:
        close_all(self.transports)


@contextlib.contextmanager
def connect(dep: Deployment, *, accept_new: bool = False, parallelism: int = DEFAULT_PARALLELISM,
            nodes: Sequence[Node] | None = None, factory: Factory | None = None) -> Iterator[Cluster]:
    """A Cluster of every node (or `nodes`), closed at the end. Raises for the first node that cannot be
    reached (naming the others), having closed the ones that could."""
    transports = connect_all(dep, accept_new=accept_new, parallelism=parallelism, nodes=nodes, factory=factory)
    cluster = Cluster(dep, transports, parallelism)
    try:
        yield cluster
    finally:
        cluster.close()
