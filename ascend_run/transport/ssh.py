"""SSH to a node with paramiko: one connection per node, reused by every command of an ascend-run call.

Host keys are always verified against known_hosts. An unknown key is an error with the exact fix, unless
the caller asked to record new keys (`accept_new`); a changed key is an error in every mode. Never
AutoAddPolicy: a fixed fleet of servers has stable keys, and a silent change is what an attack looks like.

At 128 nodes the client's CPU is the bottleneck (2 cores here, sshd wants ~17 ms per connection too), so
what can be done once is done once: the private key is loaded once per process, known_hosts is parsed once
into an index shared by every client (see KnownHosts: paramiko's own loading is quadratic), and paramiko's
default key exchange order already starts with the cheap curve25519. GSSAPI stays off (paramiko 3/4 only use it
when asked, 5 dropped it; OpenSSH's Debian default turns it on, and its Kerberos lookups cost seconds).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import select
import shlex
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from ascend_run.errors import ConfigError, HostKeyError, TransportError
from ascend_run.inputs.sshconfig import import_paramiko

paramiko = import_paramiko()  # without `invoke` (paramiko.config's `Match exec`): CLI start-up stays fast
from paramiko.hostkeys import HostKeyEntry  # noqa: E402

from ascend_run.transport.base import (  # noqa: E402
    RC_KILLED,
    RC_STOPPED,
    RC_TIMEOUT,
    Result,
    Stdin,
    command_line,
    split_lines,
)

KEEPALIVE_S = 15
WINDOW_BYTES = 64 << 20
# Bulk streams (image ship, weights spread) are CPU-bound in paramiko's per-packet Python code: 256 KiB
# packets (OpenSSH's own limit) instead of paramiko's 32 KiB, and AES-GCM (one pass, no separate HMAC)
# first, measured 2.6x (packets) and 4.5x (both) faster downloads over loopback (docs/benchmarks.md).
MAX_PACKET_BYTES = 256 << 10
SEND_SLICE = 128 << 10  # stdin goes to sendall in pieces this big (see _feed)
REKEY_BYTES = 1 << 32   # new session keys after this many bytes either way (see _bulk_transport)
PREFERRED_CIPHERS = ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com")
RETRIES = 2            # connection attempts after the first, for refused/reset/timed-out connects only
FIRST_BACKOFF_S = 0.25  # doubled after every failed attempt
POLL_S = 1.0           # longest wait between checks of a deadline or a stop request
KILL_AFTER_S = 5       # `timeout -k`: SIGKILL this long after the SIGTERM, for commands that ignore it
BACKSTOP_S = 10        # give up on a node that has not answered this long after its command's deadline


def fingerprint(key: paramiko.PKey) -> str:
    """`SHA256:…` as `ssh-keygen -lf` and `ssh` print it, so users can compare."""
    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


def host_key_name(host: str, port: int) -> str:
    """known_hosts spells non-22 ports as [host]:port."""
    return host if port == 22 else f"[{host}]:{port}"


def keyscan_command(host: str, port: int, known_hosts: Path, via: str | None = None) -> str:
    """The command that records a host's key; run on the jump host for a server reached through one."""
    argv = ["ssh-keyscan", *([] if port == 22 else ["-p", str(port)]), host]
    if via:  # the address and port are checked values, so the jump host's shell splits them back as they are
        argv = ["ssh", via, *argv]
    return f"{shlex.join(argv)} >> {shlex.quote(str(known_hosts))}"


