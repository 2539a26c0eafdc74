"""SSH to a node with paramiko: one connection per node, reused by every command of an ascend-run call.

Host keys are always verified against known_hosts. An unknown key is an error with the exact fix, unless
the caller asked to record new keys (`accept_new`); a changed key is an error in every mode. The key file
and the parsed known_hosts are loaded once and shared by all connections (parsing known_hosts per client
costs ~5 ms of CPU each, which adds up at 128 nodes).
"""

from __future__ import annotations

import os
import select
import socket
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import lru_cache
from pathlib import Path

import paramiko

from ascend_run.errors import HostKeyError, TransportError
from ascend_run.transport.base import Result, Stdin, command_line

KEEPALIVE_S = 15
_known_hosts_lock = threading.Lock()


def _fingerprint(key: paramiko.PKey) -> str:
    import base64
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def host_key_name(host: str, port: int) -> str:
    """known_hosts spells non-22 ports as [host]:port."""
    return host if port == 22 else f"[{host}]:{port}"


class KnownHosts:
    """One parsed known_hosts file shared by every connection; optionally records new keys."""

    def __init__(self, path: str | Path, accept_new: bool = False) -> None:
        self.path = Path(os.path.expanduser(str(path)))
        self.accept_new = accept_new
        self.keys = paramiko.HostKeys()
        if self.path.is_file():
            self.keys.load(str(self.path))

    def policy(self) -> paramiko.MissingHostKeyPolicy:
        return _Policy(self)

    def record(self, name: str, key: paramiko.PKey) -> None:
        with _known_hosts_lock:
            self.keys.add(name, key.get_name(), key)
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")


class _Policy(paramiko.MissingHostKeyPolicy):
    def __init__(self, known: KnownHosts) -> None:
        self.known = known

    def missing_host_key(self, client, hostname, key) -> None:
        if self.known.accept_new:
            self.known.record(hostname, key)
            return
        raise HostKeyError(
            f"unknown host key ({key.get_name()} {_fingerprint(key)}), not in {self.known.path}",
            host=hostname,
            fix=f"check the fingerprint with the server's owner, then `ssh-keyscan -p PORT HOST >> "
                f"{self.known.path}`, or run once with --accept-new-host-keys")


@lru_cache(maxsize=None)
def load_key(path: str) -> paramiko.PKey:
    """The private key, loaded once per process (ed25519, ECDSA or RSA)."""
    full = os.path.expanduser(path)
    try:
        return paramiko.PKey.from_path(full)
    except FileNotFoundError:
        raise TransportError(f"SSH key {full} not found", fix="set ssh.identity_file in the deployment file") from None
    except paramiko.SSHException as exc:
        raise TransportError(f"cannot load SSH key {full}: {exc}",
                             fix="use an unencrypted key or load it into ssh-agent") from None


