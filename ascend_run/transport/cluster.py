"""A deployment's nodes over open connections: what every multi-node step works on.

`connect(dep)` opens one connection per node (in parallel, bounded) and yields a `Cluster`; everything that
acts on several nodes does it through `Cluster.each`, the one bounded fan-out (`fanout.fan_out`), so
`--parallel N` bounds connections and remote commands alike, every node's outcome is kept, and the first
failure is raised naming its node. Long-lived per-node work that must run on every node at once (watching a
running job) does not go through `each`: see `launch.watch`. A node whose connection broke is connected
again with `reconnect`, with the factory and host-key settings the cluster was opened with.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TypeVar

from ascend_run.errors import AscendRunError
from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.transport.base import Transport
from ascend_run.transport.fanout import (
    DEFAULT_PARALLELISM,
    Factory,
    Outcome,
    Progress,
    close_all,
    connect_all,
    connect_each,
    fan_out,
    values_or_raise,
)

T = TypeVar("T")


@dataclass
class Cluster:
    """The deployment, one transport per connected node, and how many nodes to contact at once."""

    dep: Deployment
    transports: dict[str, Transport]
    parallelism: int = DEFAULT_PARALLELISM
    factory: Factory | None = None     # how `reconnect` and `connect_more` make a transport (None: they cannot)
    accept_new: bool = False
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)

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

    def using(self, dep: Deployment) -> Cluster:
        """The same connections for another node list (a spare in a failed node's place)."""
        return Cluster(dep, self.transports, self.parallelism, self.factory, self.accept_new, self._lock)

    def reconnect(self, node: Node) -> Transport:
        """A new connection to `node` in place of its old one (closed); raises when the node does not answer."""
        fresh = connect_each(self.dep, accept_new=self.accept_new, nodes=[node], factory=self.factory)[node.name]
        if isinstance(fresh, AscendRunError):
            raise fresh
        with self._lock:
            old = self.transports.get(node.name)
            self.transports[node.name] = fresh
        if old is not None and old is not fresh:
            close_all([old])
        return fresh

    def connect_more(self, nodes: Sequence[Node]) -> dict[str, AscendRunError]:
        """Connect the `nodes` not connected yet (spares, a node that came back); {node: error} for the rest."""
        todo = [n for n in nodes if n.name not in self.transports]
        if not todo:
            return {}
        results = connect_each(self.dep, accept_new=self.accept_new, parallelism=self.parallelism, nodes=todo,
                               factory=self.factory)
        errors = {}
        with self._lock:
            for name, value in results.items():
                if isinstance(value, AscendRunError):
                    errors[name] = value
                else:
                    self.transports[name] = value
        return errors

    def close(self) -> None:
        close_all(self.transports)


@contextlib.contextmanager
def connect(dep: Deployment, *, accept_new: bool = False, parallelism: int = DEFAULT_PARALLELISM,
            nodes: Sequence[Node] | None = None, factory: Factory | None = None) -> Iterator[Cluster]:
    """A Cluster of every node (or `nodes`), closed at the end. Raises for the first node that cannot be
    reached (naming the others), having closed the ones that could."""
    transports = connect_all(dep, accept_new=accept_new, parallelism=parallelism, nodes=nodes, factory=factory)
    cluster = Cluster(dep, transports, parallelism, factory, accept_new)
    try:
        yield cluster
    finally:
        cluster.close()