class KnownHosts:
    """One known_hosts file, read and parsed once per process run and shared by every connection.

    paramiko's own `HostKeys` costs O(lines²) to load (each line is checked against all earlier ones:
    0.24 s of CPU for 128 lines here) and O(lines) per lookup, and each client re-parsing the file costs
    ~5 ms. So the file is parsed once into an index, and each connection gets a `paramiko.HostKeys` view
    holding only its own host's entries (paramiko then verifies exactly as usual, BadHostKeyException
    included). In accept-new mode, keys of unknown hosts are recorded thread-safely, each written once.
    Several files (ssh's `UserKnownHostsFile a b`) are read as one; new keys are written to the first.
    """

    def __init__(self, path: str | Path | Sequence[str | Path], accept_new: bool = False) -> None:
        paths = [path] if isinstance(path, (str, Path)) else list(path)
        self.paths = [Path(os.path.expanduser(str(p))) for p in paths]
        self.path = self.paths[0]
        self.accept_new = accept_new
        self._lock = threading.Lock()
        self._plain: dict[str, list[HostKeyEntry]] = {}
        self._hashed: list[HostKeyEntry] = []  # `ssh-keygen -H` / HashKnownHosts names: matched by HMAC
        for one in self.paths:
            if one.is_file():
                self._load(one)

    def _load(self, path: Path) -> None:
        with path.open() as fh:
            for number, line in enumerate(fh, 1):
                line = line.strip()
                if not line or line.startswith("#"):
                    continue
                try:
                    entry = HostKeyEntry.from_line(line, number)
                except paramiko.SSHException:
                    entry = None
                if entry is not None:  # None: a key type paramiko does not know, or @marker lines
                    self._index(entry)

    def _index(self, entry: HostKeyEntry) -> None:
        for name in entry.hostnames:
            if name.startswith("|1|"):
                self._hashed.append(entry)
            else:
                self._plain.setdefault(name, []).append(entry)

    def entries(self, name: str) -> list[HostKeyEntry]:
        """Entries for `name` as paramiko spells it (`host`, or `[host]:port` for ports other than 22)."""
        with self._lock:
            found = list(self._plain.get(name, ()))
            hashed = list(self._hashed)
        for entry in hashed:
            if entry not in found and any(h.startswith("|1|") and hmac.compare_digest(
                    paramiko.HostKeys.hash_host(name, h), h) for h in entry.hostnames):
                found.append(entry)
        return found

    def view(self, address: str, port: int) -> paramiko.HostKeys:
        """A HostKeys holding only this host's entries, for one SSHClient."""
        keys = paramiko.HostKeys()
        keys._entries = self.entries(host_key_name(address, port))  # no public bulk setter; add() would re-check
        return keys

    def record(self, name: str, key: paramiko.PKey) -> None:
        """Add `name key` (name as paramiko looks it up, e.g. `[10.0.0.1]:2222`) to the index and the file."""
        with self._lock:
            for entry in self._plain.get(name, ()):
                if entry.key.get_name() == key.get_name():
                    if entry.key != key:  # another connection recorded a different key for this name
                        raise _changed_key(name, name, entry.key, key, self.path)
                    return
            self._index(HostKeyEntry([name], key))
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with self.path.open("a") as fh:
                fh.write(f"{name} {key.get_name()} {key.get_base64()}\n")


class VerifyPolicy(paramiko.MissingHostKeyPolicy):
    """Called by paramiko only for hosts absent from known_hosts (a mismatch raises BadHostKeyException)."""

    def __init__(self, known: KnownHosts, node: str, address: str, port: int, accept_new: bool = False,
                 via: str | None = None) -> None:
        self.known, self.node, self.address, self.port = known, node, address, port
        self.accept_new = accept_new or known.accept_new
        self.via = via

    def missing_host_key(self, client, hostname, key) -> None:
        if self.accept_new:
            self.known.record(hostname, key)
            return
        raise HostKeyError(
            f"unknown host key for {hostname} ({key.get_name()} {fingerprint(key)}), not in "
            f"{' or '.join(map(str, self.known.paths))}; nothing was run",
            host=self.node,
            fix=f"check the fingerprint with the server's owner (`ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on "
                f"the server), then `{keyscan_command(self.address, self.port, self.known.path, self.via)}`; "
                "or run once with --accept-new-host-keys (or StrictHostKeyChecking accept-new in the ssh config)")


def _changed_key(node: str, name: str, expected: paramiko.PKey, offered: paramiko.PKey, path: Path) -> HostKeyError:
    return HostKeyError(
        f"host key for {name} has CHANGED: {path} has {expected.get_name()} {fingerprint(expected)}, "
        f"the server offers {offered.get_name()} {fingerprint(offered)}; nothing was run",
        host=node,
        fix=f"if the server was reinstalled, check the new fingerprint with its owner, then "
            f"`{shlex.join(['ssh-keygen', '-f', str(path), '-R', name])}` and connect again; otherwise treat it as "
            "an attack")


