"""One payload to many servers in about the time of one: a pipelined, verified broadcast through relays.

The source (this machine's stream, e.g. `docker save`, or files on node 0) is read once into a chain of
servers (`chain.py`); every server runs a small relay (`relay_agent.py`, started over the kit's own SSH
connection to it) that stores what arrives and serves it to the next server while it is still arriving.
Each byte crosses each link once, and this machine sends the payload once, not once per server.

Trust stays where it was. Servers never SSH to each other: the kit starts every relay itself, on the
cluster network (`node.cluster_address`), with a one-time secret for this transfer that travels only over
SSH; relays prove it to each other (HMAC over fresh nonces) before a byte flows, listen only while the
transfer runs and exit when it ends. Nothing a relay receives is trusted: each receiver checks its copy
against sha256 digests that came from the kit over SSH (per file, or the whole stream's, which the kit
computes as it reads the source), so a damaged or altered byte anywhere fails that server. The node-to-node
hop is not encrypted by default (see docs/broadcast.md); `encrypt=True` wraps it in TLS with a key made
for this transfer and pinned by the kit.

A server lost mid-transfer (its relay or its SSH connection gone) does not strand the ones behind it: each
is fed again by the nearest holder before it in the chain, from the byte it had reached. The result is
one state per server; `BroadcastError` names every server that could not be served.
"""

from __future__ import annotations

import hashlib
import hmac
import queue
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from ascend_run.errors import TransportError
from ascend_run.inputs.deployment import Node
from ascend_run.transport.base import Transport
from ascend_run.transport.chain import THIS_MACHINE, choose_upstream, describe
from ascend_run.transport.relay import RelaySession, SessionClosed, agent_source, ephemeral_tls, gone_reason

START_TIMEOUT_S = 60   # for every relay to be listening
RETRY_S = 1.0          # before pulling again from an upstream that dropped the connection but is still there
MAX_TRIES = 3          # connection failures from one upstream before the server is fed by the one before it
EXIT_WAIT_S = 30       # for the relays to exit at the end
PROGRESS_S = 0.2


@dataclass(frozen=True)
class StagedFile:
    """The stream lands in one file on the server (an image's `docker save`), kept only when it is whole;
    the caller verifies nothing more: `NodeState.ok` means its sha256 equals that of what was sent."""

    path: str


@dataclass(frozen=True)
class FileEntry:
    name: str     # relative path under the directory
    size: int
    sha256: str


@dataclass(frozen=True)
class FileSet:
    """The stream is these files one after the other, under `directory`. A receiver writes those named in
    `write` (None: all), each renamed into place once its sha256 matches; it forwards all of them (the
    others it already holds, identical). The source (`source=True`) serves them from where they are."""

    directory: str
    files: tuple[FileEntry, ...]
    write: frozenset[str] | None = None
    source: bool = False

    @property
    def size(self) -> int:
        return sum(f.size for f in self.files)


@dataclass(frozen=True)
class Member:
    """A server taking part: its transport starts its relay; `store` is where the stream goes (or comes from)."""

    node: Node
    transport: Transport
    store: StagedFile | FileSet


@dataclass(frozen=True)
class LocalStream:
    """The payload as this machine reads it. `open()` must yield the same bytes each time it is called: a
    server that loses the first server of the chain is fed again from here, from where it stopped."""

    open: Callable[[], Iterable[bytes]]
    size: int | None = None  # expected size, for progress


FINAL = ("done", "failed")


@dataclass
class NodeState:
    """One receiver, as the transfer sees it; `phase` is starting, waiting, receiving, verifying, done or
    failed. `upstream` is the member it is fed by (or THIS_MACHINE)."""

    name: str
    phase: str = "starting"
    bytes: int = 0
    upstream: str | None = None
    feeds: int = 0
    error: str | None = None
    sha256: str | None = None
    bad: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.phase == "done"


@dataclass(frozen=True)
class Progress:
    """What a progress display needs: bytes per server (None until known), the chain, every receiver."""

    size: int | None
    chain: tuple[str, ...]
    nodes: tuple[NodeState, ...]

    @property
    def done_bytes(self) -> int:
        return sum(n.bytes for n in self.nodes)


class BroadcastError(TransportError):
    """Some servers could not be served; `states` holds every receiver's outcome (the others are complete)."""

    def __init__(self, message: str, states: Sequence[NodeState], fix: str | None = None) -> None:
        self.states = list(states)
        super().__init__(message, fix=fix)


