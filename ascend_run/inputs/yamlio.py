"""Reading user YAML with line numbers, so errors can say `file:line: key.path: problem`.

Any file is read with bounded work: its size is capped before it is parsed, and the parsed data is
measured as if every YAML alias were expanded (the walk visits each shared node once, so measuring
costs what the file costs) and refused past `MAX_VALUES` values or `MAX_DEPTH` levels of nesting.
Whatever walks the data afterwards (pydantic, `extends:` merging, a MindFormers config check) is
bounded by those two numbers, however the aliases multiply.
"""

from __future__ import annotations

import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO

from ruamel.yaml import YAML
from ruamel.yaml.error import YAMLError

from ascend_run.errors import ConfigError

MAX_FILE_BYTES = 8 << 20   # a 51,200-node file listing every node is ~2.5 MB; ranges keep files small
MAX_VALUES = 2_000_000     # values after alias expansion (a listed 100,000-node file has ~1.2 M)
MAX_DEPTH = 32             # mapping/list levels (deployment files use 4, MindFormers configs ~8)
MAX_BRACKETS = 2 * MAX_DEPTH  # open [ and { before parsing: ruamel's scanner is quadratic in their depth
_BRACKET = re.compile(r"[\[\]{}]")
_DEPTH_FIX = "mappings and lists nest a few levels in a deployment file or a MindFormers config; check the file"


_KINDS = ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO (named pipe)"), (stat.S_ISSOCK, "a socket"),
          (stat.S_ISCHR, "a character device"), (stat.S_ISBLK, "a block device"))


