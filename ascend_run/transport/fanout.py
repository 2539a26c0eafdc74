"""One transport per node, opened in parallel, with bounded parallelism (default: 128 nodes in one wave)."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from ascend_run.deployment import Deployment, Node
from ascend_run.errors import AscendRunError, TransportError
from ascend_run.transport.ssh import KnownHosts, SSHTransport

DEFAULT_PARALLELISM = 256

Factory = Callable[[Node, KnownHosts], object]


def ssh_factory(node: Node, known: KnownHosts):
    return SSHTransport(node.address, port=node.ssh.port, user=node.ssh.user, key_file=node.ssh.identity_file,
                        known_hosts=known, connect_timeout=node.ssh.connect_timeout, name=node.name)


def connect_each(dep: Deployment, *, accept_new: bool = False, parallelism: int = DEFAULT_PARALLELISM,
                 nodes: list[Node] | None = None, factory: Factory = ssh_factory) -> dict[str, object]:
    """Transports or exceptions, by node name: every node is tried, none is lost."""
    nodes = list(nodes or dep.nodes)
    known_by_path: dict[str, KnownHosts] = {}
    for node in nodes:
        known_by_path.setdefault(node.ssh.known_hosts, KnownHosts(node.ssh.known_hosts, accept_new))

    def open_one(node: Node):
        try:
            return factory(node, known_by_path[node.ssh.known_hosts])
        except AscendRunError as exc:
            return exc
        except Exception as exc:  # unexpected library errors still name the node
            return TransportError(f"{type(exc).__name__}: {exc}", host=node.name)

    with ThreadPoolExecutor(max_workers=max(1, min(parallelism, len(nodes)))) as pool:
        return dict(zip([n.name for n in nodes], pool.map(open_one, nodes)))


def connect_all(dep: Deployment, *, accept_new: bool = False, parallelism: int = DEFAULT_PARALLELISM,
                nodes: list[Node] | None = None, factory: Factory = ssh_factory) -> dict[str, object]:
    """Transports by node name; if any node cannot be reached, close the others and raise its error."""
    results = connect_each(dep, accept_new=accept_new, parallelism=parallelism, nodes=nodes, factory=factory)
    failures = [v for v in results.values() if isinstance(v, BaseException)]
    if failures:
        for value in results.values():
            if not isinstance(value, BaseException):
                value.close()
        if len(failures) > 1:
            others = ", ".join(getattr(f, "host", "?") or "?" for f in failures[1:6])
            failures[0].message += f" (also unreachable: {others}{', …' if len(failures) > 6 else ''})"
            failures[0].args = (str(failures[0]),)
        raise failures[0]
    return results
