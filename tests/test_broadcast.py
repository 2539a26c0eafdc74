"""The pipelined broadcast (image ship, weights/data spread) with real relay processes on this machine.

Each "server" is a LocalTransport (or, in one test, a loopback sshd): its relay is the real relay_agent.py
started the way the kit starts it, listening on 127.0.0.1, talking TCP to the others. Stores are per-server
paths under tmp_path. The simulated-cluster versions (network namespaces, shaped links, the real commands)
are in test_broadcast_sim.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ascend_run.errors import TransportError
from ascend_run.inputs.deployment import Node, SSHSettings
from ascend_run.transport import relay
from ascend_run.transport.base import Result
from ascend_run.transport.broadcast import (
    BroadcastError,
    FileEntry,
    FileSet,
    LocalStream,
    Member,
    StagedFile,
    broadcast,
    raise_unserved,
)
from ascend_run.transport.chain import THIS_MACHINE, choose_upstream, describe, first_upstreams
from ascend_run.transport.local import LocalTransport

MIB = 1 << 20


def node(i: int, address: str = "127.0.0.1") -> Node:
    return Node(i, f"n{i}", address, (0,), address, SSHSettings())


class Recording(LocalTransport):
    """A LocalTransport that remembers its processes, so a test can kill a server's relay."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.procs: list[subprocess.Popen] = []

    def _start(self, *args, **kw) -> subprocess.Popen:
        proc = super()._start(*args, **kw)
        self.procs.append(proc)
        return proc


def stream(payload: bytes, delay: float = 0.0) -> LocalStream:
    def chunks():
        for at in range(0, len(payload), MIB):
            if delay:
                time.sleep(delay)
            yield payload[at:at + MIB]
    return LocalStream(chunks, len(payload))


def staged(tmp_path: Path, count: int, transport=Recording) -> list[Member]:
    return [Member(node(i), transport(f"n{i}"), StagedFile(str(tmp_path / f"n{i}.tar"))) for i in range(1, count + 1)]


def relays_left() -> list[int]:
    """Relay processes started by this test process (their command line carries the mark)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes()
                parent = int((entry / "stat").read_text().rpartition(")")[2].split()[1])
            except (OSError, ValueError):
                continue
            if relay.MARK.encode() in cmd and parent == os.getpid():
                found.append(int(entry.name))
    return found


def wait_no_relays(timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while relays_left() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert relays_left() == []


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# --- who feeds whom (pure) -------------------------------------------------------------------------------

def test_each_server_pulls_from_the_one_before_it():
    assert first_upstreams(["src", "a", "b", "c"]) == {"a": "src", "b": "a", "c": "b"}
    assert describe([THIS_MACHINE, "a", "b"]) == "(this machine) → a → b"


def test_a_lost_server_is_bridged_by_the_nearest_holder_before_it():
    order = ["src", "a", "b", "c", "d"]
    assert choose_upstream(order, "c", set()) == "b"
    assert choose_upstream(order, "c", {"b"}) == "a"
    assert choose_upstream(order, "d", {"a", "b", "c"}) == "src"
    assert choose_upstream(order, "b", {"src", "a"}) is None  # node 0 itself is gone: nobody holds more


def test_this_machine_can_always_feed_again():
    assert choose_upstream([THIS_MACHINE, "a", "b"], "b", {"a", THIS_MACHINE}) == THIS_MACHINE


# --- the stream from this machine (image ship) -------------------------------------------------------------

@pytest.mark.parametrize("encrypt", [False, True], ids=["plain", "tls"])
def test_a_stream_reaches_every_server_down_the_chain_and_is_verified(tmp_path, encrypt):
    payload = os.urandom(20 * MIB + 12345)
    members = staged(tmp_path, 4)
    seen = []
    states = broadcast(members, stream(payload), encrypt=encrypt, on_progress=seen.append)
    assert [s.phase for s in states] == ["done"] * 4
    assert [s.upstream for s in states] == [THIS_MACHINE, "n1", "n2", "n3"]
    for i in range(1, 5):
        assert (tmp_path / f"n{i}.tar").read_bytes() == payload  # kept: verified, for docker load
    assert seen[-1].done_bytes == 4 * len(payload) and seen[-1].size == len(payload)
    wait_no_relays()


def test_a_lost_server_mid_stream_the_ones_behind_it_resume_from_another_holder(tmp_path):
    payload = os.urandom(30 * MIB)
    members = staged(tmp_path, 5)
    killed = []

    def kill_n3(progress) -> None:
        n3 = next(s for s in progress.nodes if s.name == "n3")
        if not killed and n3.bytes > 8 * MIB:
            killed.append(n3.bytes)
            os.kill(members[2].transport.procs[0].pid, signal.SIGKILL)

    states = {s.name: s for s in broadcast(members, stream(payload, delay=0.03), on_progress=kill_n3)}
    assert killed, "the transfer ended before the relay could be killed"
    assert states["n3"].phase == "failed" and "killed" in states["n3"].error
    for name in ("n1", "n2", "n4", "n5"):
        assert states[name].ok and (tmp_path / f"{name}.tar").read_bytes() == payload
    assert states["n4"].upstream == "n2" and states["n4"].feeds == 2  # resumed from n2, not from scratch
    with pytest.raises(BroadcastError, match=r"shipping img: 1 of 5 server\(s\) not served \(4 complete and "
                                             r"verified\): n3: its relay was killed \(signal 9\)\n  fix: "):
        raise_unserved(list(states.values()), "shipping img")
    wait_no_relays()


def test_a_lost_first_server_the_next_is_fed_again_from_this_machine(tmp_path):
    payload = os.urandom(24 * MIB)
    members = staged(tmp_path, 3)
    killed = []

    def kill_n1(progress) -> None:
        n1 = progress.nodes[0]
        if not killed and n1.bytes > 6 * MIB:
            killed.append(1)
            os.kill(members[0].transport.procs[0].pid, signal.SIGKILL)

    states = broadcast(members, stream(payload, delay=0.03), on_progress=kill_n1)
    assert killed and [s.phase for s in states] == ["failed", "done", "done"]
    assert states[1].upstream == THIS_MACHINE and states[1].feeds == 2
    assert (tmp_path / "n2.tar").read_bytes() == (tmp_path / "n3.tar").read_bytes() == payload
    wait_no_relays()


TAMPER = (b"            sent = os.sendfile(conn.fileno(), fd, at, n)\n",
          b"            data = bytearray(os.pread(fd, min(n, CHUNK), at)); data[len(data) // 2] ^= 1\n"
          b"            conn.sendall(bytes(data)); sent = len(data)\n")


def tampering(bad: str):
    """The relay program for each node: `bad`'s relay flips one bit in every frame it serves."""
    honest = relay.agent_source()
    altered = honest.replace(*TAMPER)
    assert altered != honest, "the line the tampering relay changes has moved"
    return lambda n: altered if n.name == bad else honest


