"""The user's OpenSSH client configuration, read as OpenSSH reads it (inputs/openssh_config.py: Include anywhere
with its semantics, Match, a final pass, tokens; checked against `ssh -G`), and the resolved way to reach one
server: an `SSHHop` (where to connect, as whom, with which key, checked against which known_hosts, and
through which jump host).

People who run clusters already describe them in `~/.ssh/config`: `Host` aliases, `User`, `Port`,
`IdentityFile`, and a `ProxyJump` through the login node. A node's `address` in the deployment file is
looked up there like `ssh ADDRESS` would look it up. What is read: `HostName`, `User`, `Port`,
`IdentityFile`, `ProxyJump` (lists and chains: a jump host's own `ProxyJump` is followed),
`UserKnownHostsFile`, `StrictHostKeyChecking`, `ConnectTimeout`. Names it gives (User, HostName, ProxyJump
hosts) are checked as the deployment file's are: a login name, an IP address or a DNS name.

What wins: what the deployment file sets explicitly (`ssh:` and a node's `ssh:`), then the ssh config, then
the kit's defaults (user root, port 22, ~/.ssh/known_hosts). Jump hosts take their settings from the ssh
config only; where it names no key or known_hosts file they use the deployment file's, and where it names no
user, the local user name (as ssh does).

Host keys are verified on every hop. `StrictHostKeyChecking accept-new` records keys of hosts not yet in
known_hosts (a changed key still fails), exactly as `--accept-new-host-keys`; `no`, `off` and `ask` never
weaken anything and are treated as `yes`: ascend-run does not connect to a server whose key it cannot check.
Refused with a clear error rather than ignored: `Match exec` (ascend-run never runs commands from an
ssh_config), Match criteria it does not read, and `ProxyCommand` (use `ProxyJump`).

No paramiko here: loading a deployment file never imports it; commands that never connect stay fast.
"""

from __future__ import annotations

import functools
import getpass
import os
import re
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_run.errors import ConfigError
from ascend_run.inputs import text
from ascend_run.inputs.openssh_config import glob_regex

DEFAULT_CONFIG = "~/.ssh/config"
CONFIG_ENV = "ASCEND_RUN_SSH_CONFIG"  # the config file when the deployment file names none; `none`: read none
DEFAULT_KNOWN_HOSTS = "~/.ssh/known_hosts"
DEFAULT_USER = "root"
DEFAULT_TIMEOUT = 10.0
MAX_HOPS = 8           # jump hosts on the way to one server (OpenSSH has no limit; a loop must end somewhere)
MAX_INCLUDE_DEPTH = 16  # as OpenSSH's READCONF_MAX_DEPTH
MAX_CONFIG_BYTES = 8 << 20  # the ssh config and every file it includes, all together
MAX_CONFIG_FILES = 1000     # files read for it (itself and its Includes, each time it is included)
MAX_LOOKUP_WORK = 20_000_000  # patterns the lookups of all servers together may try (see UserConfig._charge)
MAX_WILDCARDS = 4096         # Host/Match patterns with wildcards in one ssh config (a cluster's has a few)


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
        out = self.endpoint()
        hop = self.via
        while hop is not None:
            out += f" via {hop.endpoint()}"
            hop = hop.via
        return out


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

    def but_hostname(self) -> tuple:
        """Everything but HostName: servers alike in these are reached alike (a generated config has one
        block per server that differs only in HostName)."""
        return (self.user, self.port, self.identity_files, self.proxy_jump, self.known_hosts, self.strict,
                self.connect_timeout)


class Meter:
    """The patterns the lookups of one deployment's servers may have tried (`UserConfig._charge`)."""

    def __init__(self) -> None:
        self.work = 0


