"""The user's ssh config: what is read from it, what the deployment file overrides, and what is refused."""

from __future__ import annotations

import getpass
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ascend_run.errors import ConfigError
from ascend_run.inputs.deployment import load_deployment
from ascend_run.inputs.sshconfig import parse_jump

CONFIG = """\
Host login
  HostName 10.1.0.1
  User admin
  Port 2022
  IdentityFile /keys/login_key
  StrictHostKeyChecking accept-new
  UserKnownHostsFile /kh/login /kh/other

Host ascend*
  ProxyJump login
  User ops
  IdentityFile /keys/ops_key
  UserKnownHostsFile /kh/cluster
  ConnectTimeout 7

Host ascend0
  HostName 192.168.0.10
  Port 2200

Host ascend1
  HostName 192.168.0.11
  StrictHostKeyChecking no
"""


def deployment(tmp_path: Path, config: str = CONFIG, ssh: str = "", nodes: str = "  - address: ascend[0-1]\n",
               config_file: str | None = "ssh_config"):
    (tmp_path / "ssh_config").write_text(config)
    lines = ["name: x", "profile: atlas-800t-a2", "image: a/b:1"]
    ssh_items = ([f"config_file: {config_file}"] if config_file else []) + ([ssh] if ssh else [])
    if ssh_items:
        lines.append("ssh: {" + ", ".join(ssh_items) + "}")
    path = tmp_path / "deploy.yaml"
    path.write_text("\n".join(lines) + "\nnodes:\n" + nodes)
    return load_deployment(path)


def test_aliases_resolve_to_the_ssh_config_hosts_through_the_jump_host(tmp_path):
    dep = deployment(tmp_path)
    zero, one = dep.nodes
    assert (zero.name, zero.address) == ("ascend0", "ascend0")  # the node keeps the name it was written with
    assert (zero.ssh.hostname, zero.ssh.port, zero.ssh.user) == ("192.168.0.10", 2200, "ops")
    assert zero.ssh.identity_files == ("/keys/ops_key",) and zero.ssh.known_hosts == ("/kh/cluster",)
    assert zero.ssh.connect_timeout == 7
    jump = zero.ssh.via
    assert (jump.name, jump.hostname, jump.port, jump.user) == ("login", "10.1.0.1", 2022, "admin")
    assert jump.identity_files == ("/keys/login_key",) and jump.known_hosts == ("/kh/login", "/kh/other")
    assert jump.via is None and jump.accept_new
    assert zero.ssh.via == one.ssh.via, "both servers share one jump hop (one connection)"
    assert zero.ssh.describe() == "ops@192.168.0.10:2200 via admin@10.1.0.1:2022"
    # msrun's master_ip and the rank table need the address the server has, not the alias
    assert zero.cluster_address == "192.168.0.10" and dep.master_address == "192.168.0.10"


def test_no_and_off_never_weaken_host_key_checking(tmp_path):
    _, one = deployment(tmp_path).nodes
    assert not one.ssh.accept_new  # `StrictHostKeyChecking no` is treated as yes


def test_the_deployment_file_wins_but_its_defaults_do_not(tmp_path):
    dep = deployment(tmp_path, ssh="user: root, port: 22, identity_file: /keys/mine, known_hosts: /kh/mine")
    zero = dep.nodes[0]
    assert (zero.ssh.user, zero.ssh.port, zero.ssh.identity_files, zero.ssh.known_hosts) == (
        "root", 22, ("/keys/mine",), ("/kh/mine",))
    assert zero.ssh.via.user == "admin", "the jump host keeps its own settings"
    per_node = deployment(tmp_path, nodes="  - {address: ascend0, ssh: {port: 2201, user: alice}}\n")
    assert (per_node.nodes[0].ssh.port, per_node.nodes[0].ssh.user) == (2201, "alice")
    plain = deployment(tmp_path, nodes="  - address: 10.9.9.9\n")  # no Host block: the kit's defaults
    hop = plain.nodes[0].ssh
    assert (hop.hostname, hop.port, hop.user, hop.via, hop.identity_files) == ("10.9.9.9", 22, "root", None, ())


