"""The transport interface every orchestration step uses, and its result type.

`run(argv, *, env=None, timeout=None, stdin=None) -> Result` is all most steps need. argv stays a list
until the transport turns it into one string, once, with `shlex.join` (`command_line`); environment names
are checked against a pattern and passed as `env NAME=value … argv`, so nothing depends on the server's
`AcceptEnv` and no value is ever parsed by the remote shell.
"""

from __future__ import annotations

import shlex
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ascend_run.errors import RemoteCommandError
from ascend_run.inputs.text import ENV_NAME

# Exit codes a transport reports for commands it ended itself (shell conventions, so they read familiar).
RC_TIMEOUT = 124   # like coreutils `timeout`
RC_STOPPED = 143   # 128 + SIGTERM: stream() was asked to stop
RC_KILLED = 255    # the remote process died of a signal or the channel closed without a status (as ssh)

# bytes, or an iterable of chunks for large uploads (e.g. `docker save` piped into `docker load`).
Stdin = bytes | Iterable[bytes] | None


@dataclass(frozen=True)
class Result:
    """What a finished command left behind; the same type whatever the transport."""

    rc: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def check(self, host: str, argv: Sequence[str] = ()) -> Result:
        """Return self, or raise RemoteCommandError naming the host, the command and the stderr tail."""
        if self.rc != 0:
            raise RemoteCommandError(host, list(argv) or ["(command)"], self.rc, self.stderr)
        return self


class Transport(Protocol):
    """How a command reaches one node. `host` is the node's name, used in every error."""

    host: str

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None, on_stdout: Callable[[bytes], None] | None = None,
            on_stderr: Callable[[bytes], None] | None = None) -> Result:
        """Run to completion. On timeout the process is sent SIGTERM and rc is RC_TIMEOUT.
        With `on_stdout`, stdout goes to it chunk by chunk as raw bytes (a tar stream, say) instead of into
        the result; the call blocks while `on_stdout` does, which slows the remote writer (flow control).
        `on_stderr` likewise for stderr (`exec --prefix` prints each line as it comes)."""

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None, stop: threading.Event | None = None) -> int:
        """Hand each output line (stdout and stderr merged) to `on_line`; return the exit code.
        Setting `stop` ends the remote process (SIGTERM) and returns RC_STOPPED."""

    def put(self, src: str | Path, dst: str) -> None:
        """Copy a local file to the node."""

    def get(self, src: str, dst: str | Path) -> None:
        """Copy a file from the node."""

    def close(self) -> None:
        """Release the connection; the transport is unusable afterwards."""


def check_env(env: Mapping[str, str] | None) -> dict[str, str]:
    """The environment as a plain dict, every name checked (a bad name is a bug in the caller)."""
    env = dict(env or {})
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValueError(f"invalid environment variable name {name!r} (letters, digits, _; not first a digit)")
        if not isinstance(value, str):
            raise ValueError(f"environment variable {name} must be a string, not {type(value).__name__}")
    return env


def command_line(argv: Sequence[str], env: Mapping[str, str] | None = None) -> str:
    """The one place a command becomes a string: `env NAME=value … argv`, every element quoted."""
    argv = list(argv)
    if not argv:
        raise ValueError("empty command")
    if not all(isinstance(a, str) and "\0" not in a for a in argv):
        raise ValueError(f"command elements must be strings without NUL bytes: {argv!r}")
    env = check_env(env)
    prefix = ["env", *(f"{k}={v}" for k, v in env.items())] if env else []
    return shlex.join([*prefix, *argv])


def split_lines(pending: bytes, chunk: bytes, on_line: Callable[[str], None]) -> bytes:
    """Feed whole lines of `pending + chunk` to `on_line`; return the unfinished tail."""
    *lines, tail = (pending + chunk).split(b"\n")
    for line in lines:
        on_line(line.decode(errors="replace").rstrip("\r"))
    return tail
