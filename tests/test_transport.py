"""Transports against real OpenSSH servers on loopback (tests/conftest_sshd.py) and the local machine."""

from __future__ import annotations

import base64
import hashlib
import io
import os
import subprocess
import threading
import time
import uuid
from pathlib import Path

import paramiko
import pytest

from ascend_run.errors import ConfigError, HostKeyError, RemoteCommandError, TransportError
from ascend_run.inputs.deployment import load_deployment
from ascend_run.transport.base import RC_STOPPED, RC_TIMEOUT, Result, command_line
from ascend_run.transport.fanout import connect_all, connect_each, fan_out, run_on_nodes
from ascend_run.transport.local import LocalTransport
from ascend_run.transport.ssh import KnownHosts, SSHTransport, fingerprint
from tests.conftest_sshd import _ed25519_pair

HOSTILE = ["a b", "it's", '"double"', "$(touch /tmp/ascend-run-pwned)", "`id`", "x\ny", "; rm -rf /", "*", "",
           "-n", "\\", "€ ünï", "$HOME", "a\tb"]


def ssh(fleet, server=None, known: KnownHosts | None = None, **kw) -> SSHTransport:
    server = server or fleet.servers[0]
    return SSHTransport(server.address, port=server.port, key_file=str(fleet.key_file),
                        known_hosts=known or KnownHosts(fleet.known_hosts), name=server.name, **kw)


@pytest.fixture
def node_ssh(sshd_fleet):
    transport = ssh(sshd_fleet)
    yield transport
    transport.close()


@pytest.fixture(params=["ssh", "local"])
def any_transport(request):
    """The same test over SSH (needs root: loopback sshd) and locally (needs nothing)."""
    if request.param == "ssh":  # tests/conftest.py marks this half `root`
        transport = ssh(request.getfixturevalue("sshd_fleet"))
    else:
        transport = LocalTransport()
    yield transport
    transport.close()


def deployment(fleet, tmp_path: Path, **kw):
    path = tmp_path / "deploy.yaml"
    path.write_text(fleet.deployment_yaml(**kw))
    return load_deployment(path)


def remote_processes(pattern: str) -> str:
    return subprocess.run(["pgrep", "-af", pattern], check=False, capture_output=True, text=True).stdout


# --- one command -----------------------------------------------------------------------------------

def test_hostile_argv_arrives_unchanged(any_transport):
    result = any_transport.run(["printf", "%s\\0", *HOSTILE])
    assert result.ok, result.stderr
    assert result.stdout.split("\0")[:-1] == HOSTILE
    assert not Path("/tmp/ascend-run-pwned").exists()


def test_env_values_are_never_parsed(any_transport):
    env = {"PLAIN": "1", "HOSTILE": "$(id) 'q' \"d\" `x`\nnext", "EMPTY": ""}
    result = any_transport.run(["sh", "-c", 'printf "%s|%s|%s" "$PLAIN" "$HOSTILE" "$EMPTY"'], env=env)
    assert result.stdout == "1|$(id) 'q' \"d\" `x`\nnext|"


@pytest.mark.parametrize("name", ["1BAD", "A-B", "A B", "", "X=Y", "$(id)"])
def test_bad_env_names_are_refused_before_anything_runs(name):
    with pytest.raises(ValueError, match="environment variable name"):
        command_line(["true"], {name: "x"})


def test_empty_command_is_refused():
    with pytest.raises(ValueError):
        command_line([])


def test_exit_code_stdout_stderr_are_kept_apart(any_transport):
    result = any_transport.run(["sh", "-c", "echo out; echo err >&2; exit 7"])
    assert result == Result(7, "out\n", "err\n")
    with pytest.raises(RemoteCommandError, match="exited 7") as info:
        result.check("n0", ["sh", "-c", "..."])
    assert info.value.host == "n0" and info.value.returncode == 7


def test_stdin_bytes_and_chunks(any_transport):
    assert any_transport.run(["cat"], stdin=b"hello\n").stdout == "hello\n"
    chunks = (b"x" * 50_000 for _ in range(8))
    assert any_transport.run(["wc", "-c"], stdin=chunks).stdout.strip() == "400000"


