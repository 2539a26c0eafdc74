"""Do something on every node at once: bounded parallelism, connection setup inside the parallel part,
and every node's result or exception kept (a fleet of 128 must never report 127 lines and lose one).

The default parallelism (256) puts 128 nodes in one wave: the work is waiting on the network and on
sshd, so threads are enough; the client's CPU cost per node is what the SSH transport minimises.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from ascend_run.errors import AscendRunError, TransportError
from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.transport.base import Result, Transport, command_line
from ascend_run.transport.connector import Connector

DEFAULT_PARALLELISM = 256

T = TypeVar("T")
# Builds the transport of one node from what the command's connections share (known_hosts, jump hosts);
# tests inject their own (a LocalTransport, a recorder, ...).
Factory = Callable[[Node, Connector], Transport]


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """One node's value, or the exception that stopped it (always an AscendRunError naming the node)."""

    node: Node
    value: T | None = None
    error: AscendRunError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


Progress = Callable[[Outcome, int, int], None]  # (outcome just finished, finished so far, total)


def ssh_factory(node: Node, connector: Connector) -> Transport:
    """SSH to the node as its resolved settings say (ssh config and deployment file), jump hosts shared."""
    return connector.connect(node.ssh, node.name)


def _connector(nodes: Sequence[Node], accept_new: bool, ssh: bool) -> Connector:
    connector = Connector(accept_new)
    if ssh:  # SSH as the deployment says (not a factory given by a test)
        connector.check_keys(n.ssh for n in nodes)  # one clear error before any node is contacted
    return connector


def _as_error(node: Node, exc: BaseException) -> AscendRunError:
    if isinstance(exc, AscendRunError):
        return exc
    return TransportError(f"{type(exc).__name__}: {exc}", host=node.name)  # library bugs still name the node


def fan_out(nodes: Sequence[Node], func: Callable[[Node], T], *, parallelism: int = DEFAULT_PARALLELISM,
            on_done: Progress | None = None) -> list[Outcome[T]]:
    """`func(node)` for every node, at most `parallelism` at a time; outcomes in the nodes' order.

    Exceptions are caught per node. `on_done` is called from the calling thread as each node finishes
    (e.g. for a progress line). The workers are daemon threads, not a ThreadPoolExecutor: its workers are
    joined at interpreter exit, so Ctrl-C during `exec -- sleep 1000` would wait for every node; here
    KeyboardInterrupt reaches the caller at once and the process can exit.
    """
    nodes = list(nodes)
    if parallelism < 1:
        raise ValueError("parallelism must be at least 1")
    if not nodes:
        return []
    todo: queue.SimpleQueue[tuple[int, Node]] = queue.SimpleQueue()
    done: queue.SimpleQueue[tuple[int, Outcome[T]]] = queue.SimpleQueue()
    for item in enumerate(nodes):
        todo.put(item)

    def worker() -> None:
        while True:
            try:
                index, node = todo.get_nowait()
            except queue.Empty:
                return
            try:
                outcome = Outcome(node, value=func(node))
            except BaseException as exc:  # noqa: BLE001 - collected with the node's name, reported by the caller
                outcome = Outcome(node, error=_as_error(node, exc))
            done.put((index, outcome))

    for _ in range(min(parallelism, len(nodes))):
        threading.Thread(target=worker, name="fanout", daemon=True).start()
    outcomes: dict[int, Outcome[T]] = {}
    while len(outcomes) < len(nodes):
        try:
            index, outcome = done.get(timeout=0.5)  # a timeout keeps Ctrl-C prompt
        except queue.Empty:
            continue
        outcomes[index] = outcome
        if on_done is not None:
            on_done(outcome, len(outcomes), len(nodes))
    return [outcomes[i] for i in range(len(nodes))]


