"""What the SSH connections of one command share: known_hosts parsed once, keys checked before anything is
contacted, and one connection per jump host for every server behind it.

Behind a login node, 128 servers cost one SSH connection to the login node plus one `direct-tcpip` channel
per server over it (what OpenSSH's ControlMaster does for `ssh -J`), not 128 logins on the login node. Every
hop still verifies its own host key against known_hosts: the jump host's when the shared connection is
made, each server's inside its own channel.

The jump connections live as long as anything uses them: the connector's owner (the fan-out that made it)
holds one reference, every node transport made through it another; the last release closes them.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field

from ascend_run.errors import HostKeyError, TransportError
from ascend_run.inputs.sshconfig import SSHHop
from ascend_run.transport.ssh import KnownHosts, SSHTransport, Tunnel, check_keys


@dataclass
class _Jump:
    ready: threading.Event = field(default_factory=threading.Event)
    transport: SSHTransport | None = None
    error: BaseException | None = None


class Connector:
    """Makes SSH transports for hops; see the module docstring. `release()` once when done making them."""

    def __init__(self, accept_new: bool = False) -> None:
        self.accept_new = accept_new  # --accept-new-host-keys: for every hop, whatever the ssh config says
        self._lock = threading.Lock()
        self._known: dict[tuple[str, ...], KnownHosts] = {}
        self._jumps: dict[SSHHop, _Jump] = {}
        self._refs = 1  # the owner's
        self.jump_connections = 0  # how many jump-host connections were made (tests and benchmarks read it)

    def check_keys(self, hops: Iterable[SSHHop]) -> None:
        """Load every key every hop needs (jump hosts included) or raise one error naming the file, before
        any server is contacted: a missing key is a local mistake, not 128 unreachable nodes."""
        seen: set[tuple[tuple[str, ...], str]] = set()
        for hop in {h for node in hops for h in node.chain()}:
            key = (hop.identity_files, hop.identity_source)
            if key not in seen:
                seen.add(key)
                check_keys(hop.identity_files, hop.identity_source)

    def known_hosts(self, hop: SSHHop) -> KnownHosts:
        with self._lock:
            if hop.known_hosts not in self._known:
                self._known[hop.known_hosts] = KnownHosts(hop.known_hosts, self.accept_new)
            return self._known[hop.known_hosts]

    def connect(self, hop: SSHHop, name: str) -> SSHTransport:
        """A transport to `hop` (through its jump hosts), named `name` in errors; close() releases it."""
        return self._connect(hop, name, counted=True)

    def _connect(self, hop: SSHHop, name: str, counted: bool) -> SSHTransport:
        tunnel = self._tunnel(hop.via, name) if hop.via is not None else None
        if counted:
            with self._lock:
                self._refs += 1
        return SSHTransport(hop.hostname, port=hop.port, user=hop.user, key_files=hop.identity_files,
                            key_source=hop.identity_source, known_hosts=self.known_hosts(hop),
                            connect_timeout=hop.connect_timeout, name=name, accept_new=hop.accept_new,
                            tunnel=tunnel, on_close=self.release if counted else None)

    def _tunnel(self, via: SSHHop, name: str) -> Tunnel:
        try:
            jump = self._jump(via)
        except TransportError as exc:  # every server behind it fails the same way: say which jump host
            kind = HostKeyError if isinstance(exc, HostKeyError) else TransportError
            raise kind(exc.message, host=name, fix=exc.fix) from None
        return Tunnel(via=via.name, open=jump.open_tunnel)

    def _jump(self, hop: SSHHop) -> SSHTransport:
        """The one connection to this jump host: made by the first server that needs it, waited for by the
        others; a failure is kept and given to all of them (a dead login node is tried once, not 128 times)."""
        with self._lock:
            entry = self._jumps.get(hop)
            mine = entry is None
            if mine:
                entry = self._jumps[hop] = _Jump()
        if mine:
            try:
                entry.transport = self._connect(hop, f"jump host {hop.name}", counted=False)
                with self._lock:
                    self.jump_connections += 1
            except BaseException as exc:  # noqa: BLE001 - handed to every waiter below
                entry.error = exc
            finally:
                entry.ready.set()
        entry.ready.wait()
        if entry.error is not None:
            raise entry.error
        return entry.transport

    def release(self) -> None:
        """Drop one reference; the last one closes the jump-host connections."""
        with self._lock:
            self._refs -= 1
            if self._refs > 0:
                return
            jumps, self._jumps = list(self._jumps.values()), {}
        for entry in jumps:
            if entry.transport is not None:
                entry.transport.close()
