"""Per-node coloured output prefixes, `[node/rank] line`, safe to call from many threads."""

from __future__ import annotations

import sys
import threading

COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta",
           "bright_green", "bright_yellow", "bright_blue", "bright_red"]
_ANSI = {"cyan": 36, "magenta": 35, "green": 32, "yellow": 33, "blue": 34, "red": 31, "bright_cyan": 96,
         "bright_magenta": 95, "bright_green": 92, "bright_yellow": 93, "bright_blue": 94, "bright_red": 91}


class PrefixPrinter:
    """Writes whole lines with a coloured, aligned prefix; colour only on a terminal (or when forced)."""

    def __init__(self, names: list[str], ranks: dict[str, int] | None = None, stream=None,
                 colour: bool | None = None, hide=None) -> None:
        self.stream = stream or sys.stdout
        self.colour = self.stream.isatty() if colour is None else colour
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

    def line(self, name: str, text: str) -> None:
        if self.hide is not None and self.hide(text):
            self.hidden += 1
            return
        prefix = self.prefixes.get(name, f"[{name}]")
        with self._lock:
            self.stream.write(f"{prefix} {text}\n")
            self.stream.flush()


def framework_noise(line: str) -> bool:
    """MindSpore's own [WARNING]/[INFO] log lines: thousands per run; hidden unless --all-lines."""
    return line.startswith(("[WARNING] ", "[INFO] ", "[DEBUG] "))
