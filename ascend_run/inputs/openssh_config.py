"""ssh_config(5) read as OpenSSH's own client reads it (readconf.c), for the settings ascend-run uses.

Why not paramiko's SSHConfig: it ignores `Include`, and its parsed form and token expansion are private
(`_config`, `_expand_variables`). This reader follows OpenSSH:

- a line is `Keyword [=] arguments`, arguments split on blanks with "double" or 'single' quotes; `#` starts a
  comment; keywords are case-insensitive; for each keyword the first value obtained wins (IdentityFile adds up);
- `Host` patterns (`*`, `?`, `!negation`) are matched against the name given; `Match` criteria against the
  state reached so far (`host` is HostName once set, `%h` expanded); `all`, `host`, `originalhost`, `user`,
  `localuser`, `canonical`, `final` are understood, `exec` and the others are refused;
- `Include` (anywhere: at the top, or inside a Host/Match block) reads the files its globs name (relative ones
  from ~/.ssh) in the state of the line: inside a block that does not apply, nothing of the included files
  applies (OpenSSH's SSHCONF_NEVERMATCH); after it the block's own state continues;
- a `Match final` line makes a second pass over the files once the first is done, with HostName (its `%h`
  expanded) as the name: blocks that match only then fill what the first pass left unset;
- HostName takes `%h` and `%%`; IdentityFile, UserKnownHostsFile and the other paths take `%%`, `%d`, `%h`,
  `%i`, `%L`, `%l`, `%n`, `%p`, `%r`, `%u` and `~` (`expand_tokens`).

tests/test_openssh_config.py checks this reader against `ssh -G` on a corpus of configs.
"""

from __future__ import annotations

import getpass
import glob
import os
import re
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ascend_run.errors import ConfigError

MULTI = {"identityfile"}                  # every value obtained is kept, in order
LISTS = {"userknownhostsfile"}            # all the arguments of the first line that sets it
SINGLE = {"hostname", "user", "port", "proxyjump", "identityfile", "stricthostkeychecking", "connecttimeout"}
CRITERIA = {"all", "host", "originalhost", "user", "localuser", "canonical", "final"}


@dataclass
class Line:
    keyword: str
    args: list[str]
    where: str                             # file:line, for errors


@dataclass
class Include:
    """An Include line and what it read: each file's entries."""

    files: list[list[Any]]
    where: str


@dataclass
class Tree:
    """A parsed file: its entries in order (Line, or Include), and facts the lookup needs."""

    entries: list[Any] = field(default_factory=list)
    final: bool = False       # a `Match final` line somewhere: a second pass
    conditional: bool = False  # Match lines, or an Include inside a Host/Match block: no plain Host index


def split_line(text: str, where: str) -> list[str]:
    """OpenSSH's argv_split: words separated by blanks, "double" or 'single' quoted parts, `\\` escaping a quote or
    a backslash inside quotes, `#` at the start of a word ending the line."""
    words: list[str] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t\r\n":
            i += 1
        if i >= n or text[i] == "#":
            break
        word, quote = [], None
        while i < n:
            char = text[i]
            if quote is None and char in " \t\r\n":
                break
            if char == "\\" and i + 1 < n and (text[i + 1] in "\\\"'" or (quote is None and text[i + 1] == " ")):
                word.append(text[i + 1])
                i += 2
                continue
            if quote is None and char in "\"'":
                quote = char
            elif char == quote:
                quote = None
            else:
                word.append(char)
            i += 1
        if quote is not None:
            raise ConfigError(f"{where}: unterminated quote", fix="close the quote")
        words.append("".join(word))
    return words


