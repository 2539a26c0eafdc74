"""Helpers for the hostile-input tests: the CLI in process, and stand-ins (`docker`, `ssh`, …) that record argv.

The stand-ins are two-line bash scripts (cheap enough to run hundreds of times in the fast suite): each
call appends one record to $ARGV_LOG, NUL-separated: the program, the argument count, the arguments.
Nothing they are given is executed.
"""

from __future__ import annotations

import contextlib
import io
import os
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ascend_run.cli import main

STANDIN_PROGRAMS = ("docker", "ssh", "sh", "mkdir", "od", "stat")
SHELL_BUILTINS = ("test",)  # run by bash itself, so never recorded
STANDIN = '#!/bin/bash\nprintf "%s\\0" "{prog}" "$#" "$@" >> "$ARGV_LOG"\n'


@dataclass
class CliResult:
    rc: int
    out: str
    err: str

    @property
    def text(self) -> str:
        return self.out + self.err


def run_cli(argv: list[str]) -> CliResult:
    """`ascend-run ARGV` in this process: exit code, stdout, stderr. An exception that escapes `main` (a
    traceback for a user) propagates and fails the test."""
    out, err = io.StringIO(), io.StringIO()
    rc = None
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            main(argv)
        except SystemExit as exc:
            rc = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    assert rc is not None, "main() returned without exiting"
    return CliResult(rc, out.getvalue(), err.getvalue())


def make_standins(bindir: Path) -> Path:
    """Every program the generated scripts and dry runs call (`docker`, `ssh`, and the checks around a
    step: `sh`, `mkdir`, `od`, `stat`), recording their argv instead of running."""
    bindir.mkdir(parents=True, exist_ok=True)
    for prog in STANDIN_PROGRAMS:
        path = bindir / prog
        path.write_text(STANDIN.format(prog=prog))
        path.chmod(0o755)
    return bindir


def run_bash(script: str | Path, bindir: Path, cwd: Path, log: Path) -> subprocess.CompletedProcess:
    """Run a generated script (a path) or dry-run output (text) with bash, the stand-ins first on PATH."""
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "ARGV_LOG": str(log), "HOME": str(cwd), "LC_ALL": "C.UTF-8"}
    argv = ["bash", str(script)] if isinstance(script, Path) else ["bash", "-c", script]
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, timeout=60)


def run_bash_all(scripts: list[tuple[Path, Path]], bindir: Path, cwd: Path) -> list[int]:
    """Run several (script, log) pairs with bash from one driver process (forking this Python once, not
    once per script); each script's stand-in calls go to its own log. Exit codes, in order."""
    driver = "".join(f'ARGV_LOG={shlex.quote(str(log))} bash {shlex.quote(str(script))} </dev/null >/dev/null 2>&1; '
                     'echo "$?"\n' for script, log in scripts)
    env = {"PATH": f"{bindir}:/usr/bin:/bin", "HOME": str(cwd), "LC_ALL": "C.UTF-8"}
    done = subprocess.run(["bash", "-c", driver], cwd=cwd, env=env, capture_output=True, timeout=120)
    return [int(line) for line in done.stdout.decode().split()[-len(scripts):]] if scripts else []


def read_calls(log: Path) -> list[tuple[str, list[str]]]:
    """[(program, argv)] recorded by the stand-ins, in order."""
    if not log.exists():
        return []
    fields = os.fsdecode(log.read_bytes()).split("\0")[:-1]
    calls, i = [], 0
    while i < len(fields):
        prog, count = fields[i], int(fields[i + 1])
        calls.append((prog, fields[i + 2:i + 2 + count]))
        i += 2 + count
    return calls
