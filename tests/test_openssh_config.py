"""The ssh config reader (inputs/openssh_config.py, behind inputs/sshconfig.UserConfig) against OpenSSH's own
`ssh -G` on a corpus of configs: Include at the top and inside blocks that do and do not apply, Match (host,
originalhost, user, localuser, all, final, negation), wildcards and negated patterns, tokens, ProxyJump chains,
quoting and `=`. Every field ascend-run reads must agree, for every name, jump hosts included.

`ssh -G` prints IdentityFile as written (it expands it when it uses it), HostName and UserKnownHostsFile
expanded: so identity files are compared as the reader obtains them, known_hosts files after the reader's
expansion (which is what the tokens test). Where the config sets nothing, ascend-run's HostEntry is empty and
OpenSSH's default stands in: the local user, port 22, ssh's default keys and known_hosts files.
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from ascend_run.inputs.openssh_config import resolve
from ascend_run.inputs.sshconfig import UserConfig

pytestmark = pytest.mark.skipif(shutil.which("ssh") is None, reason="OpenSSH's ssh client is not installed")

FIELDS = ("hostname", "user", "port", "proxyjump", "stricthostkeychecking", "connecttimeout", "userknownhostsfile",
          "identityfile")
HOME = os.path.expanduser("~")
DEFAULT_KEYS = [f"~/.ssh/id_{k}" for k in ("rsa", "ecdsa", "ecdsa_sk", "ed25519", "ed25519_sk", "xmss", "dsa")]

# Each case: {file name: text} (the first is the config; %D is the case's directory), and the names to look up.
CORPUS = {
    "include-inside-a-block-that-does-not-apply": ({
        "config": "Host login\n  HostName login.example\n  Include %D/nodes\nHost *\n  ProxyJump login\n"
                  "  HostName %h.cluster\n  Port 2222\n",
        "nodes": "User fromincluded\nHost n5\n  HostName 10.20.0.15\n"}, ["n5", "login", "other"]),
    "include-inside-a-block-that-applies": ({
        "config": "Host n*\n  Include %D/inc\n  User after\nHost *\n  User last\n",
        "inc": "Port 2022\nHost n5\n  HostName 10.20.0.15\nHost x\n  User x\n"}, ["n5", "n6", "m1"]),
    "include-at-the-top-with-globs": ({
        "config": "Include %D/conf.d/*.conf\nHost *\n  User fallback\n",
        "conf.d/10-a.conf": "Host a*\n  User alpha\n  IdentityFile ~/.ssh/a_key\n",
        "conf.d/20-b.conf": "Host *b\n  User beta\n  Port 2200\n"}, ["a1", "xb", "ab", "zz"]),
    "match-final-second-pass": ({
        "config": "Match host 10.* user admin\n  Port 2200\nHost n? !n9\n  HostName 10.0.0.%h\n  User admin\n"
                  "Match originalhost n1 final\n  ConnectTimeout 7\nMatch all\n  StrictHostKeyChecking accept-new\n"},
        ["n1", "n2", "n9", "m"]),
    "match-criteria-and-negation": ({
        "config": f"Match !host gpu*,!cpu* originalhost *\n  Port 2001\nMatch localuser {getpass.getuser()}\n"
                  "  User viaLocal\nMatch user nobody\n  Port 9\nHost gpu* cpu*\n  HostName %h.fabric\n"},
        ["gpu1", "cpu1", "x1"]),
    "wildcards-and-negated-patterns": ({
        "config": "Host node* !node7 !node8?\n  User ops\nHost node[2-4] node1?\n  Port 2200\n"
                  "Host ?x\n  HostName fixed.%h\nHost *\n  User everyone\n  IdentityFile ~/.ssh/all\n"},
        ["node1", "node7", "node80", "node3", "node12", "ax", "abx"]),
    "tokens": ({
        "config": "Host t*\n  HostName %h.internal\n  User tok\n  Port 2345\n"
                  "  UserKnownHostsFile %d/kh_%h %d/kh_%n_%p_%r ~/kh_%u %d/%%literal\n"
                  "  IdentityFile ~/.ssh/id_%h\n  IdentityFile %d/keys/%r\n"}, ["t1", "tabc"]),
    "proxyjump-chains": ({
        "config": "Host inner\n  ProxyJump outer\n  User in\nHost outer\n  HostName 192.0.2.7\n  Port 2022\n"
                  "Host n*\n  ProxyJump jump1,inner\nHost jump1\n  User j1\n  ProxyJump none\n"},
        ["n1", "inner", "outer", "jump1"]),
    "first-value-wins-quotes-and-equals": ({
        "config": 'Host q1\n  User = first\n  User second\n  IdentityFile "/k/with space"\n'
                  "  IdentityFile /k/two\nHost *\n  IdentityFile /k/two\n  IdentityFile /k/three\n"
                  '  HOSTNAME="%h.eq"\n  connecttimeout=12\n  stricthostkeychecking no\n'}, ["q1", "q2"]),
    "nested-includes-restore-the-state": ({
        "config": "Host a\n  Include %D/one\n  User a-after\nHost b\n  User b\n",
        "one": "Port 1111\nInclude %D/two\nHost b\n  Port 3333\n",
        "two": "Host a b\n  HostName two.example\n"}, ["a", "b", "c"]),
}


def ssh_g(config: Path, name: str) -> dict:
    result = subprocess.run(["ssh", "-G", "-F", str(config), name], capture_output=True, text=True, timeout=30,
                            stdin=subprocess.DEVNULL)
    assert result.returncode == 0, result.stderr
    out: dict = {"identityfile": [], "proxyjump": None}
    for line in result.stdout.splitlines():
        key, _, value = line.partition(" ")
        if key == "identityfile":
            out[key].append(value)
        elif key in FIELDS:
            out[key] = value.split() if key == "userknownhostsfile" else value
    return out


def kit(config: Path, name: str) -> dict:
    """What ascend-run obtains from the file for `name`, in ssh -G's terms."""
    user_config = UserConfig(config)
    entry = user_config.lookup(name)
    raw = resolve(user_config.tree, name)
    strict = {"yes": "true", "no": "false", None: "ask"}.get(entry.strict, entry.strict)
    timeout = entry.connect_timeout
    jump = None if (entry.proxy_jump or "none").lower() == "none" else entry.proxy_jump  # `none`: no jump host
    return {"hostname": (entry.hostname or name).lower(), "user": entry.user or getpass.getuser(),
            "port": str(entry.port or 22), "proxyjump": jump, "stricthostkeychecking": strict,
            "connecttimeout": "none" if timeout is None else f"{timeout:g}",
            "userknownhostsfile": list(entry.known_hosts) or [f"{HOME}/.ssh/known_hosts", f"{HOME}/.ssh/known_hosts2"],
            "identityfile": raw.get("identityfile") or DEFAULT_KEYS}


