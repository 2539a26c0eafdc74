"""The transport interface every orchestration step uses, and its result type.

`run(argv, *, env=None, timeout=None, stdin=None) -> Result` is all a step needs: argv is a list until
the transport joins it (once, with `shlex.join`) at the boundary; env names are checked and values are
passed as `env NAME=value … argv`, never through the remote shell's parsing.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from ascend_run.errors import RemoteCommandError

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Stdin = bytes | Iterable[bytes] | None


@dataclass(frozen=True)
class Result:
    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self, host: str, argv: Sequence[str] = ()) -> "Result":
        """Raise RemoteCommandError naming the host unless the command succeeded."""
        if self.rc != 0:
            raise RemoteCommandError(host, list(argv) or ["(command)"], self.rc, self.stderr)
        return self


class Transport(Protocol):
    host: str

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None) -> Result: ...

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None) -> int: ...

    def close(self) -> None: ...


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The one place a command becomes a string: `env NAME=value … argv`, every element quoted."""
    if not argv:
        raise ValueError("empty command")
    prefix: list[str] = []
    if env:
        for name in env:
            if not ENV_NAME.match(name):
                raise ValueError(f"invalid environment variable name {name!r}")
        prefix = ["env", *(f"{k}={v}" for k, v in env.items())]
    return shlex.join([*prefix, *argv])