def test_a_relay_that_alters_bytes_is_caught_and_named(tmp_path):
    payload = os.urandom(6 * MIB)
    states = broadcast(staged(tmp_path, 4), stream(payload), agent=tampering("n2"))
    assert [s.phase for s in states] == ["done", "done", "failed", "failed"]
    assert "data from n2, whose own copy verified" in states[2].error
    assert not (tmp_path / "n3.tar").exists() and not (tmp_path / "n4.tar").exists()  # nothing damaged stays
    wait_no_relays()


# --- files from a server (weights, data) ---------------------------------------------------------------------

FILES = {"model-00001.safetensors": os.urandom(3 * MIB + 7), "empty": b"", "sub/model-00002.safetensors":
         os.urandom(2 * MIB), "sub/deeper/none": b"", "tokenizer.json": b'{"a": 1}'}


def file_set(tmp_path: Path, count: int, *, agent=None, already: dict[int, list[str]] | None = None, **kw):
    source_dir = tmp_path / "n0"
    for name, data in FILES.items():
        (source_dir / name).parent.mkdir(parents=True, exist_ok=True)
        (source_dir / name).write_bytes(data)
    for i, names in (already or {}).items():
        for name in names:
            (tmp_path / f"n{i}" / name).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / f"n{i}" / name).write_bytes(FILES[name])
    entries = tuple(FileEntry(n, len(d), sha(d)) for n, d in sorted(FILES.items()))
    origin = Member(node(0), Recording("n0"), FileSet(str(source_dir), entries, source=True))
    members = [Member(node(i), Recording(f"n{i}"), FileSet(str(tmp_path / f"n{i}"), entries, write=frozenset(
        n for n in FILES if n not in (already or {}).get(i, [])))) for i in range(1, count + 1)]
    return broadcast(members, origin, agent=agent, **kw)


def tree(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*") if p.is_file()}


def test_files_reach_every_server_and_a_server_forwards_what_it_already_had(tmp_path):
    stale = tmp_path / "n1" / "sub" / ".ascend-run-partial-0123abcd-4"  # left by a relay killed earlier
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"half")
    states = file_set(tmp_path, 3, already={2: ["model-00001.safetensors"]})
    assert [s.phase for s in states] == ["done"] * 3
    for i in range(1, 4):
        assert tree(tmp_path / f"n{i}") == FILES  # no partial files left beside them


def test_a_damaged_file_is_never_renamed_into_place(tmp_path):
    honest = relay.agent_source()
    states = file_set(tmp_path, 3, agent=tampering("n1"), encrypt=False)
    assert [s.phase for s in states] == ["done", "failed", "failed"]
    assert "sha256 mismatch in" in states[1].error and "n1, whose own copy verified" in states[1].error
    for i in (2, 3):
        left = tree(tmp_path / f"n{i}")
        assert all(FILES[name] == data for name, data in left.items())  # only verified files, under their names
        assert set(left) < set(FILES)
    assert honest == relay.agent_source()


