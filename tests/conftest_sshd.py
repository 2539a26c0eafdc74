"""Real OpenSSH servers on loopback for transport and `exec` tests (and the fan-out benchmark).

Each server is `sshd -D` on 127.0.0.N:2222 with its own ed25519 host key; all accept one client key.
`SetEnv SHLVL=1` makes root's bash skip `~/.bashrc` (pyenv init costs ~0.2 s of CPU per command here), and
`MaxStartups 1000:30:1000` lets 128 connections arrive at once. Teardown kills every sshd and whatever
sessions it left behind (sshd's per-connection children call setsid, so a process-group kill misses them).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

PORT = 2222
# Tests take the first free block of addresses counting down from 127.0.0.240 (two test sessions may run at
# once, e.g. two engineers in one checkout); the benchmark starts at 127.0.0.2, below every test block.
TEST_BLOCK_TOP = 240
TEST_BLOCK_BOTTOM = 132


def _ed25519_pair() -> tuple[str, str]:
    """(OpenSSH private key text, public key line) made in-process: 128 ssh-keygen runs cost ~1.5 s."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption()).decode()
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    return private, public.decode()


def _write_private(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(0o600)


SSHD_CONFIG = """\
ListenAddress {address}:{port}
HostKey {host_key}
PidFile {pid_file}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
SetEnv SHLVL=1
MaxStartups 1000:30:1000
MaxSessions 100
LogLevel ERROR
Subsystem sftp /usr/lib/openssh/sftp-server
"""


@dataclass
class Server:
    name: str
    address: str
    port: int
    dir: Path
    host_public: str  # "ssh-ed25519 AAAA…"
    process: subprocess.Popen | None = None

    @property
    def known_hosts_line(self) -> str:
        return f"[{self.address}]:{self.port} {self.host_public}"


@dataclass
class SshdFleet:
    """N loopback sshd servers, a client key and a known_hosts file listing all of them."""

    root: Path
    servers: list[Server] = field(default_factory=list)

    @property
    def key_file(self) -> Path:
        return self.root / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    @classmethod
    def start(cls, count: int, root: Path | None = None, first_octet: int | None = None,
              port: int = PORT) -> SshdFleet:
        if shutil.which("sshd") is None and not Path("/usr/sbin/sshd").exists():
            raise RuntimeError("sshd missing: apt-get install -y openssh-server")
        if first_octet is None:
            first_octet = free_block(count, port)
        root = Path(root or tempfile.mkdtemp(prefix="ascend-run-sshd-"))
        fleet = cls(root)
        private, public = _ed25519_pair()
        _write_private(fleet.key_file, private)
        (root / "id_ed25519.pub").write_text(public + "\n")
        (root / "authorized_keys").write_text(public + "\n")
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # sshd's privilege-separation directory
        try:
            for i in range(count):
                fleet.servers.append(fleet._start_one(f"n{i}", f"127.0.0.{first_octet + i}", port))
            fleet.known_hosts.write_text("".join(s.known_hosts_line + "\n" for s in fleet.servers))
            fleet.wait_ready()
        except BaseException:
            fleet.stop()
            raise
        return fleet

    def _start_one(self, name: str, address: str, port: int) -> Server:
        directory = self.root / name
        directory.mkdir()
        private, public = _ed25519_pair()
        _write_private(directory / "host_key", private)
        config = directory / "sshd_config"
        config.write_text(SSHD_CONFIG.format(address=address, port=port, host_key=directory / "host_key",
                                             pid_file=directory / "sshd.pid",
                                             authorized_keys=self.root / "authorized_keys"))
        server = Server(name, address, port, directory, public)
        self._spawn(server)
        return server

    @staticmethod
    def _spawn(server: Server) -> None:
        server.process = subprocess.Popen(
            ["/usr/sbin/sshd", "-D", "-f", str(server.dir / "sshd_config"), "-E", str(server.dir / "sshd.log")],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every server accepts TCP connections (sshd binds within milliseconds of starting)."""
        deadline = time.monotonic() + timeout
        pending = list(self.servers)
        restarts = 0
        while pending:
            server = pending[0]
            if server.process.poll() is not None:
                log = (server.dir / "sshd.log").read_text() if (server.dir / "sshd.log").exists() else ""
                if restarts < 3 and "Address already in use" in log:  # a previous run's sshd still leaving
                    restarts += 1
                    time.sleep(0.5)
                    self._spawn(server)
                    continue
                raise RuntimeError(f"sshd for {server.address} exited {server.process.returncode}: {log}")
            try:
                with socket.create_connection((server.address, server.port), timeout=1):
                    pending.pop(0)
                    continue
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"sshd on {server.address}:{server.port} did not come up") from None
                time.sleep(0.02)

    def deployment_yaml(self, servers: list[Server] | None = None, extra: list[tuple[str, str]] = (),
                        known_hosts: Path | None = None, connect_timeout: float = 5) -> str:
        """A deployment file for these servers; `extra` adds (name, address) nodes with no server."""
        lines = ["name: fanout-test", "profile: atlas-800t-a2", "image: local/none:0", "ssh:", "  user: root",
                 f"  port: {PORT}", f"  identity_file: {self.key_file}",
                 f"  known_hosts: {known_hosts or self.known_hosts}", f"  connect_timeout: {connect_timeout}",
                 "nodes:"]
        for server in servers if servers is not None else self.servers:
            lines += [f"  - address: {server.address}", f"    name: {server.name}"]
        for name, address in extra:
            lines += [f"  - address: {address}", f"    name: {name}"]
        return "\n".join(lines) + "\n"

    def stop(self) -> None:
        running = [s.process for s in self.servers if s.process is not None]
        leftovers = _descendants({p.pid for p in running})
        for proc in running:
            if proc.poll() is None:
                proc.terminate()
        for pid in leftovers:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        for proc in running:
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        shutil.rmtree(self.root, ignore_errors=True)


def free_block(count: int, port: int = PORT) -> int:
    """First octet N of `count` consecutive addresses 127.0.0.N… with nothing bound to `port` yet."""
    for first in range(TEST_BLOCK_TOP, TEST_BLOCK_BOTTOM - 1, -count):
        if all(_port_free(f"127.0.0.{first + i}", port) for i in range(count)):
            return first
    raise RuntimeError(f"no {count} free loopback addresses for sshd on port {port} in 127.0.0.{TEST_BLOCK_BOTTOM}-"
                       f"{TEST_BLOCK_TOP + count - 1}")


def _port_free(address: str, port: int) -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((address, port))
        except OSError:
            return False
    return True


def _descendants(roots: set[int]) -> list[int]:
    """Every process below `roots` (by parent pid), found through /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found: list[int] = []
    stack = list(roots)
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


@pytest.fixture(scope="session")
def sshd_fleet():
    """Four loopback sshd servers (port 2222, first free block from 127.0.0.240 down) for the whole session."""
    if os.geteuid() != 0:
        pytest.skip("loopback sshd servers need root")
    if not Path("/usr/sbin/sshd").exists():
        pytest.skip("sshd missing: apt-get install -y openssh-server")
    fleet = SshdFleet.start(4)
    yield fleet
    fleet.stop()