@cache
def load_key(path: str, source: str = "ssh.identity_file") -> paramiko.PKey:
    """The private key, loaded once per process (ed25519, ECDSA or RSA). A missing or unreadable key is a
    ConfigError naming the file and where it was set: a local mistake, not an unreachable node."""
    full = os.path.expanduser(path)
    try:
        return paramiko.PKey.from_path(full)
    except FileNotFoundError:
        raise ConfigError(f"SSH key {full} not found ({source}); nothing was contacted",
                          fix=f"make one (`{shlex.join(['ssh-keygen', '-t', 'ed25519', '-f', full])}`, then add "
                              f"{shlex.quote(full + '.pub')} to the servers' "
                              "authorized_keys), or point the setting at your key") from None
    except (paramiko.SSHException, ValueError, OSError) as exc:
        raise ConfigError(f"cannot load SSH key {full} ({source}): {exc}; nothing was contacted",
                          fix="use an unencrypted key, or leave identity_file out and load it into ssh-agent") from None


DEFAULT_KEYS = ("~/.ssh/id_ed25519", "~/.ssh/id_ecdsa", "~/.ssh/id_rsa")


def check_keys(key_files: Sequence[str], source: str = "") -> paramiko.PKey | None:
    """The key to log in with, checked before any connection. With files named (the deployment file or the
    ssh config), the first that exists, or one error naming them; with none, ssh-agent or a default key must
    exist, else one error (instead of every node failing authentication the same way)."""
    if key_files:
        present = [k for k in key_files if os.path.exists(os.path.expanduser(k))]
        if not present and len(key_files) > 1:
            raise ConfigError(f"none of the SSH keys {', '.join(key_files)} exists ({source}); nothing was contacted",
                              fix="fix the IdentityFile lines, or make a key with ssh-keygen -t ed25519")
        return load_key(present[0] if present else key_files[0], source or "ssh.identity_file")
    if os.environ.get("SSH_AUTH_SOCK") or any(os.path.exists(os.path.expanduser(k)) for k in DEFAULT_KEYS):
        return None  # paramiko tries the agent, then the default keys
    raise ConfigError("no SSH key to log in with: no ssh.identity_file, no IdentityFile in the ssh config, no "
                      f"ssh-agent (SSH_AUTH_SOCK) and none of {', '.join(DEFAULT_KEYS)}; nothing was contacted",
                      fix="set ssh.identity_file in the deployment file (or IdentityFile in ~/.ssh/config), "
                          "or start ssh-agent and ssh-add your key")


