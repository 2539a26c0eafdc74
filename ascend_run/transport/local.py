"""Commands on this machine, through the same interface as SSH (for the local engine and tests)."""

from __future__ import annotations

import os
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence

from ascend_run.transport.base import Result, Stdin


class LocalTransport:
    def __init__(self, host: str = "localhost") -> None:
        self.host = host

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None) -> Result:
        full_env = {**os.environ, **(env or {})}
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=full_env)
        if stdin is not None and not isinstance(stdin, bytes):
            def feed():
                try:
                    for chunk in stdin:
                        proc.stdin.write(chunk)
                finally:
                    proc.stdin.close()
            threading.Thread(target=feed, daemon=True).start()
            stdin = None
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            return Result(124, out.decode(errors="replace"), err.decode(errors="replace") + "\n(timed out)")
        return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None) -> int:
        proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        for raw in proc.stdout:
            on_line(raw.decode(errors="replace").rstrip("\n"))
        return proc.wait()

    def close(self) -> None:
        pass
