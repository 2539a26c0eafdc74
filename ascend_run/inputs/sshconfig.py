"""The user's OpenSSH client configuration, read with paramiko's `SSHConfig`, and the resolved way to reach
one server: an `SSHHop` (where to connect, as whom, with which key, checked against which known_hosts, and
through which jump host).

People who run clusters already describe them in `~/.ssh/config`: `Host` aliases, `User`, `Port`,
`IdentityFile`, and a `ProxyJump` through the login node. A node's `address` in the deployment file is
looked up there like `ssh ADDRESS` would look it up. What is read: `HostName`, `User`, `Port`,
`IdentityFile`, `ProxyJump` (lists and chains: a jump host's own `ProxyJump` is followed),
`UserKnownHostsFile`, `StrictHostKeyChecking`, `ConnectTimeout`; `Include` lines are inlined.

What wins: what the deployment file sets explicitly (`ssh:` and a node's `ssh:`), then the ssh config, then
the kit's defaults (user root, port 22, ~/.ssh/known_hosts). Jump hosts take their settings from the ssh
config only; where it names no key or known_hosts file they use the deployment file's, and where it names no
user, the local user name (as ssh does).

Host keys are verified on every hop. `StrictHostKeyChecking accept-new` records keys of hosts not yet in
known_hosts (a changed key still fails), exactly as `--accept-new-host-keys`; `no`, `off` and `ask` never
weaken anything and are treated as `yes`: ascend-run does not connect to a server whose key it cannot check.
Refused with a clear error rather than ignored: `Match exec` (ascend-run never runs commands from an
ssh_config; paramiko's reader would need `invoke` for it) and `ProxyCommand` (use `ProxyJump`).

paramiko is imported only when a config file is actually read: commands that never connect stay fast.
"""

from __future__ import annotations

import getpass
import glob
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_run.errors import ConfigError

DEFAULT_CONFIG = "~/.ssh/config"
CONFIG_ENV = "ASCEND_RUN_SSH_CONFIG"  # the config file when the deployment file names none; `none`: read none
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_USER = "root"
DEFAULT_TIMEOUT = 10.0
MAX_HOPS = 8           # jump hosts on the way to one server (OpenSSH has no limit; a loop must end somewhere)
MAX_INCLUDE_DEPTH = 16  # as OpenSSH's READCONF_MAX_DEPTH


def import_paramiko():
    """paramiko, imported without `invoke`: paramiko.config imports it (~0.1 s of CPU at every start) only to
    run `Match exec` lines, which ascend-run refuses. Hidden while paramiko loads, then let be."""
    if "paramiko" in sys.modules:
        return sys.modules["paramiko"]
    hide = "invoke" not in sys.modules
    if hide:
        sys.modules["invoke"] = None  # type: ignore[assignment]
    try:
        import paramiko
        import paramiko.config  # noqa: F401  (inside the hiding: it is the module that imports invoke)
    finally:
        if hide:
            del sys.modules["invoke"]
    return paramiko


@dataclass(frozen=True)
class SSHHop:
    """One SSH server on the way to a node, the node itself being the last: everything needed to connect.

    `via` is the jump host this one is reached through (None: directly); it has its own `via` for chains.
    Hops are hashable: equal hops are one connection (all servers behind one jump host share it).
    """

    name: str                                 # as written (a `Host` alias, an address): used in messages
    hostname: str                             # what is connected to, and the name looked up in known_hosts
    port: int = 22
    user: str = DEFAULT_USER
    identity_files: tuple[str, ...] = ()      # tried in order; none: ssh-agent, then ~/.ssh/id_*
    known_hosts: tuple[str, ...] = (DEFAULT_KNOWN_HOSTS,)  # all are read; new keys go to the first
    accept_new: bool = False                  # StrictHostKeyChecking accept-new
    connect_timeout: float = DEFAULT_TIMEOUT
    via: SSHHop | None = None
    identity_source: str = field(default="", compare=False)  # where identity_files came from, for errors

    @property
    def identity_file(self) -> str | None:
        return self.identity_files[0] if self.identity_files else None

    def chain(self) -> list[SSHHop]:
        """Every hop from the outermost jump host to this one."""
        return [*(self.via.chain() if self.via else []), self]

    def endpoint(self) -> str:
        return f"{self.user}@{self.hostname}:{self.port}"

    def describe(self) -> str:
        """`root@10.0.0.5:22 via admin@login.example:22` (outermost jump host last)."""
        text = self.endpoint()
        hop = self.via
        while hop is not None:
            text += f" via {hop.endpoint()}"
            hop = hop.via
        return text


@dataclass(frozen=True)
class HostEntry:
    """What the ssh config says about one host name (None / empty: nothing)."""

    hostname: str | None = None
    user: str | None = None
    port: int | None = None
    identity_files: tuple[str, ...] = ()
    proxy_jump: str | None = None
    known_hosts: tuple[str, ...] = ()
    strict: str | None = None
    connect_timeout: float | None = None