def test_explicit_cluster_address_wins(tmp_path):
    dep = deployment(tmp_path, nodes="  - {address: ascend0, cluster_address: 10.50.0.1}\n")
    assert dep.nodes[0].cluster_address == "10.50.0.1"


def test_jump_hosts_get_the_deployment_files_key_and_known_hosts_when_the_config_names_none(tmp_path):
    config = "Host n*\n  ProxyJump bastion.example\n"
    dep = deployment(tmp_path, config=config, ssh="identity_file: /keys/mine, known_hosts: /kh/mine",
                     nodes="  - address: n1\n")
    jump = dep.nodes[0].ssh.via
    assert (jump.hostname, jump.user, jump.identity_files, jump.known_hosts) == (
        "bastion.example", getpass.getuser(), ("/keys/mine",), ("/kh/mine",))


def test_proxy_jump_chains_and_lists(tmp_path):
    config = "Host n1\n  ProxyJump inner\nHost inner\n  ProxyJump outer\n  User i\nHost n2\n  ProxyJump u@a:2200,b\n"
    dep = deployment(tmp_path, config=config, nodes="  - address: n1\n  - address: n2\n")
    assert [h.name for h in dep.nodes[0].ssh.chain()] == ["outer", "inner", "n1"]
    assert dep.nodes[0].ssh.via.user == "i"
    two = dep.nodes[1].ssh.chain()
    assert [(h.name, h.port) for h in two] == [("a", 2200), ("b", 22), ("n2", 22)] and two[0].user == "u"


def test_deployment_proxy_jump_wins_and_none_turns_the_configs_off(tmp_path):
    dep = deployment(tmp_path, ssh="proxy_jump: other-login")
    assert dep.nodes[0].ssh.via.name == "other-login"
    direct = deployment(tmp_path, ssh="proxy_jump: none")
    assert direct.nodes[0].ssh.via is None


@pytest.mark.parametrize("config,message", [
    ("Host n1\n  ProxyJump n2\nHost n2\n  ProxyJump n1\n", "loops"),
    ("Match exec \"true\"\n  User x\n", "Match exec` is not supported"),
    ("Host n1\n  ProxyCommand nc %h %p\n", "ProxyCommand is not supported"),
    ("Host n1\n  Port http\n", "Port 'http' is not a valid port"),
    ("Host n1\n  ProxyJump a b\n", "keyword ProxyJump extra arguments at end of line"),
])
def test_unsupported_or_broken_configs_are_refused_naming_the_file(tmp_path, config, message):
    with pytest.raises(ConfigError, match=message) as info:
        deployment(tmp_path, config=config, nodes="  - address: n1\n")
    assert str(tmp_path / "ssh_config") in str(info.value)


def test_match_exec_never_runs_its_command(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ConfigError):
        deployment(tmp_path, config=f"Match exec \"touch {marker}\"\n  User x\n", nodes="  - address: n1\n")
    assert not marker.exists()


def test_include_lines_are_read(tmp_path):
    (tmp_path / "more").write_text("Host n1\n  HostName 10.7.7.7\n")
    dep = deployment(tmp_path, config=f"Include {tmp_path / 'm*'}\nHost *\n  User z\n", nodes="  - address: n1\n")
    assert (dep.nodes[0].ssh.hostname, dep.nodes[0].ssh.user) == ("10.7.7.7", "z")


def test_which_config_file_is_read(tmp_path, monkeypatch):
    (tmp_path / "env_config").write_text("Host n1\n  HostName 10.8.8.8\n")
    monkeypatch.setenv("ASCEND_RUN_SSH_CONFIG", str(tmp_path / "env_config"))
    from_env = deployment(tmp_path, config_file=None, nodes="  - address: n1\n")
    assert from_env.nodes[0].ssh.hostname == "10.8.8.8"
    from_file = deployment(tmp_path, config="Host n1\n  HostName 10.9.9.9\n", nodes="  - address: n1\n")
    assert from_file.nodes[0].ssh.hostname == "10.9.9.9", "the deployment file's ssh.config_file wins"
    off = deployment(tmp_path, config_file="none", nodes="  - address: n1\n")
    assert off.nodes[0].ssh.hostname == "n1"
    with pytest.raises(ConfigError, match=r"deploy.yaml:\d+: ssh.config_file: ssh config file .*missing not found"):
        deployment(tmp_path, config_file="missing", nodes="  - address: n1\n")