def test_a_large_stdin_goes_to_paramiko_in_slices_and_rekeys_are_rare(node_ssh):
    """paramiko's sendall copies what is left after every packet: one 256 MiB bytes object took minutes."""
    from ascend_run.transport import ssh as ssh_module

    class Channel:
        sizes: list[int] = []

        def sendall(self, data: bytes) -> None:
            self.sizes.append(len(data))

        def shutdown_write(self) -> None:
            pass

    ssh_module._feed(Channel(), bytes(5 * ssh_module.SEND_SLICE + 1)).join()
    assert Channel.sizes == [ssh_module.SEND_SLICE] * 5 + [1]
    data = bytes(range(256)) * (12 << 12)  # 12 MiB, whole
    assert node_ssh.run(["sha256sum"], stdin=data).stdout.split()[0] == hashlib.sha256(data).hexdigest()
    assert node_ssh._client.get_transport().packetizer.REKEY_BYTES == 1 << 32


def test_timeout_ends_the_remote_process(any_transport):
    marker = f"{30 + uuid.uuid4().int % 1000 / 1000:.3f}"  # a sleep no one else runs
    started = time.monotonic()
    result = any_transport.run(["sleep", marker], timeout=0.5)
    assert result.rc == RC_TIMEOUT and "timed out" in result.stderr
    assert time.monotonic() - started < 5
    time.sleep(0.2)
    assert f"sleep {marker}" not in remote_processes(f"sleep {marker}")


def test_raw_stdout_arrives_whole_in_large_packets_with_gcm(any_transport):
    """Bulk streams (weights spread) read binary stdout through on_stdout; over SSH in 256 KiB packets."""
    parts: list[bytes] = []
    result = any_transport.run(["sh", "-c", "head -c 3000000 /dev/zero; printf '\\377end'"], on_stdout=parts.append)
    data = b"".join(parts)
    assert result.ok and result.stdout == "" and len(data) == 3000004 and data.endswith(b"\xffend")
    if hasattr(any_transport, "_client"):
        transport = any_transport._client.get_transport()
        assert transport.remote_cipher == "aes128-gcm@openssh.com"
        assert transport.default_max_packet_size == 256 << 10
        offered = set(transport.get_security_options().ciphers)
        assert offered == set(paramiko.Transport._preferred_ciphers)  # reordered, nothing added


def test_one_connection_serves_many_commands(node_ssh):
    transport = node_ssh._client.get_transport()
    for i in range(5):
        assert node_ssh.run(["echo", str(i)]).stdout == f"{i}\n"
    assert node_ssh._client.get_transport() is transport


def test_stream_gives_lines_and_exit_code(any_transport):
    lines: list[str] = []
    rc = any_transport.stream(["sh", "-c", "echo one; echo two >&2; printf three; exit 3"], lines.append)
    assert rc == 3 and lines == ["one", "two", "three"]


def test_stream_can_be_stopped_and_the_remote_process_ends(any_transport):
    marker = f"{40 + uuid.uuid4().int % 1000 / 1000:.3f}"
    stop, lines = threading.Event(), []
    threading.Timer(0.5, stop.set).start()
    started = time.monotonic()
    rc = any_transport.stream(["sh", "-c", f"echo started; sleep {marker}; echo never"], lines.append, stop=stop)
    assert rc == RC_STOPPED and lines == ["started"]
    assert time.monotonic() - started < 3
    time.sleep(0.3)
    assert f"sleep {marker}" not in remote_processes(f"sleep {marker}")


def _kill_session_of(marker: str, commands: list[int]) -> None:
    """SIGKILL the sshd processes serving the command that runs `sleep MARKER` (not the listener): the server
    side of its connection dies, as when a server drops off or its sshd is killed. The command's pid goes
    to `commands`."""
    deadline = time.monotonic() + 10
    while not (found := subprocess.run(["pgrep", "-f", f"^sleep {marker}"], capture_output=True, text=True).stdout):
        assert time.monotonic() < deadline, "the command never started"
        time.sleep(0.05)
    pid, chain = int(found.split()[0]), []
    commands.append(pid)
    while pid > 1:
        pid = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[1])
        if Path(f"/proc/{pid}/comm").read_text().strip().startswith("sshd"):
            chain.append(pid)
    for session in chain[:-1]:  # the last sshd up the chain is the listener: the fleet keeps serving
        os.kill(session, 9)