class UserConfig:
    """One ssh_config file, parsed once; `lookup(name)` as ssh resolves `ssh name`."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._config = None
        if path is not None:
            paramiko = import_paramiko()
            text = _inline_includes(path, path.read_text(), 0)
            try:
                self._config = paramiko.SSHConfig.from_text(text)
            except paramiko.ssh_exception.ConfigParseError as exc:
                raise ConfigError(f"cannot parse: {exc}", file=str(path),
                                  fix="fix the line (ssh -G HOST shows how OpenSSH reads the file)") from None

    def lookup(self, name: str) -> HostEntry:
        if self._config is None:
            return HostEntry()
        try:
            found = self._config.lookup(name)
        except ImportError:  # paramiko reached a `Match exec` line (invoke is hidden on purpose)
            raise self._error(name, "`Match exec` is not supported: ascend-run does not run commands from an "
                                    "ssh config", "use Host patterns for these servers, or point ssh.config_file "
                                    f"(or {CONFIG_ENV}) at a file without Match exec") from None
        if found.get("proxycommand"):
            raise self._error(name, "ProxyCommand is not supported", "use ProxyJump [user@]host[:port] instead")
        return HostEntry(
            hostname=found["hostname"] if found.get("hostname") not in (None, name) else None,
            user=found.get("user"),
            port=self._number(name, "Port", found.get("port"), int),
            identity_files=tuple(os.path.expanduser(p) for p in found.get("identityfile", []) if p.lower() != "none"),
            proxy_jump=found.get("proxyjump"),
            known_hosts=tuple(os.path.expanduser(p) for p in (found.get("userknownhostsfile") or "").split()),
            strict=(found.get("stricthostkeychecking") or "").lower() or None,
            connect_timeout=self._number(name, "ConnectTimeout", found.get("connecttimeout"), float))

    def _number(self, name: str, key: str, value: str | None, kind: type) -> Any:
        if value is None:
            return None
        try:
            number = kind(value)
        except ValueError:
            number = 0
        if number <= 0 or (key == "Port" and number > 65535):
            raise self._error(name, f"{key} {value!r} is not a valid {key.lower()}", f"fix {key} for this host")
        return number

    def _error(self, name: str, message: str, fix: str) -> ConfigError:
        return ConfigError(f"{message} (looking up {name!r})", file=str(self.path), fix=fix)


_parsed: dict[tuple[str, float], UserConfig] = {}
_parsed_lock = threading.Lock()


def read_config(path: Path | None) -> UserConfig:
    """The parsed file, once per process per version of the file; UserConfig() (empty) for None."""
    if path is None:
        return UserConfig()
    key = (str(path), path.stat().st_mtime)
    with _parsed_lock:
        if key not in _parsed:
            _parsed[key] = UserConfig(path)
        return _parsed[key]


def config_path(explicit: str | None, is_explicit: bool, base: Path) -> Path | None:
    """Which ssh config to read: the deployment file's `ssh.config_file` (relative to the file), else
    $ASCEND_RUN_SSH_CONFIG, else ~/.ssh/config if it exists. `none` reads none. A file named explicitly
    (in the deployment file or the environment) must exist."""
    if is_explicit:
        value, where = explicit, "ssh.config_file"
    else:
        value, where = os.environ.get(CONFIG_ENV), CONFIG_ENV
        base = Path.cwd()
    if value is None and not is_explicit:
        default = Path(os.path.expanduser(DEFAULT_CONFIG))
        return default if default.is_file() else None
    if value is None or value.strip().lower() in ("none", ""):
        return None
    path = base / os.path.expanduser(value)
    if not path.is_file():
        raise ConfigError(f"ssh config file {path} not found ({where})",
                          fix="fix the path, or set it to `none` to read no ssh config")
    return path


def _inline_includes(path: Path, text: str, depth: int) -> str:
    """`Include` lines replaced by the files they name (paramiko's reader ignores them): globs, relative paths
    from ~/.ssh as ssh has them. Inside a Host/Match block the block's line is repeated after the included
    text, so the lines that follow still belong to it."""
    if depth > MAX_INCLUDE_DEPTH:
        raise ConfigError(f"Include nested more than {MAX_INCLUDE_DEPTH} deep (a loop?)", file=str(path))
    out: list[str] = []
    block: str | None = None
    for line in text.splitlines():
        match = re.match(r"\s*(\w+)(?:\s*=\s*|\s+)(.*)$", line)
        key = match.group(1).lower() if match else ""
        if key in ("host", "match"):
            block = line
        if key != "include" or not match.group(2).strip():
            out.append(line)
            continue
        for pattern in match.group(2).split():
            pattern = os.path.expanduser(pattern)
            if not os.path.isabs(pattern):
                pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
            for name in sorted(glob.glob(pattern)):
                out.append(_inline_includes(Path(name), Path(name).read_text(), depth + 1))
        if block is not None:
            out.append(block)
    return "\n".join(out) + "\n"


# --- resolving a node ---------------------------------------------------------------------------------


def node_hop(address: str, explicit: Mapping[str, Any], config: UserConfig, where: str) -> SSHHop:
    """How to reach the server written as `address`. `explicit` holds only what the deployment file sets
    (`user`, `port`, `identity_file`, `known_hosts`, `connect_timeout`, `proxy_jump`): it wins over the
    ssh config, which wins over the defaults. `where` names the deployment file in errors."""
    entry = config.lookup(address)
    if "known_hosts" in explicit:
        known = (os.path.expanduser(explicit["known_hosts"]),)
    else:
        known = entry.known_hosts or (os.path.expanduser(DEFAULT_KNOWN_HOSTS),)
    timeout = explicit.get("connect_timeout") or entry.connect_timeout or DEFAULT_TIMEOUT
    if explicit.get("identity_file"):
        identity, source = (os.path.expanduser(explicit["identity_file"]),), f"ssh.identity_file in {where}"
    elif entry.identity_files:
        identity, source = entry.identity_files, f"IdentityFile for {address} in {config.path}"
    else:
        identity, source = (), ""
    mine = bool(explicit.get("identity_file"))  # jump hosts are offered the file's key, not the config's
    inherit = _Inherit(known, timeout, identity if mine else (), source if mine else "")
    jump_source = where if "proxy_jump" in explicit else str(config.path)
    jump = explicit["proxy_jump"] if "proxy_jump" in explicit else entry.proxy_jump
    return SSHHop(name=address, hostname=entry.hostname or address, port=explicit.get("port") or entry.port or 22,
                  user=explicit.get("user") or entry.user or DEFAULT_USER, identity_files=identity,
                  known_hosts=known, accept_new=entry.strict == "accept-new", connect_timeout=timeout,
                  via=_jumps(jump, config, inherit, (address,), jump_source), identity_source=source)


@dataclass(frozen=True)
class _Inherit:
    """What jump hosts take from the deployment file when the ssh config says nothing about them."""

    known_hosts: tuple[str, ...]
    timeout: float
    identity: tuple[str, ...]
    source: str


def _jumps(spec: str | None, config: UserConfig, inherit: _Inherit, seen: tuple[str, ...],
           where: str) -> SSHHop | None:
    """The last hop of a `ProxyJump` list (`a,b`: through a, then b), each looked up in the ssh config;
    the first one's own ProxyJump is followed, as ssh does. `where` is the file the list was read from."""
    if spec is None or spec.strip().lower() in ("", "none"):
        return None
    via: SSHHop | None = None
    for index, item in enumerate(s.strip() for s in spec.split(",")):
        user, host, port = parse_jump(item, where)
        if host in seen or len(seen) > MAX_HOPS:
            raise ConfigError(f"ProxyJump {spec!r}: {' -> '.join((*seen, host))} "
                              + ("loops" if host in seen else f"is more than {MAX_HOPS} hops"),
                              file=where, fix="break the ProxyJump loop")
        entry = config.lookup(host)
        if index == 0:
            via = _jumps(entry.proxy_jump, config, inherit, (*seen, host), str(config.path))
        identity = entry.identity_files or inherit.identity
        source = f"IdentityFile for {host} in {config.path}" if entry.identity_files else inherit.source
        via = SSHHop(name=host, hostname=entry.hostname or host, port=port or entry.port or 22,
                     user=user or entry.user or getpass.getuser(), identity_files=identity,
                     known_hosts=entry.known_hosts or inherit.known_hosts, accept_new=entry.strict == "accept-new",
                     connect_timeout=entry.connect_timeout or inherit.timeout, via=via, identity_source=source)
        seen = (*seen, host)
    return via


_JUMP = re.compile(r"^(?:ssh://)?(?:(?P<user>[^@\s]+)@)?(?:\[(?P<v6>[^\]]+)\]|(?P<host>[^:@\s\[\]]+))"
                   r"(?::(?P<port>\d+))?$")


def parse_jump(item: str, where: str = "") -> tuple[str | None, str, int | None]:
    """`[ssh://][user@]host[:port]` (IPv6 in brackets) -> (user, host, port)."""
    match = _JUMP.match(item)
    port = int(match.group("port")) if match and match.group("port") else None
    if not match or (port is not None and not 0 < port < 65536):
        raise ConfigError(f"ProxyJump item {item!r} is not [user@]host[:port]", file=where or None,
                          fix="e.g. ProxyJump admin@login.example:22")
    return match.group("user"), match.group("v6") or match.group("host"), port
