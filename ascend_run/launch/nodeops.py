"""Docker operations on one node, over any transport: a pure argv builder and a small function per command.

The builders (`*_argv`) are what the functions run and what `--dry-run` prints, so the two cannot drift.
Docker on a node is composition over the transport (`run(argv, …) -> Result`), not a client of its own.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ascend_run.render.docker_run import JOB_LABEL
from ascend_run.transport.base import Transport

DOCKER = "docker"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    state: str          # created, running, exited, …
    status: str         # "Up 3 minutes", "Exited (1) 2 seconds ago"


# --- the commands, as argv lists ------------------------------------------------------------------------

def list_argv(job: str, label: str = JOB_LABEL) -> list[str]:
    """Every container (any state) carrying `label=job`, one JSON object per line."""
    return [DOCKER, "ps", "-a", "--filter", f"label={label}={job}", "--format", "{{json .}}"]


def remove_argv(names: list[str]) -> list[str]:
    """`docker rm -f`: kills every process of the container (msrun's setsid workers included)."""
    return [DOCKER, "rm", "-f", *names]


def state_argv(name: str) -> list[str]:
    return [DOCKER, "container", "inspect", "--format", "{{.State.Status}}", name]


def image_id_argv(image: str) -> list[str]:
    return [DOCKER, "image", "inspect", "--format", "{{.Id}}", image]


def wait_argv(name: str) -> list[str]:
    return [DOCKER, "wait", name]


def logs_argv(name: str, follow: bool = True, tail: int | None = None, since: float | None = None) -> list[str]:
    """`docker logs`: all of it, the last `tail` lines, or what came after `since` (a Unix time)."""
    return [DOCKER, "logs", *(["--follow"] if follow else []), *(["--tail", str(tail)] if tail is not None else []),
            *(["--since", f"{since:.3f}"] if since is not None else []), name]


# --- running them -----------------------------------------------------------------------------------------

def job_containers(t: Transport, job: str, label: str = JOB_LABEL) -> list[ContainerInfo]:
    """Containers of `job` on this node (any state), found by label rather than by name; with
    label=TASK_LABEL, its one-off steps (weights download, data conversion) instead."""
    argv = list_argv(job, label)
    result = t.run(argv, timeout=60).check(t.host, argv)
    out = []
    for line in result.stdout.splitlines():
        if line.strip():
            data = json.loads(line)
            out.append(ContainerInfo(name=data.get("Names", ""), state=data.get("State", ""),
                                     status=data.get("Status", "")))
    return out


def container_state(t: Transport, name: str) -> str | None:
    """'running', 'exited', … for an existing container, None when there is none."""
    result = t.run(state_argv(name), timeout=60)
    return result.stdout.strip() if result.rc == 0 else None


def image_id(t: Transport, image: str) -> str | None:
    """The image's id on this node, or None when the node does not have it."""
    result = t.run(image_id_argv(image), timeout=60)
    return result.stdout.strip() if result.rc == 0 else None


def remove_containers(t: Transport, names: list[str]) -> None:
    if names:
        t.run(remove_argv(names), timeout=120)


def wait_container(t: Transport, name: str, timeout: float | None = None) -> int:
    """Block until the container exits; its exit code (the job's), or -1 if it was removed before."""
    return exit_code_of_wait(t.run(wait_argv(name), timeout=timeout))


def exit_code_of_wait(result) -> int:
    """`docker wait`'s answer: the container's exit code, or -1 if it was gone before."""
    text = result.stdout.strip()
    return int(text) if result.rc == 0 and text.lstrip("-").isdigit() else -1