@pytest.mark.parametrize("how", ["run", "stream"])
def test_a_connection_that_dies_under_a_command_is_an_error_not_an_exit_code(sshd_fleet, how):
    """A dead connection says nothing about the command: `docker wait` over it must not read as the job's
    exit (the supervisor took a lost server for "exited with code -1")."""
    transport = ssh(sshd_fleet)
    marker = f"{50 + uuid.uuid4().int % 1000 / 1000:.3f}"
    argv, commands = ["sleep", marker], []
    killer = threading.Timer(0.3, _kill_session_of, args=(marker, commands))
    killer.start()
    try:
        with pytest.raises(TransportError, match="connection lost while a command was running"):
            if how == "run":
                transport.run(argv)
            else:
                transport.stream(argv, lambda line: None)
    finally:
        killer.join()
        transport.close()
        for pid in commands:  # orphaned by its session: ended here, by its pid
            try:
                os.kill(pid, 9)
            except ProcessLookupError:
                pass


def test_put_and_get(node_ssh, tmp_path):
    src = tmp_path / "src.bin"
    src.write_bytes(bytes(range(256)) * 100)
    remote = f"/tmp/ascend-run-put-{uuid.uuid4().hex}"
    node_ssh.put(src, remote)
    node_ssh.get(remote, tmp_path / "back.bin")
    node_ssh.run(["rm", "-f", remote])
    assert (tmp_path / "back.bin").read_bytes() == src.read_bytes()


# --- host keys ------------------------------------------------------------------------------------