class UserConfig:
    """One ssh_config file, parsed once; `lookup(name)` as ssh resolves `ssh name`.

    Linear in the servers looked up: a file with only `Host` blocks (the usual case) is indexed once
    (`_HostIndex`), and servers that match the same blocks share one answer, so 51,200 servers cost about
    what one regular expression per server costs, whatever the file's size. Files with `Match` blocks or
    canonicalisation are asked name by name through paramiko, within a bounded amount of work."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self._config = None
        self._index: _HostIndex | None = None
        self._entries: dict[tuple[int, ...], HostEntry] = {}   # per set of matching blocks (index)
        self._by_name: dict[str, HostEntry] = {}               # per name (no index)
        self._cost = (0, 0)                                    # (wildcard patterns, all patterns) of the file
        self._expanded: dict[str, str] = {}
        if path is not None:
            from ascend_run.inputs import openssh_config

            budget = _Budget(MAX_CONFIG_BYTES, MAX_CONFIG_FILES)
            self._config = openssh_config.parse_text(
                _read_bounded(path, budget), str(path),
                lambda included, by: _read_bounded(included, budget, included_by=Path(by)),
                max_depth=MAX_INCLUDE_DEPTH)
            blocks = openssh_config.host_blocks(self._config)
            self._cost = openssh_config.count_patterns(self._config)
            if self._cost[0] > MAX_WILDCARDS:
                raise ConfigError(f"{self._cost[0]:,} Host or Match patterns with wildcards (at most "
                                  f"{MAX_WILDCARDS:,}): every server would be tried against each of them",
                                  file=str(path), fix="a cluster's ssh config needs a few; point ssh.config_file "
                                  f"(or {CONFIG_ENV}) at a file with fewer")
            self._index = _HostIndex.build(blocks) if blocks is not None else None

    @property
    def tree(self):
        """The parsed file (inputs/openssh_config.Tree), None without one."""
        return self._config

    def lookup(self, name: str, meter: Meter | None = None) -> HostEntry:
        """What the file says about `name`; `meter` counts the work of many lookups (one deployment's)."""
        if self._config is None:
            return _NOTHING
        meter = meter or Meter()
        if self._index is None:
            return self._lookup_by_name(name, meter)
        self._charge(name, 1 + len(self._index.wild), meter)  # an expression of all wildcards, for every name
        blocks = self._index.matching(name)
        found = self._entries.get(blocks)
        if found is not None:
            return found
        options, named = self._index.merge(blocks)
        if "proxycommand" in options and options["proxycommand"] is not None:
            raise self._error(name, "ProxyCommand is not supported", "use ProxyJump [user@]host[:port] instead")
        if "hostname" in options:
            from ascend_run.inputs.openssh_config import expand_hostname

            options["hostname"] = expand_hostname(options["hostname"], name)
        options.setdefault("hostname", name)
        itself = options["hostname"] == name  # `HostName` naming the server itself is no HostName
        entry = self._entry(name, options, named and not itself)
        if not (self._index.names(blocks) or (named and itself)):  # the answer of every name matching these
            self._entries[blocks] = entry
        return entry

    def _lookup_by_name(self, name: str, meter: Meter) -> HostEntry:
        """OpenSSH's lookup (Match blocks, Includes inside blocks, a final pass), once per name, bounded in
        total work (inputs/openssh_config.py)."""
        from ascend_run.inputs.openssh_config import resolve

        if name in self._by_name:
            return self._by_name[name]
        self._charge(name, self._cost[1], meter)  # every pattern of every block
        found = resolve(self._config, name)
        if found.get("proxycommand"):
            raise self._error(name, "ProxyCommand is not supported", "use ProxyJump [user@]host[:port] instead")
        entry = self._by_name[name] = self._entry(name, found, found.get("hostname") not in (None, name))
        return entry

    def _charge(self, name: str, patterns: int, meter: Meter) -> None:
        """Count the patterns a lookup may try; past MAX_LOOKUP_WORK for all servers of a deployment
        together, an error instead of minutes (thousands of wildcard patterns, or Match blocks, times
        51,200 servers)."""
        meter.work += patterns
        if meter.work > MAX_LOOKUP_WORK:
            raise self._error(name, f"looking the servers up in this ssh config takes too long ({self._cost[1]:,} "
                                    f"Host/Match patterns, {self._cost[0]:,} with wildcards, tried for every server)",
                              "write Host blocks with few wildcard patterns (Match blocks are tried in full for "
                              f"every server), or point ssh.config_file (or {CONFIG_ENV}) at a smaller file")

    def _entry(self, name: str, found: Mapping[str, Any], named: bool) -> HostEntry:
        """The settings ascend-run reads; `named`: the file sets HostName (else it is `name` itself). Each is
        one line of text (`inputs.text`): they reach messages and the dry runs' comments."""
        for key in _READ:
            values = found.get(key)
            for value in values if isinstance(values, list) else [values]:
                try:
                    if isinstance(value, str):
                        text.one_line(value)
                except text.Invalid as exc:
                    raise self._error(name, f"{_READ[key]} {exc}", exc.fix or "") from None
        port = self._number(name, "Port", found.get("port"), int)
        hostname = found.get("hostname") or name
        paths = functools.partial(self._path, name, hostname, port or 22, found.get("user"))
        known = found.get("userknownhostsfile") or []
        return HostEntry(
            hostname=found["hostname"] if named else None,
            user=found.get("user"),
            port=port,
            identity_files=tuple(paths(p, "IdentityFile") for p in found.get("identityfile", [])
                                 if p.lower() != "none"),
            proxy_jump=found.get("proxyjump"),
            known_hosts=tuple(paths(p, "UserKnownHostsFile")
                              for p in (known.split() if isinstance(known, str) else known) if p.lower() != "none"),
            strict=(found.get("stricthostkeychecking") or "").lower() or None,
            connect_timeout=self._number(name, "ConnectTimeout", found.get("connecttimeout"), float))

    def _path(self, name: str, hostname: str, port: int, user: str | None, path: str, key: str) -> str:
        """A path setting with `~` and its %-tokens expanded as ssh does (openssh_config.expand_tokens); those
        without a token once per distinct path (the same few for every server)."""
        if "%" in path:
            from ascend_run.inputs.openssh_config import expand_tokens

            return expand_tokens(path, original=name, hostname=hostname, port=port, user=user or _local_user(),
                                 what=f"{key} {path} in {self.path}")
        expanded = self._expanded.get(path)
        if expanded is None:
            expanded = self._expanded[path] = os.path.expanduser(path)
        return expanded

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


_NOTHING = HostEntry()
_READ = {"hostname": "HostName", "user": "User", "port": "Port", "identityfile": "IdentityFile",
         "proxyjump": "ProxyJump", "userknownhostsfile": "UserKnownHostsFile",
         "stricthostkeychecking": "StrictHostKeyChecking", "connecttimeout": "ConnectTimeout"}
_WILDCARDS = re.compile(r"[*?]")  # OpenSSH's only wildcards (`[` is itself)


class _HostIndex:
    """Which `Host` blocks of a parsed config match a name, without trying every pattern of the file.

    paramiko's rule per block: a name matches when one of its patterns matches and none of its `!`
    patterns does. Literal patterns (most of a cluster's config: one block per server) are found in a
    dict; `*` alone matches everything; the other wildcard patterns are tried only when one regular
    expression made of all of them matches. The matching blocks, in file order, are the key under which
    a lookup's answer is kept."""

    def __init__(self, blocks: list[dict]) -> None:
        self.blocks = blocks
        self.literal: dict[str, list[int]] = {}
        self.wild: list[tuple[int, Any]] = []   # (block, compiled pattern) for wildcard patterns but `*`
        self.everything: list[int] = []         # blocks with a plain `*`
        # per block: whether its values hold tokens paramiko expands (`~` is the same for every name, `%` not)
        self._names = [any("%" in v for v in _values(b["config"])) for b in blocks]
        self._tokens = [named or any("~" in v for v in b["config"].get("identityfile") or ())
                        for named, b in zip(self._names, blocks)]
        self.patterns: list[list[tuple[bool, Any]]] = []  # per block: (negated, literal str or compiled)
        for number, block in enumerate(blocks):
            mine = []
            for pattern in block["host"]:
                bare = pattern.removeprefix("!")
                if pattern == "*":
                    self.everything.append(number)
                    matcher: Any = glob_regex(bare)
                elif _WILDCARDS.search(bare):
                    matcher = glob_regex(bare)
                    self.wild.append((number, matcher))
                else:
                    matcher = bare
                    self.literal.setdefault(bare, []).append(number)
                mine.append((pattern.startswith("!"), matcher))
            self.patterns.append(mine)
        self.any_wild = re.compile("|".join(f"(?:{p.pattern})" for _, p in self.wild)) if self.wild else None
        self._by_hits: dict[tuple[int, ...], tuple[int, ...]] = {}

    @classmethod
    def build(cls, blocks: Any) -> _HostIndex | None:
        """The index, or None where only paramiko's own lookup is right: Match blocks, canonicalisation,
        or a paramiko whose parsed form is not the one this reads."""
        try:
            for block in blocks:
                if "matches" in block or not isinstance(block["host"], list) or not isinstance(block["config"], dict):
                    return None
                if str(block["config"].get("canonicalizehostname", "no")).lower() in ("yes", "always"):
                    return None
        except (TypeError, KeyError):
            return None
        return cls(blocks)

    def matching(self, name: str) -> tuple[int, ...]:
        """The blocks that match `name`, in file order. Without a literal pattern equal to `name`, that depends
        only on which wildcard patterns match it: remembered per such set (`10.*` matches 51,200 servers)."""
        hits: tuple[int, ...] = ()
        if self.any_wild is not None and self.any_wild.match(name):
            hits = tuple([index for index, (_, pattern) in enumerate(self.wild) if pattern.match(name)])
        literal = self.literal.get(name)
        if literal is None:
            found = self._by_hits.get(hits)
            if found is None:
                found = self._by_hits[hits] = self._matching(name, [self.wild[i][0] for i in hits])
            return found
        return self._matching(name, [*literal, *(self.wild[i][0] for i in hits)])

    def _matching(self, name: str, candidates: list[int]) -> tuple[int, ...]:
        """The blocks that match `name`: `candidates` (blocks with a pattern that matches it) checked with
        their negations, and the blocks with a plain `*` that are not candidates."""
        if not candidates:
            return tuple(self.everything)
        chosen = set(candidates)
        found = {n for n in self.everything if n not in chosen}
        found.update(n for n in chosen if self._matches(self.patterns[n], name))
        return tuple(sorted(found))

    @staticmethod
    def _matches(patterns: list[tuple[bool, Any]], name: str) -> bool:
        """paramiko's `_pattern_matches` (a `!` pattern that matches wins), with the patterns prepared."""
        hit = False
        for negated, matcher in patterns:
            if matcher == name if isinstance(matcher, str) else matcher.match(name):
                if negated:
                    return False
                hit = True
        return hit

    def merge(self, numbers: tuple[int, ...]) -> tuple[dict[str, Any], bool]:
        """The options of these blocks as paramiko merges them (the first value wins, IdentityFiles add up),
        and whether one of them sets HostName."""
        options: dict[str, Any] = {}
        for number in numbers:
            for key, value in self.blocks[number]["config"].items():
                if key not in options:
                    options[key] = value[:] if isinstance(value, list) else value
                elif key == "identityfile":
                    options[key].extend(x for x in value if x not in options[key])
        return options, "hostname" in options

    def tokens(self, numbers: tuple[int, ...]) -> bool:
        """Whether these blocks hold something paramiko expands (`%h`, `~` in IdentityFile)."""
        return any(self._tokens[n] for n in numbers)

    def names(self, numbers: tuple[int, ...]) -> bool:
        """Whether these blocks hold a %-token: then each name has its own answer."""
        return any(self._names[n] for n in numbers)


def _values(config: dict) -> list[str]:
    return [v for value in config.values() for v in (value if isinstance(value, list) else [value])
            if isinstance(v, str)]


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


class _Budget:
    """Bytes and files still allowed for the ssh config and everything it includes."""

    def __init__(self, left: int, files: int) -> None:
        self.left, self.files = left, files


def _read_bounded(path: Path, budget: _Budget, included_by: Path | None = None) -> str:
    """A config file's text, read no further than the budget: `Include /dev/zero`, a FIFO or a file that
    includes itself twice end with an error instead of filling memory or waiting forever."""
    name = f"ssh config {path}" + (f" (an Include of {included_by})" if included_by else "")
    if not path.is_file():  # a FIFO would block, /dev/zero never ends
        raise ConfigError(f"{name} is not a regular file", fix="include only ssh config files")
    budget.files -= 1
    if budget.files < 0:
        raise ConfigError(f"the ssh config includes more than {MAX_CONFIG_FILES} files (at {name}; an Include "
                          "loop?)", fix="include each file once")
    try:
        with path.open("rb") as handle:
            data = handle.read(budget.left + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {name}: {exc.strerror}", fix="check the file's permissions") from None
    if len(data) > budget.left:
        raise ConfigError(f"the ssh config with the files it includes is larger than {MAX_CONFIG_BYTES:,} bytes "
                          f"(at {name}; an Include loop?)", fix="include each file once, or point "
                          f"ssh.config_file (or {CONFIG_ENV}) at a smaller file")
    budget.left -= len(data)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{name} is not UTF-8 text (byte {exc.start})",
                          fix="save it as UTF-8, or set ssh.config_file: none") from None


# --- resolving a node ---------------------------------------------------------------------------------


def node_hop(address: str, explicit: Mapping[str, Any], config: UserConfig, where: str,
             jumps: dict | None = None, meter: Meter | None = None) -> SSHHop:
    """How to reach the server written as `address`. `explicit` holds only what the deployment file sets
    (`user`, `port`, `identity_file`, `known_hosts`, `connect_timeout`, `proxy_jump`): it wins over the
    ssh config, which wins over the defaults. `where` names the deployment file in errors. `jumps` keeps
    resolved jump chains between calls (servers behind one jump host share its hop); `meter` counts the
    lookups' work across them."""
    meter = meter or Meter()
    entry = config.lookup(address, meter)
    if "known_hosts" in explicit:
        known = (os.path.expanduser(explicit["known_hosts"]),)
    else:
        known = entry.known_hosts or (os.path.expanduser(DEFAULT_KNOWN_HOSTS),)
    timeout = explicit.get("connect_timeout") or entry.connect_timeout or DEFAULT_TIMEOUT
    identity, source = _identity(address, explicit, entry, config, where)
    mine = bool(explicit.get("identity_file"))  # jump hosts are offered the file's key, not the config's
    inherit = _Inherit(known, timeout, identity if mine else (), source if mine else "")
    jump_source = where if "proxy_jump" in explicit else str(config.path)
    jump = explicit["proxy_jump"] if "proxy_jump" in explicit else entry.proxy_jump
    if entry.user and not explicit.get("user"):
        _checked_user(entry.user, address, config)
    return SSHHop(name=address, hostname=entry.hostname or address, port=explicit.get("port") or entry.port or 22,
                  user=explicit.get("user") or entry.user or DEFAULT_USER, identity_files=identity,
                  known_hosts=known, accept_new=entry.strict == "accept-new", connect_timeout=timeout,
                  via=_jump_chain(address, jump, config, inherit, jump_source, jumps, meter),
                  identity_source=source)


def _jump_chain(address: str, spec: str | None, config: UserConfig, inherit: _Inherit, where: str,
                jumps: dict | None, meter: Meter) -> SSHHop | None:
    """`_jumps` from `address`, from `jumps` when that chain was resolved before and does not pass
    through `address` itself (then `_jumps` resolves it again, and reports the loop)."""
    if jumps is None:
        return _jumps(spec, config, inherit, (address,), where, meter)
    key = (spec, inherit, where)
    known = jumps.get(key)
    if known is not None and address not in known[1]:
        return known[0]
    via = _jumps(spec, config, inherit, (address,), where, meter)
    jumps[key] = (via, frozenset(hop.name for hop in via.chain()) if via else frozenset())
    return via


def _identity(address: str, explicit: Mapping[str, Any], entry: HostEntry, config: UserConfig,
              where: str) -> tuple[tuple[str, ...], str]:
    """The keys to offer `address`, and where they were named (for errors)."""
    if explicit.get("identity_file"):
        return (os.path.expanduser(explicit["identity_file"]),), f"ssh.identity_file in {where}"
    if entry.identity_files:
        return entry.identity_files, f"IdentityFile for {address} in {config.path}"
    return (), ""


class HopResolver:
    """`node_hop` for every server of one deployment file, in time linear in their number.

    Servers whose ssh config answers (`HostEntry`, HostName aside) and explicit settings are the same differ
    only in their name and host name, so the hop, jump hosts included, is resolved once per such group and
    copied with each server's own names: 51,200 servers of one `nodes:` entry cost one resolution, not 51,200."""

    def __init__(self, config: UserConfig, where: str) -> None:
        self.config, self.where = config, where
        self._resolved: dict[tuple, tuple[SSHHop, frozenset[str]]] = {}
        self._jumps: dict = {}
        self.meter = Meter()

    def hop(self, address: str, explicit: Mapping[str, Any], key: Any = None) -> SSHHop:
        """`key`: a hashable form of `explicit` when the caller has one (computed once per entry)."""
        entry = self.config.lookup(address, self.meter)
        group = (entry.but_hostname(), key if key is not None else tuple(sorted(explicit.items())))
        known = self._resolved.get(group)
        if known is None:
            hop = node_hop(address, explicit, self.config, self.where, self._jumps, self.meter)
            via = hop.via.chain() if hop.via else []
            self._resolved[group] = (hop, frozenset(h.name for h in via))
            return hop
        first, jump_names = known
        if address in jump_names:  # the server is one of its own jump hosts: node_hop reports the loop
            return node_hop(address, explicit, self.config, self.where, meter=self.meter)
        identity, source = _identity(address, explicit, entry, self.config, self.where)
        return SSHHop(address, entry.hostname or address, first.port, first.user, identity, first.known_hosts,
                      first.accept_new, first.connect_timeout, first.via, source)


@dataclass(frozen=True)
class _Inherit:
    """What jump hosts take from the deployment file when the ssh config says nothing about them."""

    known_hosts: tuple[str, ...]
    timeout: float
    identity: tuple[str, ...]
    source: str


def _jumps(spec: str | None, config: UserConfig, inherit: _Inherit, seen: tuple[str, ...],
           where: str, meter: Meter | None = None) -> SSHHop | None:
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
        _checked_host(host, f"a ProxyJump host of {seen[0]}", where)
        entry = config.lookup(host, meter)
        if entry.hostname:
            _checked_host(entry.hostname, f"the HostName of jump host {host}", str(config.path))
        if user or entry.user:
            _checked_user(user or entry.user, host, config)
        if index == 0:
            via = _jumps(entry.proxy_jump, config, inherit, (*seen, host), str(config.path), meter)
        identity = entry.identity_files or inherit.identity
        source = f"IdentityFile for {host} in {config.path}" if entry.identity_files else inherit.source
        via = SSHHop(name=host, hostname=entry.hostname or host, port=port or entry.port or 22,
                     user=user or entry.user or _local_user(), identity_files=identity,
                     known_hosts=entry.known_hosts or inherit.known_hosts, accept_new=entry.strict == "accept-new",
                     connect_timeout=entry.connect_timeout or inherit.timeout, via=via, identity_source=source)
        seen = (*seen, host)
    return via


def _checked_user(user: str, host: str, config: UserConfig) -> str:
    """A User from the ssh config, checked as the deployment file's ssh.user is: a login name, nothing a shell or
    ssh would read otherwise."""
    if not text.USER_NAME.match(user):
        raise ConfigError(f"User {user!r} for {host} is not a login name (letters, digits, _ . -)",
                          file=str(config.path), fix="fix User in the ssh config")
    return user


def _checked_host(host: str, what: str, where: str | None) -> str:
    """A host name from the ssh config (a ProxyJump host, its HostName), checked as an address of the deployment
    file is: an IP address or a DNS name, no shell metacharacters."""
    from ascend_run.inputs.deployment import check_address

    try:
        return check_address(host)
    except ValueError as exc:
        raise ConfigError(f"{what}: {exc}", file=where, fix="fix the name in the ssh config") from None


@functools.cache
def _local_user() -> str:
    """ssh's default user for a jump host the ssh config names no user for (looked up once)."""
    return getpass.getuser()


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