def write_case(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("%D", str(tmp_path)))
    return tmp_path / next(iter(files))


@pytest.mark.parametrize("case", sorted(CORPUS))
def test_every_field_agrees_with_ssh_g(case, tmp_path):
    files, names = CORPUS[case]
    config = write_case(tmp_path, files)
    checked = 0
    for name in names:
        want, got = ssh_g(config, name), kit(config, name)
        for hop in (want["proxyjump"] or "").split(","):  # the jump hosts are looked up the same way
            if hop and hop != "none" and hop not in names:
                names.append(hop)
        for key in FIELDS:
            assert got[key] == want[key], f"{case}: {name}: {key}: ascend-run {got[key]!r}, ssh -G {want[key]!r}"
            checked += 1
    assert checked >= 8 * 2


def test_the_issues_example_reaches_n5_directly(tmp_path):
    """An Include after a Host block applies only where the block does: n5 is 10.20.0.15 through the login node
    for OpenSSH, and for the kit (which used to read it as n5.cluster)."""
    files, _ = CORPUS["include-inside-a-block-that-applies"]
    config = write_case(tmp_path, files)
    assert UserConfig(config).lookup("n5").hostname == "10.20.0.15" == ssh_g(config, "n5")["hostname"]
    files, _ = CORPUS["include-inside-a-block-that-does-not-apply"]
    config = write_case(tmp_path / "other", files)
    assert UserConfig(config).lookup("n5").hostname == "n5.cluster" == ssh_g(config, "n5")["hostname"]


@pytest.mark.parametrize("config,message", [
    ("Host n1\n  User 'x;rm -rf ~'\n", "User 'x;rm -rf ~' for n1 is not a login name"),
    ("Host n1\n  ProxyJump 'bad$(id)'\n", "a ProxyJump host of n1"),
    ("Host n1\n  ProxyJump login\nHost login\n  HostName 'a b|c'\n", "the HostName of jump host login"),
    ("Host n1\n  ProxyJump 'ev il'@login\n", "is not a login name|is not \\[user@\\]host"),
    ("Host n1\n  HostName '10.0.0.1;reboot'\n", "HostName"),
])
def test_names_from_the_ssh_config_are_checked_like_the_deployment_files(config, message, tmp_path):
    from ascend_run.errors import ConfigError
    from ascend_run.inputs.deployment import load_deployment

    (tmp_path / "ssh_config").write_text(config)
    (tmp_path / "job.yaml").write_text("name: j\nprofile: atlas-800t-a2\nimage: x:1\n"
                                       "ssh: {config_file: ssh_config, identity_file: /k}\nnodes:\n  - address: n1\n")
    with pytest.raises(ConfigError, match=message):
        load_deployment(tmp_path / "job.yaml")
