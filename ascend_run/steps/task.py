"""Run one one-off step (weights download, data conversion) in a container on one node.

The container runs detached and we follow its log: a download of hours survives a dropped SSH session or
a closed laptop, and running the same command again follows the step still running instead of starting
a second one. Its exit code is read with `docker wait` before it is removed, so it is the step's. It is
never left behind by us: removed when it ends, and `docker rm -f` when we are interrupted (Ctrl-C means
stop the step; a resumable step continues where it stopped the next time).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from ascend_run.inputs.text import comment
from ascend_run.launch import nodeops
from ascend_run.transport.base import Transport

FOLLOW_NOTE = "{host}: {name} is already running (started earlier); following it"


@dataclass(frozen=True)
class Upload:
    """A file the step copies to the node (over SFTP) before its commands run."""

    local: Path
    remote: str


@dataclass(frozen=True)
class SecretFile:
    """A 0600 env file the step writes on the node over stdin before its `docker run --env-file` reads it,
    removed once the container has started: values that must not be in an argv (ascend_run/secrets.py)."""

    remote: str
    names: tuple[str, ...]


Command = list[str] | Upload | SecretFile


def task_commands(name: str, docker_argv: Sequence[str]) -> list[list[str]]:
    """Every command `run_task` runs for a step that is not running yet, in order: what `--dry-run` prints."""
    return [nodeops.state_argv(name), list(docker_argv), *follow_commands(name)]


def dry_run_lines(node, commands: Sequence[Command]) -> list[str]:
    """`--dry-run` output of a step: which node, then each command as a shell line (uploads as comments)."""
    lines = [comment(f"on {node.name} ({node.ssh.user}@{node.address}):")]
    for command in commands:
        if isinstance(command, Upload):
            lines.append(comment(f"copy {shlex.quote(str(command.local))} to {shlex.quote(command.remote)} (SFTP)"))
        elif isinstance(command, SecretFile):
            lines.append(comment(f"write {', '.join(command.names)} into {shlex.quote(command.remote)} (0600, over "
                                 "ssh stdin; removed once the container has started)"))
        else:
            lines.append(shlex.join(command))
    return lines


def follow_commands(name: str) -> list[list[str]]:
    """What runs after `docker run --detach`: the log until the container ends, its exit code, removal.
    `run_task` runs exactly these; `--dry-run` prints them."""
    return [nodeops.logs_argv(name), nodeops.wait_argv(name), nodeops.remove_argv([name])]


def run_task(t: Transport, name: str, docker_argv: Sequence[str], on_line: Callable[[str], None],
             on_notice: Callable[[str], None] = lambda s: None,
             after_start: Callable[[], None] = lambda: None) -> int:
    """Start `docker_argv` (a `docker run --detach --name NAME …`) on the node, or follow NAME if it is
    already running; hand its output to `on_line`; return its exit code (docker's own if it cannot start)."""
    state = nodeops.container_state(t, name)
    if state == "running":
        after_start()
        on_notice(FOLLOW_NOTE.format(host=t.host, name=name))
    else:
        if state is not None:
            nodeops.remove_containers(t, [name])  # an ended leftover only blocks the name
        try:
            started = t.run(list(docker_argv), timeout=600)
        finally:
            after_start()  # e.g. the env file docker has read is removed, whether the start worked or not
        if not started.ok:  # no image, a bad mount: docker says why
            for line in started.stderr.splitlines():
                on_line(line)
            return started.rc
    follow, wait, remove = follow_commands(name)
    try:
        t.stream(follow, on_line)
        rc = nodeops.exit_code_of_wait(t.run(wait))
    except BaseException:
        _remove_quietly(t, remove)
        raise
    _remove_quietly(t, remove)
    return rc


def _remove_quietly(t: Transport, remove: list[str]) -> None:
    try:
        t.run(remove, timeout=120)
    except Exception:  # noqa: BLE001,S110 (the connection may be what failed; the first error is the one to show)
        pass