class SSHTransport:
    """Commands on one node over one paramiko connection (one channel per command)."""

    def __init__(self, address: str, *, port: int = 22, user: str = "root", key_file: str | None = None,
                 known_hosts: KnownHosts, connect_timeout: float = 10.0, retries: int = RETRIES,
                 name: str | None = None, key_files: Sequence[str] = (), key_source: str = "",
                 accept_new: bool = False, tunnel: Tunnel | None = None,
                 on_close: Callable[[], None] | None = None) -> None:
        """`tunnel` (a jump host's `open_tunnel`) gives the socket to talk SSH over, one per attempt;
        `on_close` runs once when this transport is closed (it releases the jump host)."""
        self.host = name or address
        self.address, self.port, self.user = address, port, user
        self._known = known_hosts
        self._tunnel = tunnel
        self._on_close = on_close
        self._client = paramiko.SSHClient()
        # This host's entries of the once-parsed file; SSHClient has no public setter for its host keys.
        self._client._host_keys = known_hosts.view(address, port)
        self._client.set_missing_host_key_policy(VerifyPolicy(
            known_hosts, self.host, address, port, accept_new, via=tunnel.via if tunnel else None))
        keys = list(key_files) or ([key_file] if key_file else [])
        pkey = check_keys(keys, key_source) if keys else None
        others = [os.path.expanduser(k) for k in keys[1:] if os.path.exists(os.path.expanduser(k))]
        try:
            self._connect(pkey, others, connect_timeout, retries)
        except BaseException:
            self._release()
            raise

    def _connect(self, pkey: paramiko.PKey | None, others: list[str], timeout: float, retries: int) -> None:
        delay = FIRST_BACKOFF_S
        where = f"{self.address}:{self.port}" + (f" through jump host {self._tunnel.via}" if self._tunnel else "")
        for attempt in range(retries + 1):
            try:
                sock = self._tunnel.open(self.address, self.port, timeout) if self._tunnel else None
                self._client.connect(
                    self.address, port=self.port, username=self.user, pkey=pkey, key_filename=others or None,
                    timeout=timeout, banner_timeout=timeout, auth_timeout=timeout, allow_agent=pkey is None,
                    look_for_keys=pkey is None, compress=False, transport_factory=_bulk_transport, sock=sock)
                self._client.get_transport().set_keepalive(KEEPALIVE_S)
                return
            except HostKeyError:
                self._client.close()
                raise
            except paramiko.BadHostKeyException as exc:
                self._client.close()
                raise _changed_key(self.host, host_key_name(self.address, self.port), exc.expected_key, exc.key,
                                   self._known.path) from None
            except paramiko.AuthenticationException as exc:
                self._client.close()
                raise TransportError(f"authentication as {self.user}@{self.address} failed: {exc}", host=self.host,
                                     fix="check ssh.user and ssh.identity_file (or User and IdentityFile in the "
                                         "ssh config), and the server's authorized_keys") from None
            except (OSError, paramiko.SSHException, EOFError) as exc:
                self._client.close()
                if attempt == retries:
                    raise TransportError(
                        f"cannot connect to {where} ({attempt + 1} attempt{'s' if attempt else ''}): "
                        f"{_reason(exc)}", host=self.host,
                        fix="check the address and port, that sshd runs there, and the firewall") from None
                time.sleep(delay)
                delay *= 2

    # --- commands ---------------------------------------------------------------------------------

    def _session(self) -> paramiko.Channel:
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise TransportError("SSH connection lost", host=self.host, fix="check that the node is up, then retry")
        try:
            return transport.open_session(timeout=30)
        except (paramiko.SSHException, EOFError, OSError) as exc:
            raise TransportError(f"SSH connection lost: {exc}", host=self.host,
                                 fix="check that the node is up, then retry") from None

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None, on_stdout: Callable[[bytes], None] | None = None,
            on_stderr: Callable[[bytes], None] | None = None) -> Result:
        line = remote_command_line(argv, env, timeout)
        chan = self._session()
        try:
            chan.exec_command(line)
            writer = _feed(chan, stdin)
            out, err = bytearray(), bytearray()

            def take() -> None:
                while chan.recv_ready():
                    chunk = chan.recv(1 << 20)
                    if on_stdout is None:
                        out.extend(chunk)
                    elif chunk:
                        on_stdout(chunk)
                while chan.recv_stderr_ready():
                    chunk = chan.recv_stderr(1 << 16)
                    if on_stderr is None:
                        err.extend(chunk)
                    elif chunk:
                        on_stderr(chunk)

            started = time.monotonic()
            backstop = None if timeout is None else timeout + KILL_AFTER_S + BACKSTOP_S
            if not _pump(chan, take, _deadline(backstop), None, self.host):
                rc = RC_TIMEOUT  # the node did not answer in time either: leave the channel
            else:
                rc = _exit_code(chan)
            if writer is not None:  # once the command has exited, what it did not read no longer matters
                writer.join(timeout=0 if chan.exit_status_ready() else 5)
            if timeout is not None and rc in (RC_KILLED, 128 + 9) and time.monotonic() - started >= timeout:
                rc = RC_TIMEOUT  # `timeout -k` had to SIGKILL the command (and itself)
            if rc == RC_TIMEOUT and timeout is not None:
                err.extend(f"\n(timed out after {timeout:g} s)".encode())
            return Result(rc, out.decode(errors="replace"), err.decode(errors="replace"))
        finally:
            chan.close()

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None, stop: threading.Event | None = None) -> int:
        """Run and hand every output line (stdout and stderr merged) to `on_line`; return the exit code.
        Setting `stop` closes the channel and returns RC_STOPPED; the command runs on a pty, so the hang-up
        sends it SIGHUP (OpenSSH ignores "signal" requests for root logins before 9.8, so they cannot be used).
        The pty also makes the remote program line-buffer its output, which is what log streaming wants."""
        line = command_line(argv, env) + " </dev/null"  # a pty never reports EOF on stdin
        chan = self._session()
        try:
            try:
                chan.get_pty(term="dumb", width=500)  # closing the channel hangs up the pty: SIGHUP ends the command
            except paramiko.SSHException:
                pass  # no pty on this server (PermitTTY no, no /dev/pts): a stopped command then ends on SIGPIPE
            chan.set_combine_stderr(True)
            chan.exec_command(line)
            chan.shutdown_write()
            pending = b""

            def take() -> None:
                nonlocal pending
                while chan.recv_ready():
                    pending = split_lines(pending, chan.recv(1 << 16), on_line)

            finished = _pump(chan, take, None, stop, self.host)
            if pending:
                on_line(pending.decode(errors="replace"))
            if not finished:
                return RC_STOPPED
            return _exit_code(chan)
        finally:
            chan.close()

    def put(self, src: str | Path, dst: str) -> None:
        with self._client.open_sftp() as sftp:
            sftp.put(str(src), dst)

    def get(self, src: str, dst: str | Path) -> None:
        with self._client.open_sftp() as sftp:
            sftp.get(src, str(dst))

    def close(self) -> None:
        self._client.close()
        self._release()

    def _release(self) -> None:
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close()

    def open_tunnel(self, host: str, port: int, timeout: float) -> TunnelSocket:
        """A `direct-tcpip` channel from this server to host:port: the socket of a connection through it,
        as `ssh -J` makes. Any number of them share this one connection."""
        transport = self._client.get_transport()
        if transport is None or not transport.is_active():
            raise TransportError("SSH connection lost", host=self.host, fix="check that the server is up, then retry")
        try:
            chan = transport.open_channel("direct-tcpip", (host, port), ("127.0.0.1", 0), timeout=timeout)
        except paramiko.ChannelException as exc:  # the jump host could not reach host:port
            raise ConnectionError(f"{self.host} cannot reach {host}:{port} ({exc.text.lower()})") from None
        return TunnelSocket(chan)


