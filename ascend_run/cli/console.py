"""Output of many nodes for people: coloured `[node/rank] line` prefixes (safe from many threads) and
pdsh-style folded node lists. No rich here: `exec` and log streaming print thousands of lines."""

from __future__ import annotations

import re
import sys
import threading

from ascend_run.inputs.text import terminal

_LAST_NUMBER = re.compile(r"^(.*?)(\d+)(\D*)$")

COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue", "bright_red"]
_ANSI = {"cyan": 36, "magenta": 35, "green": 32, "yellow": 33, "blue": 34, "red": 31, "bright_cyan": 96,
         "bright_magenta": 95, "bright_green": 92, "bright_yellow": 93, "bright_blue": 94, "bright_red": 91}


class PrefixPrinter:
    """Writes whole lines with a coloured, aligned prefix; colour as the policy says (cli/colour.py)."""

    def __init__(self, names: list[str], ranks: dict[str, int] | None = None, stream=None,
                 colour: bool | None = None, hide=None) -> None:
        self.stream = stream or sys.stdout
        if colour is None:
            from ascend_run.cli import colour as policy

            colour = policy.enabled(self.stream)
        self.colour = colour
        ranks = ranks or {}
        labels = {n: f"{n}/{ranks[n]}" if n in ranks else n for n in names}
        width = max((len(v) for v in labels.values()), default=0)
        self.prefixes = {}
        for i, name in enumerate(names):
            text = f"[{labels[name]}]".ljust(width + 2)
            if self.colour:
                text = f"\x1b[{_ANSI[COLOURS[i % len(COLOURS)]]}m{text}\x1b[0m"
            self.prefixes[name] = text
        self.hide = hide
        self.hidden = 0
        self._lock = threading.Lock()

    def line(self, name: str, text: str, stream=None) -> None:
        """One line of `name`'s output; `stream` overrides the printer's (e.g. sys.stderr for stderr)."""
        if self.hide is not None and self.hide(text):
            self.hidden += 1
            return
        prefix = self.prefixes.get(name, f"[{name}]")
        out = stream or self.stream
        with self._lock:
            out.write(f"{prefix} {terminal(text)}\n")
            out.flush()

    def lines(self, name: str, text: str, stream=None) -> None:
        """Every line of a block of output (a finished command's stdout), written without interleaving."""
        if not text:
            return
        prefix = self.prefixes.get(name, f"[{name}]")
        shown = [line for line in text.rstrip("\n").split("\n") if self.hide is None or not self.hide(line)]
        self.hidden += text.rstrip("\n").count("\n") + 1 - len(shown)
        out = stream or self.stream
        with self._lock:
            out.write("".join(f"{prefix} {terminal(line)}\n" for line in shown))
            out.flush()


class LineSplitter:
    """Bytes as they arrive (a chunk may end mid-line, or mid-character) → whole lines, to `on_line`; `close()`
    hands over a last line without a newline."""

    def __init__(self, on_line) -> None:
        import codecs

        self.on_line = on_line
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._pending = ""

    def feed(self, chunk: bytes) -> None:
        text = self._pending + self._decoder.decode(chunk)
        *whole, self._pending = text.split("\n")
        for line in whole:
            self.on_line(line.removesuffix("\r"))

    def close(self) -> None:
        rest = self._pending + self._decoder.decode(b"", final=True)
        self._pending = ""
        if rest:
            self.on_line(rest)


def framework_noise(line: str) -> bool:
    """MindSpore's own [WARNING]/[INFO] log lines: thousands per run; hidden unless --all-lines."""
    return line.startswith(("[WARNING] ", "[INFO] ", "[DEBUG] "))


def fold_names(names: list[str]) -> str:
    """`n0 n1 n2 n5 gpu` → `n[0-2,5],gpu`: pdsh/dshbak-style node lists, pasteable back into --nodes.

    Names are grouped by what surrounds their last number and its zero padding; groups keep the order in which
    they first appear, numbers inside a group are sorted. As dshbak -c, the shortest ranges: a number without a
    leading zero joins the padded group of its own width (`node099`, `node100` → `node[099-100]`, which expands
    back to both), so node001…node128 is one range, node[001-128].
    """
    found: list[tuple[str, str, str]] = []
    padded: set[tuple[str, str, int]] = set()
    for name in dict.fromkeys(names):
        match = _LAST_NUMBER.match(name)
        found.append(match.groups() if match else (name, "", ""))
        if match and match.group(2).startswith("0") and len(match.group(2)) > 1:
            padded.add((match.group(1), match.group(3), len(match.group(2))))
    groups: dict[tuple[str, str, int], list[int]] = {}
    for head, digits, tail in found:
        if not digits:
            groups.setdefault((head, "", -1), [])
            continue
        width = len(digits) if (digits.startswith("0") and len(digits) > 1) or \
            (head, tail, len(digits)) in padded else 0
        groups.setdefault((head, tail, width), []).append(int(digits))
    parts = []
    for (head, tail, width), numbers in groups.items():
        if width < 0:
            parts.append(head)
            continue
        numbers.sort()
        if len(numbers) == 1:
            parts.append(f"{head}{str(numbers[0]).zfill(width)}{tail}")
            continue
        spans, start, prev = [], numbers[0], numbers[0]
        for n in [*numbers[1:], None]:
            if n is not None and n == prev + 1:
                prev = n
                continue
            a, b = str(start).zfill(width), str(prev).zfill(width)
            spans.append(a if start == prev else f"{a}-{b}")
            if n is not None:
                start = prev = n
        parts.append(f"{head}[{','.join(spans)}]{tail}")
    return ",".join(parts)