@pytest.mark.parametrize("item,parsed", [
    ("host", (None, "host", None)), ("u@host:2200", ("u", "host", 2200)), ("ssh://u@h:22", ("u", "h", 22)),
    ("[fe80::1]:2222", (None, "fe80::1", 2222)),
])
def test_parse_jump(item, parsed):
    assert parse_jump(item) == parsed


def test_start_up_stays_light(tmp_path):
    """Loading a deployment file imports neither paramiko nor `invoke`, with or without an ssh config (the
    config is read by inputs/openssh_config.py)."""
    deployment(tmp_path, config="Host n1\n  HostName 10.1.1.1\n", nodes="  - address: n1\n")
    probe = ("import sys; from ascend_run.inputs.deployment import load_deployment; "
             "load_deployment(sys.argv[1]); print('paramiko' in sys.modules, 'invoke' in sys.modules)")
    env = {**os.environ, "ASCEND_RUN_SSH_CONFIG": "none"}
    plain = tmp_path / "plain.yaml"
    plain.write_text((tmp_path / "deploy.yaml").read_text().replace("ssh: {config_file: ssh_config}\n", ""))
    outs = [subprocess.run([sys.executable, "-c", probe, str(path)], capture_output=True, text=True, env=env,
                           check=True).stdout.split() for path in (plain, tmp_path / "deploy.yaml")]
    assert outs == [["False", "False"], ["False", "False"]]


INDEXED = """\
Host login bastion-?
  HostName 10.1.0.1
  User admin
Host node1
  HostName node1
Host node* !node7 !node8?
  User ops
  IdentityFile ~/.ssh/ops
  IdentityFile /k/%h
Host node[2-4]
  Port 2200
Host *.example
  HostName %h.internal
  ProxyJump login
Host *
  IdentityFile /k/default
  UserKnownHostsFile ~/kh
"""


@pytest.fixture(scope="module")
def indexed_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sshconfig") / "config"
    path.write_text(INDEXED)
    return path


@pytest.mark.parametrize("names", [
    ["login", "bastion-1", "bastion-12", "node1", "node2", "node7", "node80", "node9", "a.example", "x", "Node1",
     "node3", "node1", "node9", "b.example"],
])
def test_the_index_answers_as_paramikos_own_lookup(tmp_path, names):
    """Host blocks are indexed and answers shared by the names that match the same blocks; each answer is
    still paramiko's (literal, wildcard and negated patterns, first value wins, %h and ~ expanded)."""
    from ascend_run.inputs.sshconfig import UserConfig
    (tmp_path / "c").write_text(INDEXED)
    indexed, plain = UserConfig(tmp_path / "c"), UserConfig(tmp_path / "c")
    plain._index = None  # paramiko's lookup, name by name
    assert indexed._index is not None
    for name in names:
        assert indexed.lookup(name) == plain.lookup(name), name


@settings(max_examples=300, deadline=None)
@given(names=st.lists(st.text(alphabet="nodeblgistx-.12789*", min_size=1, max_size=10), min_size=1, max_size=20))
def test_the_index_answers_as_paramiko_for_any_names(indexed_file, names):
    """The same, for generated names (several matching the same wildcards, in any order)."""
    from ascend_run.inputs.sshconfig import UserConfig
    indexed, plain = UserConfig(indexed_file), UserConfig(indexed_file)
    plain._index = None
    for name in names:
        assert indexed.lookup(name) == plain.lookup(name), name


def test_many_servers_share_one_resolution_but_keep_their_names(tmp_path):
    dep = deployment(tmp_path, config="Host n*\n  ProxyJump login\n  IdentityFile /k/n\n",
                     nodes="  - address: n[1-500]\n")
    hops = [n.ssh for n in dep.nodes]
    assert [h.name for h in hops] == [f"n{i}" for i in range(1, 501)] == [h.hostname for h in hops]
    assert len({id(h.via) for h in hops}) == 1 and hops[0].via.name == "login"
    assert hops[7].identity_source.startswith("IdentityFile for n8 in ")


