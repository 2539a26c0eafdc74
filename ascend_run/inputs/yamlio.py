"""Reading user YAML with line numbers, so errors can say `file:line: key.path: problem`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.error import MarkedYAMLError

from ascend_run.errors import ConfigError


def load_yaml(path: str | Path) -> Any:
    """Load a YAML file as ruamel round-trip data (dict/list subclasses that remember line numbers)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(path), fix="check the path given with -f") from None
    except OSError as exc:
        raise ConfigError(f"cannot read: {exc.strerror}", file=str(path)) from None
    try:
        return YAML(typ="rt").load(text)
    except MarkedYAMLError as exc:
        line = exc.problem_mark.line + 1 if exc.problem_mark else None
        raise ConfigError(f"not valid YAML: {exc.problem}", file=str(path), line=line,
                          fix="fix the YAML syntax at that line (indentation, a missing ':' or quote)") from None


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
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out