def test_a_source_that_cannot_serve_fails_the_transfer_at_once_naming_it(tmp_path):
    entry = (FileEntry("x", 10, sha(bytes(10))),)
    source = Member(node(0), LocalTransport("n0"), FileSet(str(tmp_path / "missing"), entry, source=True))
    members = [Member(node(i), LocalTransport(f"n{i}"), FileSet(str(tmp_path / f"n{i}"), entry)) for i in (1, 2)]
    with pytest.raises(TransportError, match=r"n0: the source cannot serve: FileNotFoundError.*missing/x"):
        broadcast(members, source)
    wait_no_relays()


# --- start-up and trust -----------------------------------------------------------------------------------------

class NoPython:
    """A server without python3: the remote shell answers 127."""

    host = "n2"

    def run(self, argv, **kw) -> Result:
        return Result(127, "", "sh: 1: python3: not found")


def test_a_server_without_python3_is_named_and_the_chain_goes_around_it(tmp_path):
    payload = os.urandom(3 * MIB)
    members = staged(tmp_path, 3)
    members[1] = Member(node(2), NoPython(), StagedFile(str(tmp_path / "n2.tar")))
    states = broadcast(members, stream(payload))
    assert [s.phase for s in states] == ["done", "failed", "done"]
    assert "python3 is not installed" in states[1].error and states[2].upstream == "n1"
    wait_no_relays()


def start_agent(tmp_path: Path, python: str = sys.executable) -> subprocess.Popen:
    config = {"transfer": "t1", "secret": "ab" * 32, "node": "n1", "listen": "127.0.0.1", "tls": None,
              "store": {"kind": "file", "path": str(tmp_path / "staged")}}
    proc = subprocess.Popen([python, *relay.relay_argv(relay.agent_source())[1:]],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    proc.stdin.write(relay.agent_source() + json.dumps(config).encode() + b"\n")
    proc.stdin.flush()
    return proc


def test_a_peer_without_the_secret_gets_nothing_and_the_relay_leaves_nothing(tmp_path):
    proc = start_agent(tmp_path)
    try:
        event = json.loads(proc.stdout.readline())
        assert event["event"] == "listening"
        proc.stdin.write(b'{"op": "feed"}\n{"op": "data", "offset": 0, "n": 5}\nhello')
        proc.stdin.flush()
        with socket.create_connection(("127.0.0.1", event["port"]), timeout=5) as sock:
            hello = sock.recv(100)
            assert hello.startswith(b"ascend-run-relay/1")
            sock.sendall(os.urandom(32) + b"\x02n9" + bytes(8) + os.urandom(32))  # a guessed proof
            assert sock.recv(100) == b""  # closed, not a byte of the stream
        events = [json.loads(proc.stdout.readline()) for _ in range(3)]  # feed, refused, and "have" (or not)
        assert {"event": "refused", "peer": "127.0.0.1", "why": "bad handshake"} in events
        proc.stdin.close()  # the kit went away without "exit": an abort
        assert proc.wait(10) == 3
    finally:
        proc.kill()
    assert not (tmp_path / "staged").exists()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", event["port"]), timeout=2)


def test_the_relay_runs_on_the_oldest_python_it_supports(tmp_path):
    candidates = [shutil.which("python3.6"), *sorted(Path("/root/.pyenv/versions").glob("3.6*/bin/python3.6"))]
    oldest = next((str(c) for c in candidates if c and subprocess.run([str(c), "-c", "1"], capture_output=True,
                                                                      check=False).returncode == 0), None)
    if oldest is None:
        pytest.skip("no python3.6 on this machine")
    proc = start_agent(tmp_path, oldest)
    try:
        assert json.loads(proc.stdout.readline())["event"] == "listening"
        proc.stdin.write(b'{"op": "feed"}\n{"op": "data", "offset": 0, "n": 3}\nabc{"op": "end", "total": 3}\n'
                         b'{"op": "exit", "keep": true}\n')
        proc.stdin.flush()
        events = [json.loads(line) for line in proc.stdout]
        assert {"event": "complete", "bytes": 3, "sha256": sha(b"abc")} in events
        assert proc.wait(10) == 0
    finally:
        proc.kill()
    assert (tmp_path / "staged").read_bytes() == b"abc"


def test_over_ssh_the_relays_run_from_stdin_and_leave_nothing(sshd_fleet, tmp_path):
    from ascend_run.transport.ssh import KnownHosts, SSHTransport

    known = KnownHosts(sshd_fleet.known_hosts)
    transports = [SSHTransport(s.address, port=s.port, key_file=str(sshd_fleet.key_file), known_hosts=known,
                               name=s.name) for s in sshd_fleet.servers[:3]]
    try:
        members = [Member(Node(i, t.host, t.address, (0,), t.address, SSHSettings()), t,
                          StagedFile(str(tmp_path / f"{t.host}.tar"))) for i, t in enumerate(transports)]
        payload = os.urandom(8 * MIB)
        states = broadcast(members, stream(payload), encrypt=True)
        assert [s.phase for s in states] == ["done"] * 3
        assert all((tmp_path / f"{t.host}.tar").read_bytes() == payload for t in transports)
        ps = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert relay.MARK not in ps
    finally:
        for t in transports:
            t.close()