def parse_text(text: str, name: str, read: Callable[[Path, str], str], depth: int = 0,
               max_depth: int = 16, in_block: bool = False, tree: Tree | None = None) -> Tree:
    """The entries of one file's text. `read(path, included_by)` returns an included file's text (bounded by
    the caller); `in_block`: the file is included from inside a Host/Match block."""
    tree = tree if tree is not None else Tree()
    entries: list[Any] = []
    block = in_block
    for number, raw in enumerate(text.split("\n"), 1):
        where = f"{name}:{number}"
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = re.match(r"([A-Za-z0-9_]+)(?:\s*=\s*|\s+|$)(.*)$", stripped)
        if not match:
            raise ConfigError(f"{where}: cannot parse {stripped[:60]!r}", fix="write `Keyword value`")
        keyword, args = match.group(1).lower(), split_line(match.group(2), where)
        if keyword == "include":
            if block:
                tree.conditional = True
            files = []
            for pattern in args:
                pattern = os.path.expanduser(pattern)
                if not os.path.isabs(pattern):
                    pattern = os.path.join(os.path.expanduser("~/.ssh"), pattern)
                for path in sorted(glob.glob(pattern)):
                    if depth + 1 > max_depth:
                        raise ConfigError(f"Include nested more than {max_depth} deep (a loop?)", file=name,
                                          fix="include each file once")
                    sub = parse_text(read(Path(path), name), path, read, depth + 1, max_depth, block, tree)
                    files.append(sub.entries if sub is not tree else [])
            entries.append(Include(files, where))
            continue
        if keyword in ("host", "match"):
            block = True
            if keyword == "match":
                tree.conditional = True
                criteria = _criteria(args, where)
                tree.final = tree.final or any(c[0] == "final" for c in criteria)
                entries.append(Line("match", [f"{k}={v}" if v is not None else k for k, v in criteria], where))
                continue
            if not args:
                raise ConfigError(f"{where}: Host needs at least one pattern", fix="e.g. Host node*")
        if keyword in SINGLE and len(args) > 1:  # OpenSSH refuses most (ProxyJump it cuts): refused here, all
            raise ConfigError(f"{where}: keyword {match.group(1)} extra arguments at end of line ({shown(args)})",
                              fix="one value per line; quote a value that holds blanks")
        entries.append(Line(keyword, args, where))
    if depth == 0:
        tree.entries = entries
        return tree
    return Tree(entries=entries)


def shown(args: list[str]) -> str:
    return " ".join(repr(a) if not a or " " in a else a for a in args)


def _criteria(args: list[str], where: str) -> list[tuple[str, str | None]]:
    """`Match` arguments as (criterion, argument) pairs; refused: exec and what this reader does not know."""
    out: list[tuple[str, str | None]] = []
    i = 0
    while i < len(args):
        word = args[i].lower()
        negate = word.startswith("!")
        name = word.lstrip("!")
        if name == "exec":
            raise ConfigError(f"{where}: `Match exec` is not supported: ascend-run does not run commands from an "
                              "ssh config", fix="use Host patterns for these servers, or point ssh.config_file at "
                                                "a file without Match exec")
        if name not in CRITERIA:
            raise ConfigError(f"{where}: `Match {name}` is not supported (ascend-run reads all, host, "
                              "originalhost, user, localuser, canonical, final)", fix="use Host patterns instead")
        if name in ("all", "canonical", "final"):
            out.append(("!" * negate + name, None))
            i += 1
            continue
        if i + 1 >= len(args):
            raise ConfigError(f"{where}: `Match {name}` needs an argument", fix=f"e.g. Match {name} node*")
        out.append(("!" * negate + name, args[i + 1]))
        i += 2
    if not out:
        raise ConfigError(f"{where}: Match needs a criterion", fix="e.g. Match host node*")
    return out


# --- matching -------------------------------------------------------------------------------------------------

def glob_regex(pattern: str) -> re.Pattern:
    """OpenSSH's match_pattern: `*` any run of characters, `?` one; everything else, `[` included, as itself
    (fnmatch would read `[2-4]` as a class: OpenSSH does not)."""
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern) + r"\Z",
                      re.S)


def _pattern(pattern: str, name: str, fold: bool = False) -> bool:
    if fold:
        pattern, name = pattern.lower(), name.lower()
    return glob_regex(pattern).match(name) is not None if any(c in pattern for c in "*?") else pattern == name


def pattern_list(patterns: list[str], name: str, fold: bool = False) -> bool:
    """OpenSSH's match_pattern_list: a matching `!pattern` refuses outright, else any plain one accepts."""
    hit = False
    for pattern in patterns:
        if pattern.startswith("!"):
            if _pattern(pattern[1:], name, fold):
                return False
        elif _pattern(pattern, name, fold):
            hit = True
    return hit


@dataclass
class Lookup:
    """One `ssh NAME`: what the passes have obtained so far."""

    original: str
    local_user: str
    options: dict[str, Any] = field(default_factory=dict)
    final: bool = False
    host: str = ""                     # what Host lines match: the name, then (final pass) the HostName

    def set(self, keyword: str, args: list[str]) -> None:
        if not args:
            return
        if keyword in MULTI:
            known = self.options.setdefault(keyword, [])
            for arg in args[:1]:
                if arg not in known:
                    known.append(arg)
        elif keyword not in self.options:
            self.options[keyword] = list(args) if keyword in LISTS else args[0]

    def matches(self, line: Line) -> bool:
        if line.keyword == "host":
            return pattern_list(line.args, self.host)
        hostname = self.options.get("hostname")
        target = (hostname.replace("%h", self.original) if hostname and not self.final else hostname) \
            if hostname else self.original
        user = self.options.get("user") or self.local_user
        for item in line.args:
            name, _, arg = item.partition("=")
            negate = name.startswith("!")
            name = name.lstrip("!")
            if name == "all":
                hit = True
            elif name in ("canonical", "final"):
                hit = self.final
            else:
                value = {"host": target, "originalhost": self.original, "user": user,
                         "localuser": self.local_user}[name]
                hit = pattern_list(arg.split(","), value, fold=name in ("host", "originalhost"))
            if hit == negate:
                return False
        return True


