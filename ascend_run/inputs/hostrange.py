"""pdsh-style host ranges: `10.0.0.[1-128]`, `node[001-128]`, `gpu[1-3,7]`, and ClusterShell's step
syntax `n[1-9/4]` (n1, n5, n9: every 4th number of the range).

Zero padding in a range's start (`001`) is kept in every expanded name, as pdsh does. Several
bracket groups expand as a cartesian product, left to right.

The size of an expansion is computed from the numbers before a single name is built, so
`node[0-999999999999]` is refused at once instead of after gigabytes of names.
"""

from __future__ import annotations

import math
import re
from typing import NamedTuple

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_ITEM = re.compile(r"\A(\d{1,12})(?:-(\d{1,12})(?:/(\d{1,12}))?)?\Z")
MAX_EXPANSION = 100_000
MAX_PATTERN = 1024  # characters; a host name is at most 253


class Span(NamedTuple):
    """One item of a bracket group: numbers start..end (inclusive) every `step`, zero-padded to `width`."""

    start: int
    end: int
    step: int
    width: int

    def size(self) -> int:
        return (self.end - self.start) // self.step + 1

    def values(self) -> list[str]:
        return [str(n).zfill(self.width) for n in range(self.start, self.end + 1, self.step)]


def _parse_group(body: str, pattern: str) -> list[Span]:
    """The spans of one bracket group, checked, nothing expanded."""
    spans = []
    for item in body.split(","):
        match = _ITEM.match(item.strip())
        if not match:
            raise ValueError(f"bad range item {item!r} in {pattern!r}; expected N, N-M or N-M/STEP (at most 12 "
                             "digits each), e.g. node[001-128] or node[1-9/4]")
        start_s, end_s = match.group(1), match.group(2) or match.group(1)
        start, end, step = int(start_s), int(end_s), int(match.group(3) or 1)
        if end < start:
            raise ValueError(f"range {item!r} in {pattern!r} runs backwards")
        if step < 1:
            raise ValueError(f"step of {item!r} in {pattern!r} must be at least 1")
        width = len(start_s) if start_s.startswith("0") and len(start_s) > 1 else 0
        spans.append(Span(start, end, step, width))
    return spans


def _parse(pattern: str) -> tuple[list[str], list[list[Span]]]:
    """The literal parts between bracket groups, and each group's spans."""
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern of {len(pattern)} characters (at most {MAX_PATTERN})")
    if "[" not in pattern and "]" not in pattern:  # one name (a generated file lists 51,200 of them)
        return [pattern], []
    literals: list[str] = []
    groups: list[list[Span]] = []
    pos = 0
    for match in _GROUP.finditer(pattern):
        literals.append(pattern[pos:match.start()])
        groups.append(_parse_group(match.group(1), pattern))
        pos = match.end()
    literals.append(pattern[pos:])
    if any("[" in part or "]" in part for part in literals):
        raise ValueError(f"unbalanced bracket in {pattern!r}")
    return literals, groups


def _size(groups: list[list[Span]]) -> int:
    return math.prod(sum(span.size() for span in spans) for spans in groups)


def count(pattern: str) -> int:
    """How many names `pattern` stands for, without building them (ValueError for a bad pattern)."""
    return _size(_parse(pattern)[1])


def expand(pattern: str) -> list[str]:
    """Expand a pdsh-style pattern into the list of names it stands for (in order)."""
    literals, groups = _parse(pattern)
    size = _size(groups)
    if size > MAX_EXPANSION:
        raise ValueError(f"{pattern!r} expands to {size:,} names, more than {MAX_EXPANSION:,}")
    if not groups:
        return [pattern]
    out = [literals[0]]
    for spans, literal in zip(groups, literals[1:]):  # left to right, the last group varying fastest
        values = [value + literal for span in spans for value in span.values()]
        out = [prefix + value for prefix in out for value in values]
    return out