class SSHTransport:
    """Commands on one node over one paramiko connection (many channels, one TCP/SSH session)."""

    def __init__(self, host: str, *, port: int = 22, user: str = "root", key_file: str | None = None,
                 known_hosts: KnownHosts, connect_timeout: float = 10.0, retries: int = 3,
                 name: str | None = None) -> None:
        self.host = name or host
        self.address, self.port, self.user = host, port, user
        self._client = paramiko.SSHClient()
        self._client._host_keys = known_hosts.keys  # shared, parsed once (SSHClient has no public setter)
        self._client.set_missing_host_key_policy(known_hosts.policy())
        pkey = load_key(key_file) if key_file else None
        self._connect(pkey, connect_timeout, retries)

    def _connect(self, pkey, timeout: float, retries: int) -> None:
        delay = 0.5
        for attempt in range(retries + 1):
            try:
                self._client.connect(self.address, port=self.port, username=self.user, pkey=pkey, timeout=timeout,
                                     banner_timeout=timeout, auth_timeout=timeout, allow_agent=pkey is None,
                                     look_for_keys=pkey is None, compress=False)
                self._client.get_transport().set_keepalive(KEEPALIVE_S)
                return
            except HostKeyError:
                raise
            except paramiko.BadHostKeyException as exc:
                raise HostKeyError(
                    f"host key CHANGED: known {_fingerprint(exc.expected_key)}, offered {_fingerprint(exc.key)}",
                    host=self.host, fix="if the server was reinstalled, remove its old line from known_hosts "
                                        "(ssh-keygen -R HOST); otherwise treat it as an attack") from None
            except paramiko.AuthenticationException as exc:
                raise TransportError(f"authentication as {self.user} failed: {exc}", host=self.host,
                                     fix="check ssh.user and ssh.identity_file, and the node's authorized_keys") from None
            except (OSError, socket.timeout, paramiko.SSHException, EOFError) as exc:
                if attempt == retries:
                    raise TransportError(f"cannot connect to {self.address}:{self.port}: {exc or type(exc).__name__}",
                                         host=self.host,
                                         fix="check the address, that sshd runs, and the firewall") from None
                time.sleep(delay)
                delay *= 2

    def _channel(self):
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise TransportError("SSH connection lost", host=self.host)
        try:
            return transport.open_session(timeout=30)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"SSH connection lost: {exc}", host=self.host) from None

    def _alive(self) -> bool:
        transport = self._client.get_transport()
        return transport is not None and transport.is_active()

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None) -> Result:
        chan = self._channel()
        chan.exec_command(command_line(argv, env))
        writer = self._feed(chan, stdin)
        out, err = bytearray(), bytearray()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if chan.recv_ready():
                out += chan.recv(1 << 16)
                continue
            if chan.recv_stderr_ready():
                err += chan.recv_stderr(1 << 16)
                continue
            if chan.exit_status_ready() and chan.eof_received:
                break
            if not self._alive() or (chan.closed and not chan.exit_status_ready()):
                raise TransportError(f"SSH connection lost while running {argv[0]}", host=self.host)
            if deadline is not None and time.monotonic() > deadline:
                chan.close()
                return Result(124, out.decode(errors="replace"), err.decode(errors="replace") + "\n(timed out)")
            select.select([chan], [], [], 0.2)
        rc = chan.recv_exit_status()
        chan.close()
        if writer is not None:
            writer.join(timeout=5)
        return Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))

    def _feed(self, chan, stdin: Stdin) -> threading.Thread | None:
        if stdin is None:
            chan.shutdown_write()
            return None
        chunks: Iterable[bytes] = [stdin] if isinstance(stdin, bytes) else stdin

        def write() -> None:
            try:
                for chunk in chunks:
                    chan.sendall(chunk)
                chan.shutdown_write()
            except (OSError, EOFError, paramiko.SSHException):
                pass  # the reader reports the failure

        thread = threading.Thread(target=write, daemon=True)
        thread.start()
        return thread

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None) -> int:
        """Run and hand every output line (stdout and stderr merged) to `on_line`; the exit code."""
        chan = self._channel()
        chan.set_combine_stderr(True)
        chan.exec_command(command_line(argv, env))
        chan.shutdown_write()
        pending = b""
        while True:
            if chan.recv_ready():
                pending += chan.recv(1 << 16)
                *lines, pending = pending.split(b"\n")
                for line in lines:
                    on_line(line.decode(errors="replace").rstrip("\r"))
                continue
            if chan.exit_status_ready() and chan.eof_received:
                break
            if not self._alive():
                raise TransportError("SSH connection lost", host=self.host)
            select.select([chan], [], [], 0.2)
        if pending:
            on_line(pending.decode(errors="replace"))
        rc = chan.recv_exit_status()
        chan.close()
        return rc

    def put(self, src: str | Path, dst: str) -> None:
        with self._client.open_sftp() as sftp:
            sftp.put(str(src), dst)

    def get(self, src: str, dst: str | Path) -> None:
        with self._client.open_sftp() as sftp:
            sftp.get(src, str(dst))

    def close(self) -> None:
        self._client.close()