def walk(entries: list[Any], state: Lookup, active: bool, never: bool = False) -> bool:
    """One pass over a file's entries, as readconf.c: Host/Match set whether the lines after them apply;
    an Include reads its files in the current state (none of them applies inside a block that does not),
    and the including file's state is back after it."""
    for entry in entries:
        if isinstance(entry, Include):
            before = active
            for sub in entry.files:
                walk(sub, state, before, never or not before)
            active = before
        elif entry.keyword in ("host", "match"):
            active = not never and state.matches(entry)
        elif active:
            state.set(entry.keyword, entry.args)
    return active


def resolve(tree: Tree, name: str, local_user: str | None = None) -> dict[str, Any]:
    """The options `ssh NAME` obtains from the file (keys lower-case; HostName with %h expanded), before
    OpenSSH's defaults are filled in."""
    state = Lookup(original=name, local_user=local_user or _local_user(), host=name)
    walk(tree.entries, state, True)
    if "hostname" in state.options:
        state.options["hostname"] = expand_hostname(state.options["hostname"], name)
    if tree.final:
        state.final = True
        state.host = state.options.get("hostname", name)
        walk(tree.entries, state, True)
        if "hostname" in state.options:
            state.options["hostname"] = expand_hostname(state.options["hostname"], name)
    return state.options


def expand_hostname(value: str, name: str) -> str:
    """HostName's tokens: %h (the name given) and %%."""
    return re.sub(r"%(.)", lambda m: {"h": name, "%": "%"}.get(m.group(1), m.group(0)), value)


def expand_tokens(value: str, *, original: str, hostname: str, port: int, user: str, what: str) -> str:
    """`~` and the %-tokens of a path setting (IdentityFile, UserKnownHostsFile) as ssh expands them."""
    home = os.path.expanduser("~")
    local = socket.gethostname()
    table = {"%": "%", "d": home, "h": hostname, "i": str(os.getuid()), "L": local.split(".")[0], "l": local,
             "n": original, "p": str(port), "r": user, "u": _local_user()}

    def one(match: re.Match) -> str:
        token = match.group(1)
        if token not in table:
            raise ConfigError(f"{what}: the token %{token} is not supported by ascend-run",
                              fix="use %d %h %i %L %l %n %p %r %u or %%")
        return table[token]

    value = re.sub(r"%(.)", one, value)
    return os.path.expanduser(value) if value.startswith("~") else value


def _local_user() -> str:
    return getpass.getuser()


def count_patterns(tree: Tree) -> tuple[int, int]:
    """(patterns with wildcards, all patterns) of the Host and Match lines: what one lookup may try."""
    wild = total = 0

    def visit(entries: list[Any]) -> None:
        nonlocal wild, total
        for entry in entries:
            if isinstance(entry, Include):
                for sub in entry.files:
                    visit(sub)
            elif entry.keyword in ("host", "match"):
                items = entry.args if entry.keyword == "host" else \
                    [p for item in entry.args for p in item.partition("=")[2].split(",") if p] or [""]
                total += max(len(items), 1)
                wild += sum(1 for item in items if re.search(r"[*?]", item) and item not in ("*", "!*"))

    visit(tree.entries)
    return wild, total


def host_blocks(tree: Tree) -> list[dict] | None:
    """The file as plain Host blocks ([{"host": patterns, "config": {keyword: value}}], the first value of a
    keyword in a block kept, IdentityFiles added up), for the index of `sshconfig.UserConfig`; None when it has
    Match lines or an Include inside a block (then each name is resolved by `resolve`)."""
    if tree.conditional or tree.final:
        return None
    blocks: list[dict] = [{"host": ["*"], "config": {}}]

    def visit(entries: list[Any]) -> None:
        for entry in entries:
            if isinstance(entry, Include):
                opened = len(blocks)
                for sub in entry.files:
                    visit(sub)
                if len(blocks) > opened:  # the included files opened Host blocks: the lines after are everyone's
                    blocks.append({"host": ["*"], "config": {}})
            elif entry.keyword == "host":
                blocks.append({"host": list(entry.args), "config": {}})
            else:
                scratch = Lookup(original="", local_user="", options=blocks[-1]["config"])
                scratch.set(entry.keyword, entry.args)

    visit(tree.entries)
    return [b for b in blocks if b["config"] or b is not blocks[0]]