def test_unknown_host_key_is_an_error_with_the_fix_and_nothing_runs(sshd_fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text("")
    marker = tmp_path / "ran"
    dep = deployment(sshd_fleet, tmp_path, known_hosts=known)
    [outcome, *_] = run_on_nodes(dep.nodes[:1], ["touch", str(marker)])
    error = outcome.error
    assert isinstance(error, HostKeyError) and error.host == "n0"
    server = sshd_fleet.servers[0]
    assert f"ssh-keyscan -p 2222 {server.address} >> {known}" in error.fix
    assert "--accept-new-host-keys" in error.fix
    assert not marker.exists() and known.read_text() == ""


def test_accept_new_records_each_key_once_and_then_verifies_it(sshd_fleet, tmp_path):
    known = tmp_path / "known_hosts"
    dep = deployment(sshd_fleet, tmp_path, known_hosts=known)  # file absent: created on first record
    outcomes = run_on_nodes(dep.nodes, ["true"], accept_new=True)
    assert all(o.ok and o.value.ok for o in outcomes), [o.error for o in outcomes]
    lines = known.read_text().splitlines()
    assert sorted(lines) == sorted(s.known_hosts_line for s in sshd_fleet.servers)
    again = run_on_nodes(dep.nodes, ["true"], accept_new=False)
    assert all(o.ok for o in again)
    assert known.read_text().splitlines() == lines


def test_changed_host_key_is_an_error_even_with_accept_new(sshd_fleet, tmp_path):
    server = sshd_fleet.servers[0]
    impostor = paramiko.Ed25519Key.from_private_key(io.StringIO(_ed25519_pair()[0]))
    offered = paramiko.PKey.from_type_string("ssh-ed25519", base64.b64decode(server.host_public.split()[1]))
    known = tmp_path / "known_hosts"
    known.write_text(f"[{server.address}]:{server.port} ssh-ed25519 {impostor.get_base64()}\n")
    before = known.read_text()
    for accept_new in (False, True):
        with pytest.raises(HostKeyError, match="CHANGED") as info:
            ssh(sshd_fleet, known=KnownHosts(known, accept_new=accept_new))
        text = str(info.value)
        assert info.value.host == server.name and server.address in text
        assert fingerprint(impostor) in text and fingerprint(offered) in text  # what we know, what it offers
        assert "ssh-keygen" in info.value.fix
    assert known.read_text() == before


def test_hashed_known_hosts_entries_work(sshd_fleet, tmp_path):
    known = tmp_path / "known_hosts"
    known.write_text(sshd_fleet.known_hosts.read_text())
    subprocess.run(["ssh-keygen", "-H", "-f", str(known)], check=True, capture_output=True)
    assert "|1|" in known.read_text()
    transport = ssh(sshd_fleet, known=KnownHosts(known))
    assert transport.run(["true"]).ok
    transport.close()


# --- many nodes -----------------------------------------------------------------------------------

def test_unreachable_node_is_named_and_the_others_still_report(sshd_fleet, tmp_path):
    dep = deployment(sshd_fleet, tmp_path, extra=[("gone", "127.0.0.250")])
    outcomes = run_on_nodes(dep.nodes, ["echo", "hi"])
    assert [o.node.name for o in outcomes] == [n.name for n in dep.nodes]
    *reached, lost = outcomes
    assert all(o.ok and o.value.stdout == "hi\n" for o in reached)
    assert isinstance(lost.error, TransportError) and lost.error.host == "gone"
    assert "127.0.0.250:2222" in str(lost.error) and "refused" in str(lost.error)
    assert "(3 attempts)" in str(lost.error)  # connection errors are retried, with backoff


def test_a_rejected_key_is_not_retried(sshd_fleet, tmp_path, monkeypatch):
    monkeypatch.setattr("ascend_run.transport.ssh.FIRST_BACKOFF_S", 30.0)  # a retry would show
    stranger = tmp_path / "id_stranger"
    stranger.write_text(_ed25519_pair()[0])
    stranger.chmod(0o600)
    server = sshd_fleet.servers[0]
    started = time.monotonic()
    with pytest.raises(TransportError, match="authentication as root@") as info:
        SSHTransport(server.address, port=server.port, key_file=str(stranger),
                     known_hosts=KnownHosts(sshd_fleet.known_hosts), name=server.name)
    assert time.monotonic() - started < 15
    assert not isinstance(info.value, HostKeyError) and "authorized_keys" in info.value.fix


def test_connect_all_raises_the_first_failure_and_closes_the_rest(sshd_fleet, tmp_path):
    dep = deployment(sshd_fleet, tmp_path, extra=[("gone", "127.0.0.250"), ("gone2", "127.0.0.251")])
    with pytest.raises(TransportError, match="also unreachable: gone2") as info:
        connect_all(dep)
    assert info.value.host == "gone"
    each = connect_each(dep)
    assert sum(isinstance(v, TransportError) for v in each.values()) == 2
    for value in each.values():
        if not isinstance(value, Exception):
            value.close()


def test_fan_out_bounds_parallelism_and_keeps_every_outcome(sshd_fleet, tmp_path):
    dep = deployment(sshd_fleet, tmp_path)
    running, peak, lock = 0, 0, threading.Lock()
    seen: list[int] = []

    def work(node):
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        time.sleep(0.05)
        with lock:
            running -= 1
        if node.rank == 1:
            raise RuntimeError("library bug")
        return node.rank

    outcomes = fan_out(dep.nodes, work, parallelism=2, on_done=lambda o, done, total: seen.append(done))
    assert peak == 2 and seen == [1, 2, 3, 4]
    assert [o.value for o in outcomes] == [0, None, 2, 3]
    assert isinstance(outcomes[1].error, TransportError) and outcomes[1].error.host == "n1"


# --- jump hosts and the user's ssh config ------------------------------------------------------------

def jump_deployment(fleet, tmp_path: Path, known: Path | None = None, strict: str = "yes", key: Path | None = None):
    """Servers 1..3 as `Host` aliases reached through server 0 (`ProxyJump`), all from an ssh config file;
    the deployment file names only the aliases and that file."""
    jump, *targets = fleet.servers
    key = key or fleet.key_file
    lines = [f"Host jumphost\n  HostName {jump.address}\n  Port {jump.port}\n  User root\n  IdentityFile {key}\n"
             f"  StrictHostKeyChecking {strict}\n"]
    lines += [f"Host {s.name}-alias\n  HostName {s.address}\n" for s in targets]
    lines.append(f"Host *-alias\n  ProxyJump jumphost\n  Port {jump.port}\n  IdentityFile {key}\n")
    lines.append(f"Host *\n  UserKnownHostsFile {known or fleet.known_hosts}\n")
    (tmp_path / "ssh_config").write_text("".join(lines))
    path = tmp_path / "deploy.yaml"
    path.write_text("name: jump-test\nprofile: atlas-800t-a2\nimage: local/none:0\nssh: {config_file: ssh_config}\n"
                    "nodes:\n" + "".join(f"  - {{address: {s.name}-alias, name: {s.name}}}\n" for s in targets))
    return load_deployment(path)


def client_connections(address: str, port: int) -> int:
    """TCP connections this process has open to address:port."""
    out = subprocess.run(["ss", "-Htnp", "state", "established", "dst", f"{address}:{port}"], capture_output=True,
                         text=True, check=True).stdout
    return sum(f"pid={os.getpid()}," in line for line in out.splitlines())


def test_servers_behind_a_jump_host_share_one_connection_to_it(sshd_fleet, tmp_path):
    dep = jump_deployment(sshd_fleet, tmp_path)
    jump = sshd_fleet.servers[0]
    assert all(n.ssh.via.hostname == jump.address for n in dep.nodes)
    transports = connect_all(dep)
    try:
        assert client_connections(jump.address, jump.port) == 1  # one login on the jump host for 3 servers
        for target in sshd_fleet.servers[1:]:
            assert client_connections(target.address, target.port) == 0  # none straight to the servers
        for node in dep.nodes:
            result = transports[node.name].run(["sh", "-c", 'echo "$SSH_CONNECTION"'])
            assert result.ok and result.stdout.split()[2] == sshd_fleet.servers[node.rank + 1].address
        streamed = transports["n1"].run(["head", "-c", "5000000", "/dev/zero"], on_stdout=lambda b: None)
        assert streamed.ok  # bulk streams go through the shared connection too
    finally:
        for transport in transports.values():
            transport.close()
    assert client_connections(jump.address, jump.port) == 0, "the last transport closed the jump connection"
    outcomes = run_on_nodes(dep.nodes, ["hostname"])  # exec's path: connect, run, close, all through the jump
    assert all(o.ok and o.value.ok for o in outcomes), [o.error for o in outcomes]


def test_a_changed_host_key_on_the_jump_host_fails_every_server_naming_it(sshd_fleet, tmp_path):
    jump = sshd_fleet.servers[0]
    impostor = paramiko.Ed25519Key.from_private_key(io.StringIO(_ed25519_pair()[0]))
    known = tmp_path / "known_hosts"
    lines = [line for line in sshd_fleet.known_hosts.read_text().splitlines() if not line.startswith(f"[{jump.address}]")]
    known.write_text("\n".join([*lines, f"[{jump.address}]:{jump.port} ssh-ed25519 {impostor.get_base64()}"]) + "\n")
    dep = jump_deployment(sshd_fleet, tmp_path, known=known, strict="accept-new")  # accept-new: still refused
    marker = tmp_path / "ran"
    outcomes = run_on_nodes(dep.nodes, ["touch", str(marker)])
    for outcome in outcomes:
        assert isinstance(outcome.error, HostKeyError), outcome.error
        assert outcome.error.host == outcome.node.name
        assert "jump host jumphost" in str(outcome.error) and "CHANGED" in str(outcome.error)
        assert jump.address in str(outcome.error) and fingerprint(impostor) in str(outcome.error)
    assert not marker.exists()


def test_unknown_server_behind_the_jump_host_gets_a_fix_run_on_the_jump_host(sshd_fleet, tmp_path):
    jump, target, *_ = sshd_fleet.servers
    known = tmp_path / "known_hosts"
    known.write_text(sshd_fleet.servers[0].known_hosts_line + "\n")
    dep = jump_deployment(sshd_fleet, tmp_path, known=known, strict="no")  # `no` does not turn checking off
    [outcome, *_] = run_on_nodes(dep.nodes, ["true"])
    assert isinstance(outcome.error, HostKeyError) and "unknown host key" in str(outcome.error)
    assert f"ssh jumphost ssh-keyscan -p {target.port} {target.address} >> {known}" in outcome.error.fix


def test_accept_new_in_the_ssh_config_records_the_jump_hosts_key(sshd_fleet, tmp_path):
    jump = sshd_fleet.servers[0]
    known = tmp_path / "known_hosts"
    known.write_text("".join(s.known_hosts_line + "\n" for s in sshd_fleet.servers[1:]))
    dep = jump_deployment(sshd_fleet, tmp_path, known=known, strict="accept-new")
    outcomes = run_on_nodes(dep.nodes, ["true"])
    assert all(o.ok for o in outcomes), [o.error for o in outcomes]
    assert jump.known_hosts_line in known.read_text().splitlines()


def test_a_missing_key_is_one_error_before_anything_is_contacted(sshd_fleet, tmp_path):
    missing = tmp_path / "no_such_key"
    dep = jump_deployment(sshd_fleet, tmp_path, key=missing)
    for call in (lambda: run_on_nodes(dep.nodes, ["true"]), lambda: connect_all(dep)):
        with pytest.raises(ConfigError, match=f"SSH key {missing} not found") as info:
            call()
        assert "IdentityFile" in str(info.value) and "ssh-keygen" in info.value.fix
    direct = tmp_path / "direct.yaml"
    direct.write_text(sshd_fleet.deployment_yaml().replace(str(sshd_fleet.key_file), str(missing)))
    with pytest.raises(ConfigError, match=f"ssh.identity_file in {direct}"):
        run_on_nodes(load_deployment(direct).nodes, ["true"])
