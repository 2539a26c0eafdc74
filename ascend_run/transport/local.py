"""Commands on this machine through the same interface as SSH (the local engine, tests, dry runs).

No shell is involved: argv goes straight to the kernel, env is merged into a copy of ours.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from ascend_run.transport.base import RC_STOPPED, RC_TIMEOUT, Result, Stdin, check_env, split_lines


class LocalTransport:
    def __init__(self, host: str = "localhost") -> None:
        self.host = host

    def _environ(self, env: Mapping[str, str] | None) -> dict[str, str]:
        return {**os.environ, **check_env(env)}

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None) -> Result:
        proc = subprocess.Popen(list(argv), stdin=subprocess.PIPE if stdin is not None else subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self._environ(env))
        if stdin is not None and not isinstance(stdin, bytes):
            threading.Thread(target=_feed, args=(proc, stdin), daemon=True).start()
            stdin = None
        try:
            out, err = proc.communicate(stdin, timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.terminate()
            try:
                out, err = proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                out, err = proc.communicate()
            return Result(RC_TIMEOUT, out.decode(errors="replace"),
                          err.decode(errors="replace") + f"\n(timed out after {timeout:g} s)")
        return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None, stop: threading.Event | None = None) -> int:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, env=self._environ(env))
        stopped = threading.Event()
        if stop is not None:
            def watch() -> None:
                while proc.poll() is None:
                    if stop.wait(0.1):
                        stopped.set()
                        proc.terminate()
                        return
            threading.Thread(target=watch, daemon=True).start()
        pending = b""
        for chunk in iter(lambda: proc.stdout.read1(1 << 16), b""):
            pending = split_lines(pending, chunk, on_line)
        if pending:
            on_line(pending.decode(errors="replace"))
        rc = proc.wait()
        return RC_STOPPED if stopped.is_set() else rc

    def put(self, src: str | Path, dst: str) -> None:
        shutil.copyfile(src, dst)

    def get(self, src: str, dst: str | Path) -> None:
        shutil.copyfile(src, dst)

    def close(self) -> None:
        pass


def _feed(proc: subprocess.Popen, chunks) -> None:
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
    except BrokenPipeError:
        pass  # the process exited early; its exit code tells why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