def connect_each(dep: Deployment, *, accept_new: bool = False, parallelism: int = DEFAULT_PARALLELISM,
                 nodes: Sequence[Node] | None = None, factory: Factory | None = None,
                 on_done: Progress | None = None) -> dict[str, Transport | AscendRunError]:
    """A transport or the error that prevented it, by node name: every node is tried, none is lost."""
    nodes = list(nodes if nodes is not None else dep.nodes)
    connector = _connector(nodes, accept_new, ssh=factory is None)
    factory = factory or ssh_factory  # looked up now, so a test can swap the module's factory
    try:
        outcomes = fan_out(nodes, lambda n: factory(n, connector), parallelism=parallelism, on_done=on_done)
    finally:
        connector.release()  # the jump hosts stay open while a transport made through them is
    return {o.node.name: o.value if o.ok else o.error for o in outcomes}


def connect_all(dep: Deployment, *, accept_new: bool = False, parallelism: int = DEFAULT_PARALLELISM,
                nodes: Sequence[Node] | None = None, factory: Factory | None = None) -> dict[str, Transport]:
    """Transports by node name, for steps that need every node. If any node cannot be reached, close
    the others and raise the first node's error, naming the other unreachable nodes too."""
    results = connect_each(dep, accept_new=accept_new, parallelism=parallelism, nodes=nodes, factory=factory)
    failures = [v for v in results.values() if isinstance(v, BaseException)]
    if failures:
        close_all(v for v in results.values() if not isinstance(v, BaseException))
        raise first_error(failures, "unreachable")
    return results


def raise_first(outcomes: Iterable[Outcome]) -> None:
    """Raise the first failed node's error (it names the node), naming the other failed nodes too."""
    failures = [o.error for o in outcomes if not o.ok]
    if failures:
        raise first_error(failures, "failed")


def values_or_raise(outcomes: Iterable[Outcome[T]]) -> dict[str, T]:
    """{node name: value} when every node succeeded; else the first node's error (see raise_first)."""
    outcomes = list(outcomes)
    raise_first(outcomes)
    return {o.node.name: o.value for o in outcomes}


def first_error(failures: list[AscendRunError], what: str) -> AscendRunError:
    """The first node's error, its message naming the other nodes that are `what` too."""
    first = failures[0]
    if len(failures) > 1:
        others = [getattr(f, "host", None) or "?" for f in failures[1:]]
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        first.message += f" (also {what}: {shown})"
        first.args = (str(first),)
    return first


def close_all(transports: Iterable[Transport] | Mapping[str, Transport]) -> None:
    """Close every transport; a failure to close one never stops the others from closing."""
    for transport in transports.values() if isinstance(transports, Mapping) else transports:
        try:
            transport.close()
        except Exception:  # noqa: BLE001,S110 - closing is best effort
            pass


def run_on_nodes(nodes: Sequence[Node], argv: Sequence[str], *, env: Mapping[str, str] | None = None,
                 timeout: float | None = None, accept_new: bool = False,
                 parallelism: int = DEFAULT_PARALLELISM, factory: Factory | None = None,
                 on_done: Progress | None = None,
                 output_to: Callable[[Node], tuple[Callable[[bytes], None], Callable[[bytes], None]]] | None = None
                 ) -> list[Outcome[Result]]:
    """Connect, run one command and disconnect on every node, all inside the parallel part (`exec`).

    A node's Outcome holds its Result (whatever the exit code) or the error that kept the command from
    running there (unreachable, unknown host key, ...). With `output_to`, each node's stdout and stderr go as they
    arrive to the two functions `output_to(node)` returns (`exec --prefix`), not into its Result.
    """
    command_line(argv, env)  # a bad command or env name fails here, before any node is contacted
    connector = _connector(nodes, accept_new, ssh=factory is None)
    factory = factory or ssh_factory

    def one(node: Node) -> Result:
        transport = factory(node, connector)
        try:
            if output_to is None:
                return transport.run(argv, env=env, timeout=timeout)
            on_stdout, on_stderr = output_to(node)
            return transport.run(argv, env=env, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr)
        finally:
            transport.close()

    try:
        return fan_out(nodes, one, parallelism=parallelism, on_done=on_done)
    finally:
        connector.release()