def open_regular(path: str | Path, fix: str = "check the path given with -f") -> BinaryIO:
    """A user file opened for reading, only if it is a regular file (a link to one is fine): the type is
    checked on the opened descriptor, and the open itself does not wait (O_NONBLOCK), so a FIFO or a
    device given as a file is one error at once instead of a hang. ConfigError naming the file otherwise."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | getattr(os, "O_NOCTTY", 0))
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path), fix=fix) from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path), fix=fix) from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
        raise ConfigError(f"is {kind}, not a regular file", file=str(path), fix=fix)
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_text(path: str | Path, what: str = "the file", fix: str = "check the path given with -f") -> str:
    """A user file's text: a regular file (`open_regular`), at most MAX_FILE_BYTES, UTF-8. ConfigError
    naming the file otherwise."""
    path = Path(path)
    with open_regular(path, fix) as handle:
        try:
            data = handle.read(MAX_FILE_BYTES + 1)
        except OSError as exc:
            raise ConfigError(f"cannot read: {exc.strerror or exc}", file=str(path), fix=fix) from None
    if len(data) > MAX_FILE_BYTES:
        raise ConfigError(f"larger than {MAX_FILE_BYTES >> 20} MiB; {what} is not expected to be this big",
                          file=str(path), fix="write node ranges (address: 10.0.[0-199].[1-256]) instead of "
                          "one entry per node, or check that -f names the right file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"not UTF-8 text (byte {exc.start + 1}: {data[exc.start:exc.start + 1]!r}); a binary "
                          "file, or text in another encoding (UTF-16?)", file=str(path),
                          fix="save it as UTF-8, or check that the path names the YAML file") from None


def check_brackets(text: str, file: str) -> None:
    """Refuse text whose [ and { nest deeper than MAX_BRACKETS, before a parser sees it: 1,000 nested
    `[` take ruamel seconds to scan, 50,000 take minutes (a conservative count: brackets in quoted
    strings and comments count too, which only matters for a line of dozens of unmatched brackets)."""
    depth = 0
    for match in _BRACKET.finditer(text):
        depth += 1 if match.group() in "[{" else -1
        if depth > MAX_BRACKETS:
            line = text.count("\n", 0, match.start()) + 1
            raise ConfigError(f"brackets nest more than {MAX_BRACKETS} deep", file=file, line=line, fix=_DEPTH_FIX)
        depth = max(depth, 0)


def parse_yaml(text: str, file: str) -> Any:
    """ruamel round-trip data from YAML text; any parse failure is a ConfigError with the line."""
    return _parse_sized(text, file)[0]


def _parse_sized(text: str, file: str) -> tuple[Any, int]:
    """`parse_yaml`, and how many values the data holds with its aliases expanded (`measure`)."""
    check_brackets(text, file)
    try:
        data = YAML(typ="rt").load(text)
    except YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"not valid YAML: {problem}", file=file, line=mark.line + 1 if mark else None,
                          fix="fix the YAML syntax at that line (indentation, a missing ':' or quote)") from None
    except RecursionError:
        raise ConfigError(f"nested more than {MAX_DEPTH} levels deep", file=file, fix=_DEPTH_FIX) from None
    except ValueError as exc:  # a value the constructor cannot make, e.g. an integer of 5,000 digits
        raise ConfigError(f"not valid YAML: {exc}", file=file, fix="check the values of the file") from None
    return data, check_bounds(data, file)


def load_yaml(path: str | Path) -> Any:
    """Load a YAML file as ruamel round-trip data (dict/list subclasses that remember line numbers)."""
    return parse_yaml(read_text(path), str(path))


def load_yaml_sized(path: str | Path) -> tuple[Any, int]:
    """`load_yaml`, and the values the data holds with its aliases expanded (what `measure` says, without
    walking a 51,200-entry file a second time)."""
    return _parse_sized(read_text(path), str(path))


class _Exceeded(Exception):
    def __init__(self, message: str) -> None:
        self.message = message
        self.path: list[Any] = []


def measure(data: Any, budget: int = MAX_VALUES) -> int:
    """How many values `data` holds with every alias expanded; raises _Exceeded (with the key path where
    a limit was passed) beyond `budget` values or MAX_DEPTH levels. A node shared through aliases is
    walked once, so the cost is that of the file, not of its expansion."""
    seen: dict[int, tuple[int, int]] = {}   # id -> (expanded size, height)

    def walk(node: Any, depth: int) -> tuple[int, int]:
        if not isinstance(node, (dict, list, tuple)):
            return 1, 0
        known = seen.get(id(node))
        if known is not None:
            if depth + known[1] > MAX_DEPTH:
                raise _Exceeded(f"nested more than {MAX_DEPTH} levels deep (through an alias)")
            return known
        if depth >= MAX_DEPTH:
            raise _Exceeded(f"nested more than {MAX_DEPTH} levels deep")
        size, height = 1, 0
        items = node.items() if isinstance(node, dict) else enumerate(node)
        for key, child in items:
            try:
                if isinstance(node, dict):
                    size += walk(key, depth + 1)[0]
                child_size, child_height = walk(child, depth + 1)
            except _Exceeded as exc:
                exc.path.insert(0, key)
                raise
            size += child_size
            height = max(height, child_height + 1)
            if size > budget:
                raise _Exceeded(f"holds more than {budget:,} values once its aliases (*name) are expanded")
        seen[id(node)] = (size, height)
        return size, height

    return walk(data, 0)[0]


def check_bounds(data: Any, file: str, budget: int = MAX_VALUES) -> int:
    """`measure`, with a ConfigError naming the file, the line and the key path where a limit was passed."""
    try:
        return measure(data, budget)
    except _Exceeded as exc:
        loc = tuple(exc.path[:8])   # where it starts is enough to find it
        fix = _DEPTH_FIX if "deep" in exc.message else "expand fewer aliases: anchors are for a few shared values"
        raise ConfigError(exc.message, file=file, key=format_loc(loc) or None, line=line_of(data, loc),
                          fix=fix) from None


def line_of(data: Any, loc: tuple[str | int, ...]) -> int | None:
    """1-based line of the deepest key in `loc` that exists in round-trip `data`, or None."""
    line = None
    node = data
    for part in loc:
        lc = getattr(node, "lc", None)
        try:
            if lc is not None:
                if isinstance(part, int) and isinstance(node, list):
                    line = lc.item(part)[0] + 1
                elif not isinstance(part, int):
                    line = lc.key(part)[0] + 1
            node = node[part]
        except (KeyError, IndexError, TypeError, AttributeError):
            break
    return line


def format_loc(loc: tuple[str | int, ...]) -> str:
    """('nodes', 3, 'npus') -> 'nodes[3].npus'."""
    out = ""
    for part in loc:
        if not isinstance(part, (str, int)):
            part = "<key>"   # a mapping or list used as a key: never shown (it may be huge)
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
