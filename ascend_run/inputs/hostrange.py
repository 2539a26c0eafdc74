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
from collections.abc import Iterator
from typing import NamedTuple

_GROUP = re.compile(r"\[([^\[\]]*)\]")
_ITEM = re.compile(r"\A([0-9]{1,12})(?:-([0-9]{1,12})(?:/([0-9]{1,12}))?)?\Z")  # ASCII digits only
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


def iter_expand(pattern: str) -> Iterator[str]:
    """The names `pattern` stands for, one at a time and in `expand`'s order, whatever its size: for a caller
    that stops early (the first of them that is missing somewhere)."""
    literals, groups = _parse(pattern)
    if not groups:
        yield pattern
        return
    ranges = [[(span, range(span.start, span.end + 1, span.step)) for span in spans] for spans in groups]

    def values(group: list[tuple[Span, range]]) -> Iterator[str]:
        for span, numbers in group:
            for number in numbers:
                yield str(number).zfill(span.width)

    def walk(index: int, prefix: str) -> Iterator[str]:
        if index == len(ranges):
            yield prefix
            return
        for value in values(ranges[index]):
            yield from walk(index + 1, prefix + value + literals[index + 1])

    yield from walk(0, literals[0])


class Matcher:
    """Whether a name is one of the names a pattern stands for, without expanding it: `n[0-999999999999]`
    costs what `n7` costs. The name is read left to right; each bracket group takes a run of digits that
    must be one of its numbers, written as the expansion writes it (zero padding included). Memoised over
    (group, position), so the work is bounded by the name's length times the groups, never the range sizes."""

    def __init__(self, pattern: str) -> None:
        self.pattern = pattern
        self.literals, self.groups = _parse(pattern)
        self.size = _size(self.groups)

    def __call__(self, name: str) -> bool:
        if not self.groups:
            return name == self.pattern
        if not name.startswith(self.literals[0]):
            return False
        failed: set[tuple[int, int]] = set()

        def match(index: int, pos: int) -> bool:
            if index == len(self.groups):
                return pos == len(name)
            if (index, pos) in failed:
                return False
            literal = self.literals[index + 1]
            end = pos
            while end < len(name) and name[end].isdigit() and end - pos < 13:
                end += 1
                digits = name[pos:end]
                if name.startswith(literal, end) and _in_group(self.groups[index], digits) and \
                        match(index + 1, end + len(literal)):
                    return True
            failed.add((index, pos))
            return False

        return match(0, len(self.literals[0]))


def _in_group(spans: list[Span], digits: str) -> bool:
    """Whether `digits` is a number of one of the spans, written as that span writes its numbers."""
    if not digits.isascii():
        return False
    number = int(digits)
    for span in spans:
        if span.start <= number <= span.end and (number - span.start) % span.step == 0 \
                and str(number).zfill(span.width) == digits:
            return True
    return False


MAX_SELECTION_WORK = 5_000_000  # names built or matched for one -w/-x list, all tokens together


def names_in(matcher: Matcher, keys) -> list[str]:
    """The keys (a dict or set of names) that `matcher`'s pattern stands for, at the cost of the smaller
    side: its expansion looked up in `keys` when that is shorter, else every key matched."""
    if not matcher.groups:
        return [matcher.pattern] if matcher.pattern in keys else []
    if matcher.size <= len(keys):
        return [name for name in iter_expand(matcher.pattern) if name in keys]
    return [key for key in keys if matcher(key)]


def selection_work(matchers: list[Matcher], keys: int) -> int:
    """What `names_in` costs for every matcher, before any of it is done (a budget check)."""
    return sum(min(m.size, keys) if m.groups else 1 for m in matchers)
