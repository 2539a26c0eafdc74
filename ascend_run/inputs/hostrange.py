"""pdsh-style host ranges: `10.0.0.[1-128]`, `node[001-128]`, `gpu[1-3,7]`.

Zero padding in a range's start (`001`) is kept in every expanded name, as pdsh does. Several
bracket groups expand as a cartesian product, left to right.
"""

from __future__ import annotations

import re

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_ITEM = re.compile(r"^(\d+)(?:-(\d+))?$")
MAX_EXPANSION = 100_000


def _expand_group(body: str, pattern: str) -> list[str]:
    values: list[str] = []
    for item in body.split(","):
        match = _ITEM.match(item.strip())
        if not match:
            raise ValueError(f"bad range item {item!r} in {pattern!r}; expected N or N-M, e.g. node[001-128]")
        start_s, end_s = match.group(1), match.group(2) or match.group(1)
        start, end = int(start_s), int(end_s)
        if end < start:
            raise ValueError(f"range {item!r} in {pattern!r} runs backwards")
        width = len(start_s) if start_s.startswith("0") and len(start_s) > 1 else 0
        values.extend(str(n).zfill(width) for n in range(start, end + 1))
    return values


def expand(pattern: str) -> list[str]:
    """Expand a pdsh-style pattern into the list of names it stands for (in order)."""
    match = _GROUP.search(pattern)
    if not match:
        if "[" in pattern or "]" in pattern:
            raise ValueError(f"unbalanced bracket in {pattern!r}")
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end():]
    if "[" in head or "]" in head:
        raise ValueError(f"unbalanced bracket in {pattern!r}")
    out: list[str] = []
    for value in _expand_group(match.group(1), pattern):
        out.extend(head + value + rest for rest in expand(tail))
        if len(out) > MAX_EXPANSION:
            raise ValueError(f"{pattern!r} expands to more than {MAX_EXPANSION} names")
    return out