class TunnelSocket:
    """A jump host's channel as the socket of the SSH connection behind it, with sends and close in order.

    paramiko's Channel.send builds a data message under the channel's lock but sends it after letting go
    (paramiko issue #1115), so the close of the connection behind it, made by another thread, can overtake
    its last packet: data after close, which OpenSSH answers by dropping the whole jump connection, and with
    it every other server's channel ("data packet referred to nonexistent channel", seen with 32 servers
    behind one bastion). One lock over each whole send and over the close keeps them in order."""

    def __init__(self, chan: paramiko.Channel) -> None:
        self._chan = chan
        self._lock = threading.Lock()

    def send(self, data: bytes) -> int:
        with self._lock:
            if self._chan.closed:
                raise OSError("the tunnel through the jump host is closed")
            return self._chan.send(data)

    def recv(self, size: int) -> bytes:
        return self._chan.recv(size)

    def settimeout(self, timeout: float | None) -> None:
        self._chan.settimeout(timeout)

    def close(self) -> None:
        with self._lock:
            self._chan.close()

    @property
    def _closed(self) -> bool:  # read by paramiko's Transport.stop_thread, as on a socket
        return self._chan.closed

    def __getattr__(self, name: str):
        return getattr(self._chan, name)


@dataclass(frozen=True)
class Tunnel:
    """How a server behind a jump host is reached: `open(host, port, timeout)` returns a channel through
    `via` (the jump host's name, for messages and fixes)."""

    via: str
    open: Callable[[str, int, float], TunnelSocket]


def remote_command_line(argv: Sequence[str], env: Mapping[str, str] | None = None,
                        timeout: float | None = None) -> str:
    """The exact line `run` sends to the node's shell (what `exec --dry-run` prints). A timeout is enforced on
    the node with `timeout -k`, so the process does not outlive its deadline if the connection drops."""
    line = command_line(argv, env)
    if timeout is None:
        return line
    return shlex.join(["timeout", "-k", str(KILL_AFTER_S), f"{timeout:g}"]) + " " + line