def broadcast(receivers: Sequence[Member], source: Member | LocalStream, *, encrypt: bool = False,
              on_progress: Callable[[Progress], None] | None = None,
              agent: Callable[[Node], bytes] | None = None, start_timeout: float = START_TIMEOUT_S
              ) -> list[NodeState]:
    """Send the source's payload to every receiver through a chain of relays; one state per receiver,
    in order. Raises only for the transfer as a whole (the source failed); servers that could not be
    served come back with phase "failed" and an error (`raise_unserved` makes that an exception).

    `agent` gives the relay program for a node (tests swap in one that misbehaves).
    """
    if not receivers:
        return []
    code = agent_source()
    run = _Transfer(list(receivers), source, encrypt, on_progress or (lambda p: None),
                    agent or (lambda node: code), start_timeout)
    return run.run()


def raise_unserved(states: Sequence[NodeState], what: str) -> None:
    """A BroadcastError naming every server that was not served, with why; nothing if all were."""
    failed = [s for s in states if not s.ok]
    if not failed:
        return
    served = len(states) - len(failed)
    lines = "; ".join(f"{s.name}: {s.error}" for s in failed[:8])
    more = f" (and {len(failed) - 8} more)" if len(failed) > 8 else ""
    raise BroadcastError(f"{what}: {len(failed)} of {len(states)} server(s) not served ({served} complete and "
                         f"verified): {lines}{more}", states,
                         fix="fix the cause on the servers named, then run the same command again: servers "
                             "that are complete are skipped")