def test_a_server_that_is_its_own_jump_host_is_a_loop_among_many(tmp_path):
    with pytest.raises(ConfigError, match="gw -> gw loops"):
        deployment(tmp_path, config="", ssh="proxy_jump: gw", nodes="  - address: n[1-3]\n  - address: gw\n")


def test_a_config_with_one_block_per_server_is_read_in_linear_time(tmp_path):
    blocks = "".join(f"Host n{i}\n  HostName 10.0.{i >> 8}.{i & 255}\n  User u{i % 3}\n" for i in range(3000))
    dep = deployment(tmp_path, config=blocks + "Host n*\n  ProxyJump login\n", nodes="  - address: n[0-2999]\n")
    assert [n.ssh.hostname for n in dep.nodes[255:257]] == ["10.0.0.255", "10.0.1.0"]
    assert {n.ssh.user for n in dep.nodes} == {"u0", "u1", "u2"} and dep.nodes[-1].ssh.via.name == "login"


@pytest.mark.parametrize("make,message", [
    (lambda d: f"Include {d / 'ssh_config'} {d / 'ssh_config'}\n", "includes more than 1000 files|nested more"),
    (lambda d: "Include /dev/zero\n", r"/dev/zero \(an Include of .*ssh_config\) is not a regular file"),
    (lambda d: os.mkfifo(d / "fifo") or f"Include {d / 'fifo'}\n", r"fifo \(an Include of .*\) is not a regular"),
    (lambda d: (d / "bin").write_bytes(b"Host \xff\xfe\n") and f"Include {d / 'bin'}\n", r"bin \(an .*not UTF-8"),
])
def test_hostile_includes_end_with_an_error(tmp_path, make, message):
    """An Include loop, a device, a FIFO or a binary file: an error naming it, not a hang or a traceback."""
    with pytest.raises(ConfigError, match=message):
        deployment(tmp_path, config=make(tmp_path), nodes="  - address: n1\n")


def test_a_huge_ssh_config_is_refused(tmp_path, monkeypatch):
    from ascend_run.inputs import sshconfig
    monkeypatch.setattr(sshconfig, "MAX_CONFIG_BYTES", 1000)
    (tmp_path / "more").write_text("# padding\n" * 80)
    with pytest.raises(ConfigError, match="larger than 1,000 bytes"):
        deployment(tmp_path, config=f"Include {tmp_path / 'more'}\n" + "# x\n" * 40, nodes="  - address: n1\n")


def test_match_blocks_are_looked_up_name_by_name_within_a_bound(tmp_path, monkeypatch):
    from ascend_run.inputs import sshconfig
    config = "Match host n1\n  User one\nHost n*\n  User many\n"
    dep = deployment(tmp_path, config=config, nodes="  - address: n[1-3]\n")
    assert [n.ssh.user for n in dep.nodes] == ["one", "many", "many"]
    monkeypatch.setattr(sshconfig, "MAX_LOOKUP_WORK", 20)
    with pytest.raises(ConfigError, match="takes too long"):
        deployment(tmp_path, config=config + "# changed\n", nodes="  - address: n[1-30]\n")


def test_thousands_of_wildcard_patterns_are_refused_not_tried_for_every_server(tmp_path, monkeypatch):
    from ascend_run.inputs import sshconfig
    many = "Host " + " ".join(f"rack{i}-*" for i in range(5000)) + "\n  User x\n"
    with pytest.raises(ConfigError, match="5,000 Host or Match patterns with wildcards"):
        deployment(tmp_path, config=many, nodes="  - address: n1\n")
    monkeypatch.setattr(sshconfig, "MAX_LOOKUP_WORK", 100)  # the same bound as Match blocks have
    few = "Host a* b* c* d*\n  User x\n"
    for _ in range(3):  # the bound is per deployment loaded, not for the process (a supervisor reloads)
        assert deployment(tmp_path, config=few, nodes="  - address: n[1-10]\n").nodes[9].ssh.user == "root"
    with pytest.raises(ConfigError, match="takes too long"):
        deployment(tmp_path, config=few + "# changed\n", nodes="  - address: n[1-30]\n")