def _bulk_transport(sock, **kwargs) -> paramiko.Transport:
    """A paramiko Transport tuned for gigabyte streams; the algorithms offered stay the same, GCM first."""
    transport = paramiko.Transport(sock, **kwargs)
    # Large windows: paramiko's 2 MiB default stalls every window of a `docker save` stream.
    transport.default_window_size = WINDOW_BYTES
    transport.default_max_packet_size = MAX_PACKET_BYTES
    # paramiko re-keys every 512 MiB; a re-key that meets the server's channel close deadlocks paramiko's own
    # thread for 30 s and kills the connection ("Key-exchange timed out", seen in bench_broadcast.py). OpenSSH
    # re-keys AES ciphers after 2^32 blocks (64 GiB); 4 GiB keeps well inside that and makes the race 8x rarer.
    transport.packetizer.REKEY_BYTES = REKEY_BYTES
    options = transport.get_security_options()
    offered = tuple(options.ciphers)
    options.ciphers = tuple(c for c in PREFERRED_CIPHERS if c in offered) + tuple(
        c for c in offered if c not in PREFERRED_CIPHERS)
    return transport


def _reason(exc: BaseException) -> str:
    """paramiko wraps refused connects as "[Errno None] Unable to connect to port …": say what happened."""
    if isinstance(exc, paramiko.ssh_exception.NoValidConnectionsError):
        codes = {e.errno for e in exc.errors.values() if getattr(e, "errno", None)}
        if codes:
            return "; ".join(os.strerror(code).lower() for code in sorted(codes))
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


def _deadline(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def _pump(chan: paramiko.Channel, take: Callable[[], None], deadline: float | None,
          stop: threading.Event | None, host: str) -> bool:
    """Call `take` whenever output arrives, until the remote side's EOF (True) or deadline/stop (False).

    `select` on the channel wakes on data and on EOF (paramiko sets its pipe for both), so there is no
    polling while the command runs; the POLL_S cap only bounds how late a deadline or stop is noticed.
    A channel closed without EOF and without an exit status is a connection that died under the command
    (paramiko closes its channels before it marks the connection inactive): an error, not an exit code.
    """
    while True:
        take()
        if chan.eof_received and not chan.recv_ready() and not chan.recv_stderr_ready():
            return True
        if chan.closed:
            take()
            if not chan.eof_received and chan.exit_status < 0:
                raise TransportError("SSH connection lost while a command was running", host=host,
                                     fix="check that the node is up; the command's state on it is unknown")
            return True
        if stop is not None and stop.is_set():
            return False
        wait = POLL_S
        if deadline is not None:
            wait = min(wait, deadline - time.monotonic())
            if wait <= 0:
                return False
        transport = chan.get_transport()
        if transport is None or not transport.is_active():
            raise TransportError("SSH connection lost while a command was running", host=host,
                                 fix="check that the node is up; the command's state on it is unknown")
        select.select([chan], [], [], wait)


def _exit_code(chan: paramiko.Channel) -> int:
    """The exit status; RC_KILLED when the process died of a signal or the channel closed without one."""
    chan.status_event.wait(30)  # the status follows EOF within milliseconds; close also sets the event
    status = chan.exit_status if chan.status_event.is_set() else -1
    return RC_KILLED if status < 0 else status


def _feed(chan: paramiko.Channel, stdin: Stdin) -> threading.Thread | None:
    """Send stdin in a thread (so a command that writes before reading cannot deadlock us), then EOF."""
    if stdin is None:
        chan.shutdown_write()
        return None
    chunks: Iterable[bytes] = [stdin] if isinstance(stdin, bytes) else stdin

    def write() -> None:
        try:
            for chunk in chunks:
                # paramiko's sendall re-slices what is left after every (32 KiB) packet: quadratic copying for
                # a large chunk (256 MiB of bytes took minutes). Small slices keep it linear.
                for at in range(0, len(chunk), SEND_SLICE):
                    chan.sendall(chunk[at:at + SEND_SLICE])
            chan.shutdown_write()
        except (OSError, EOFError, paramiko.SSHException):
            pass  # the command exited or the connection broke; the reader reports which

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    return thread
