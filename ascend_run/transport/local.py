"""Commands on this machine through the same interface as SSH (the local engine, tests, dry runs).

No shell is involved: argv goes straight to the kernel, env is merged into a copy of ours. Each command
gets its own process group, so a timeout or a stop ends its children too (a `sh -c` whose child still
holds the output pipe would otherwise keep the caller waiting).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path

from ascend_run.transport.base import RC_STOPPED, RC_TIMEOUT, Result, Stdin, check_env, split_lines

GRACE_S = 5  # SIGTERM, then SIGKILL this much later


class LocalTransport:
    def __init__(self, host: str = "localhost") -> None:
        self.host = host

    def _start(self, argv: Sequence[str], env: Mapping[str, str] | None, **kw) -> subprocess.Popen:
        return subprocess.Popen(list(argv), env={**os.environ, **check_env(env)}, start_new_session=True, **kw)

    def run(self, argv: Sequence[str], *, env: Mapping[str, str] | None = None, timeout: float | None = None,
            stdin: Stdin = None, on_stdout: Callable[[bytes], None] | None = None,
            on_stderr: Callable[[bytes], None] | None = None) -> Result:
        proc = self._start(argv, env, stdin=subprocess.DEVNULL if stdin is None else subprocess.PIPE,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = bytearray(), bytearray()
        threads = [threading.Thread(target=_drain, args=(proc.stdout, on_stdout or out.extend), daemon=True),
                   threading.Thread(target=_drain, args=(proc.stderr, on_stderr or err.extend), daemon=True)]
        if stdin is not None:
            threads.append(threading.Thread(target=_feed, args=(proc, stdin), daemon=True))
        for thread in threads:
            thread.start()
        try:
            proc.wait(timeout=timeout)
            timed_out = False
        except subprocess.TimeoutExpired:
            _end_group(proc)
            timed_out = True
        for thread in threads[:2]:
            thread.join(GRACE_S if timed_out else None)
        if timed_out:
            return Result(RC_TIMEOUT, out.decode(errors="replace"),
                          err.decode(errors="replace") + f"\n(timed out after {timeout:g} s)")
        return Result(proc.returncode, out.decode(errors="replace"), err.decode(errors="replace"))

    def stream(self, argv: Sequence[str], on_line: Callable[[str], None], *,
               env: Mapping[str, str] | None = None, stop: threading.Event | None = None) -> int:
        proc = self._start(argv, env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        stopped = threading.Event()
        if stop is not None:
            def watch() -> None:
                while proc.poll() is None:
                    if stop.wait(0.1):
                        stopped.set()
                        _end_group(proc)
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


def _end_group(proc: subprocess.Popen) -> None:
    """SIGTERM the command's process group, SIGKILL it if it is still there GRACE_S later."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(GRACE_S)
            return
        except subprocess.TimeoutExpired:
            continue


def _drain(pipe, sink: Callable[[bytes], object]) -> None:
    for chunk in iter(lambda: pipe.read1(1 << 16), b""):
        sink(chunk)


def _feed(proc: subprocess.Popen, stdin: bytes | Iterable[bytes]) -> None:
    chunks = [stdin] if isinstance(stdin, bytes) else stdin
    try:
        for chunk in chunks:
            proc.stdin.write(chunk)
            proc.stdin.flush()  # a chunk may be a message the process waits for, not just part of a stream
    except (BrokenPipeError, ValueError):
        pass  # the process exited early; its exit code tells why
    finally:
        try:
            proc.stdin.close()
        except BrokenPipeError:
            pass
