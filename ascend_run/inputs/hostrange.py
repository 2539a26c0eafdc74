"""pdsh-style host ranges: `10.0.0.[1-128]`, `node[001-128]`, `gpu[1-3,7]`.

Zero padding in a range's start (`001`) is kept in every expanded name, as pdsh does. Several
bracket groups expand as a cartesian product, left to right.

The size of an expansion is computed from the numbers before a single name is built, so
`node[0-999999999999]` is refused at once instead of after gigabytes of names.
"""

from __future__ import annotations

import itertools
import math
import re

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_ITEM = re.compile(r"\A(\d{1,12})(?:-(\d{1,12}))?\Z")
MAX_EXPANSION = 100_000
MAX_PATTERN = 1024  # characters; a host name is at most 253


def _parse_group(body: str, pattern: str) -> list[tuple[int, int, int]]:
    """(start, end, zero-padded width) of each item of one bracket group, checked, nothing expanded."""
    spans = []
    for item in body.split(","):
        match = _ITEM.match(item.strip())
        if not match:
            raise ValueError(f"bad range item {item!r} in {pattern!r}; expected N or N-M (at most 12 digits), "
                             "e.g. node[001-128]")
        start_s, end_s = match.group(1), match.group(2) or match.group(1)
        start, end = int(start_s), int(end_s)
        if end < start:
            raise ValueError(f"range {item!r} in {pattern!r} runs backwards")
        width = len(start_s) if start_s.startswith("0") and len(start_s) > 1 else 0
        spans.append((start, end, width))
    return spans


def _parse(pattern: str) -> tuple[list[str], list[list[tuple[int, int, int]]]]:
    """The literal parts between bracket groups, and each group's spans."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern of {len(pattern)} characters (at most {MAX_PATTERN})")
    literals: list[str] = []
    groups: list[list[tuple[int, int, int]]] = []
    pos = 0
    for match in _GROUP.finditer(pattern):
        literals.append(pattern[pos:match.start()])
        groups.append(_parse_group(match.group(1), pattern))
        pos = match.end()
    literals.append(pattern[pos:])
    if any("[" in part or "]" in part for part in literals):
        raise ValueError(f"unbalanced bracket in {pattern!r}")
    return literals, groups


def count(pattern: str) -> int:
    """How many names `pattern` stands for, without building them (ValueError for a bad pattern)."""
    _, groups = _parse(pattern)
    return math.prod(sum(end - start + 1 for start, end, _ in spans) for spans in groups)


def expand(pattern: str) -> list[str]:
    """Expand a pdsh-style pattern into the list of names it stands for (in order)."""
    literals, groups = _parse(pattern)
    size = math.prod(sum(end - start + 1 for start, end, _ in spans) for spans in groups)
    if size > MAX_EXPANSION:
        raise ValueError(f"{pattern!r} expands to {size:,} names, more than {MAX_EXPANSION:,}")
    if not groups:
        return [pattern]
    choices = [[str(n).zfill(width) for start, end, width in spans for n in range(start, end + 1)]
               for spans in groups]
    out = []
    for values in itertools.product(*choices):
        parts = [literals[0]]
        for value, literal in zip(values, literals[1:]):
            parts += (value, literal)
        out.append("".join(parts))
    return out