class _Transfer:
    """The kit's side of one broadcast: starts the relays, wires the chain, re-feeds, verifies, stops."""

    def __init__(self, receivers: list[Member], source: Member | LocalStream, encrypt: bool,
                 on_progress: Callable[[Progress], None], agent: Callable[[Node], bytes],
                 start_timeout: float) -> None:
        self.tid, self.secret = secrets.token_hex(8), secrets.token_hex(32)
        self.tls = ephemeral_tls() if encrypt else None
        self.members = {m.node.name: m for m in receivers}
        self.source = source
        if isinstance(source, Member):
            self.members[source.node.name] = source
            self.order = [source.node.name, *(m.node.name for m in receivers)]
        else:
            self.order = [THIS_MACHINE, *(m.node.name for m in receivers)]
        self.states = {m.node.name: NodeState(m.node.name) for m in receivers}
        self.events: queue.Queue = queue.Queue()
        self.sessions = {name: RelaySession(name, m.transport, self._config(m), agent(m.node), self.events)
                         for name, m in self.members.items()}
        self.on_progress, self.start_timeout = on_progress, start_timeout
        self.ports: dict[str, int] = {}
        self.lost: set[str] = set()
        self.avoid: dict[str, set[str]] = {name: set() for name in self.states}
        self.tries: Counter = Counter()
        self.retrying: set[str] = set()
        self.feeders: dict[str, threading.Event] = {}
        self.errors: dict[str, str] = {}                  # by node: what its relay said before it ended
        self.pull_errors: dict[tuple[str, str], str] = {}  # (server, upstream): why pulling failed
        self.truth: tuple[int, str] | None = None
        self.damaged: dict[str, str] = {}                 # by node: why its copy failed verification
        self.fatal: Exception | None = None
        self.wired = False
        self._last_progress = 0.0

    def _config(self, member: Member) -> dict:
        store = member.store
        if isinstance(store, StagedFile):
            spec: dict = {"kind": "file", "path": store.path}
        else:
            spec = {"kind": "files", "dir": store.directory, "source": store.source, "tag": self.tid,
                    "files": [[f.name, f.size, f.sha256, store.write is None or f.name in store.write]
                              for f in store.files]}
        return {"transfer": self.tid, "secret": self.secret, "node": member.node.name,
                "listen": member.node.cluster_address, "store": spec, "tls": self.tls}

    # --- the run ------------------------------------------------------------------------------------------

    def run(self) -> list[NodeState]:
        for session in self.sessions.values():
            session.start()
        deadline = time.monotonic() + self.start_timeout
        try:
            while not all(s.phase in FINAL for s in self.states.values()):
                if self.fatal is not None:
                    raise self.fatal
                if not self.wired and (self._all_started() or time.monotonic() > deadline):
                    self._wire()
                try:
                    name, event = self.events.get(timeout=0.2)
                except queue.Empty:
                    self._progress()
                    continue
                self._handle(name, event)
                self._progress()
            self._name_culprits()
            self._progress(force=True)
            return [self.states[name] for name in self.order if name in self.states]
        finally:
            self._stop_all()

    def _all_started(self) -> bool:
        return all(name in self.ports or name in self.lost for name in self.members)

    def _wire(self) -> None:
        """Every relay is listening (or gone, or too slow to start): each server pulls from the one before."""
        self.wired = True
        for name in self.members:
            if name not in self.ports and name not in self.lost:
                self._lose(name, f"its relay did not start within {self.start_timeout:g} s")
        if isinstance(self.source, Member) and self.source.node.name in self.lost:
            name = self.source.node.name
            raise TransportError(f"the source cannot serve: {self.errors.get(name, 'its relay is gone')}", host=name)
        for name, state in self.states.items():
            if state.phase not in FINAL:
                self._feed(name)

    def _feed(self, name: str) -> None:
        """Feed `name` from the nearest holder before it that can serve."""
        state = self.states[name]
        self.retrying.discard(name)
        upstream = choose_upstream(self.order, name, self.lost | self.avoid[name])
        if upstream is None:
            why = [f"{n} lost" if n in self.lost
                   else f"{n} failed it {MAX_TRIES} times: {self.pull_errors.get((name, n))}"
                   for n in self.order[:self.order.index(name)]]
            self._fail(name, f"no server before it in the chain can feed it ({'; '.join(why)})")
            return
        state.upstream, state.feeds = upstream, state.feeds + 1
        try:
            if upstream == THIS_MACHINE:
                self.sessions[name].send({"op": "feed"})  # answered by a "feed" event with its offset
            else:
                self.sessions[name].send({"op": "pull", "host": self.members[upstream].node.cluster_address,
                                          "port": self.ports[upstream], "name": upstream})
        except SessionClosed:
            pass  # its "gone" event follows

    # --- events -------------------------------------------------------------------------------------------

    def _handle(self, name: str, event: dict) -> None:
        kind = event.get("event")
        state = self.states.get(name)
        if kind == "listening":
            self.ports[name] = int(event["port"])
            if state is not None and state.phase == "starting":
                state.phase = "waiting"
        elif kind == "have" and state is not None and state.phase in ("waiting", "receiving"):
            state.bytes, state.phase = int(event["bytes"]), "receiving"
        elif kind == "upstream" and state is not None and state.phase not in FINAL:
            if event.get("state") == "lost":
                state.bytes = int(event.get("bytes", state.bytes))
                self._upstream_lost(name, str(event.get("name")), str(event.get("error")))
            else:
                state.phase = "receiving"
        elif kind == "feed" and state is not None and state.phase not in FINAL:
            self._start_feeder(name, int(event["bytes"]))
        elif kind == "fed":
            self._fed(name, int(event["total"]), str(event["sha256"]))
        elif kind == "source-failed":
            self.fatal = TransportError(f"reading the payload on this machine failed: {event['error']}")
        elif kind == "complete" and state is not None and state.phase not in FINAL:
            state.bytes, state.sha256, state.bad = int(event["bytes"]), event.get("sha256"), event.get("bad") or []
            state.phase = "verifying"
            self._verify(name)
        elif kind == "error":
            self.errors[name] = str(event.get("message"))
        elif kind == "retry" and name in self.retrying and state is not None and state.phase not in FINAL:
            self._feed(name)
        elif kind == "gone":
            self._gone(name, event)

    def _upstream_lost(self, name: str, upstream: str, error: str) -> None:
        if upstream != self.states[name].upstream:
            return  # a feed that was already replaced
        if upstream not in self.lost:
            self.tries[(name, upstream)] += 1
            if self.tries[(name, upstream)] < MAX_TRIES:
                self.retrying.add(name)  # it may be a passing failure, or its "gone" event is on the way
                timer = threading.Timer(RETRY_S, self.events.put, args=((name, {"event": "retry"}),))
                timer.daemon = True
                timer.start()
                return
            self.avoid[name].add(upstream)
            self.pull_errors[(name, upstream)] = error
        self._feed(name)

    def _gone(self, name: str, event: dict) -> None:
        """A relay's session ended before the kit asked it to: the server is lost as a holder."""
        self.lost.add(name)
        self._stop_feeder(name)
        reason = gone_reason(event, self.errors.get(name))
        state = self.states.get(name)
        staged = isinstance(self.members[name].store, StagedFile)
        if state is not None and (state.phase not in FINAL or (state.phase == "done" and staged)):
            # a staged file is deleted when its relay ends unasked; verified files are already in place
            self._fail(name, reason if state.phase != "done" else f"{reason} (after it had everything)")
        if not self.wired:
            return
        for orphan, other in self.states.items():
            if other.upstream == name and other.phase not in FINAL:
                self._feed(orphan)

    def _lose(self, name: str, reason: str) -> None:
        self.errors.setdefault(name, reason)
        self.lost.add(name)
        if name in self.states and self.states[name].phase not in FINAL:
            self._fail(name, reason)

    def _fail(self, name: str, reason: str) -> None:
        state = self.states[name]
        state.phase, state.error = "failed", reason
        self._stop_feeder(name)
        self.lost.add(name)  # it serves no one from now on
        self._exit(name, keep=False)
        for orphan, other in self.states.items():
            if self.wired and other.upstream == name and other.phase not in FINAL:
                self._feed(orphan)

    # --- verification -------------------------------------------------------------------------------------

    def _verify(self, name: str) -> None:
        state, store = self.states[name], self.members[name].store
        if isinstance(store, FileSet):
            if state.bad:
                self._damaged(name, f"sha256 mismatch in {len(state.bad)} file(s): {', '.join(state.bad[:3])}")
            else:
                state.phase = "done"
            return
        if self.truth is None:
            return  # this machine has not finished reading the stream: verified when it has
        total, digest = self.truth
        if state.bytes == total and hmac.compare_digest(state.sha256 or "", digest):
            state.phase = "done"
        else:
            self._damaged(name, f"received {state.bytes} bytes with sha256 {(state.sha256 or '?')[:16]}…, "
                                f"sent {total} bytes with sha256 {digest[:16]}…")

    def _damaged(self, name: str, detail: str) -> None:
        self.damaged[name] = detail
        self._fail(name, detail)

    def _name_culprits(self) -> None:
        """At the end, name the likely culprit of each damaged copy: the upstream whose own copy verified.
        Not when the damage is found: the upstream's own verdict may still be on its way (its relay's
        "complete" event can reach the kit after the one of the server behind it)."""
        for name, detail in self.damaged.items():
            state = self.states[name]
            upstream = state.upstream
            if state.error == detail and upstream in self.states and self.states[upstream].ok:
                state.error = (f"{detail} (data from {upstream}, whose own copy verified: its relay or the "
                               "link altered it)")

    # --- feeding from this machine ------------------------------------------------------------------------

    def _start_feeder(self, name: str, offset: int) -> None:
        assert isinstance(self.source, LocalStream)
        self._stop_feeder(name)
        stop = self.feeders[name] = threading.Event()
        session, source, events = self.sessions[name], self.source, self.events

        def feed() -> None:
            digest, at = hashlib.sha256(), 0
            try:
                for chunk in source.open():
                    if stop.is_set():
                        return
                    digest.update(chunk)
                    if at + len(chunk) > offset:
                        skip = max(offset - at, 0)
                        session.send({"op": "data", "offset": at + skip, "n": len(chunk) - skip}, chunk[skip:])
                    at += len(chunk)
            except SessionClosed:
                return
            except Exception as exc:  # noqa: BLE001 - the source itself failed: the transfer cannot go on
                events.put((name, {"event": "source-failed", "error": f"{type(exc).__name__}: {exc}"}))
                return
            if not stop.is_set():
                events.put((name, {"event": "fed", "total": at, "sha256": digest.hexdigest()}))

        threading.Thread(target=feed, name=f"feed-{name}", daemon=True).start()

    def _fed(self, name: str, total: int, digest: str) -> None:
        if self.truth is None:
            self.truth = (total, digest)
            for other, state in self.states.items():
                if state.phase == "verifying":
                    self._verify(other)
        elif self.truth != (total, digest):
            self.fatal = TransportError("the payload read twice on this machine differed (the source changed "
                                        "during the transfer)", fix="run the command again")
            return
        if self.states[name].phase not in FINAL:
            try:
                self.sessions[name].send({"op": "end", "total": total})
            except SessionClosed:
                pass

    def _stop_feeder(self, name: str) -> None:
        stop = self.feeders.pop(name, None)
        if stop is not None:
            stop.set()

    # --- the end ------------------------------------------------------------------------------------------

    def _exit(self, name: str, keep: bool) -> None:
        session = self.sessions[name]
        if session.ended.is_set():
            return
        try:
            session.send({"op": "exit", "keep": keep})
        except SessionClosed:
            pass
        session.close_input()

    def _stop_all(self) -> None:
        """Every relay stops listening and exits; a staged file is kept only where it was verified."""
        for name in list(self.feeders):
            self._stop_feeder(name)
        for name in self.sessions:
            state = self.states.get(name)
            self._exit(name, keep=state is not None and state.ok)
        deadline = time.monotonic() + EXIT_WAIT_S
        for session in self.sessions.values():
            session.ended.wait(max(0.0, deadline - time.monotonic()))

    def _progress(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._last_progress < PROGRESS_S:
            return
        self._last_progress = now
        if isinstance(self.source, Member):
            size: int | None = self.source.store.size if isinstance(self.source.store, FileSet) else None
        else:
            size = self.truth[0] if self.truth else self.source.size
        self.on_progress(Progress(size, tuple(self.order), tuple(self.states.values())))


def chain_text(receivers: Sequence[Member], source: Member | LocalStream) -> str:
    """The chain a broadcast would use, for dry runs and messages."""
    head = source.node.name if isinstance(source, Member) else THIS_MACHINE
    return describe([head, *(m.node.name for m in receivers)])
