"""Docker operations on one node, over any transport: small functions, each one command.

The transport is anything with `run(argv, *, env=None, timeout=None, stdin=None) -> Result(rc, stdout,
stderr)`: SSH for real servers, local for tests. Docker on a node is composition over the transport.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from ascend_run.render.docker_run import JOB_LABEL

DOCKER = "docker"


@dataclass(frozen=True)
class ContainerInfo:
    name: str
    state: str          # created, running, exited, …
    status: str         # "Up 3 minutes", "Exited (1) 2 seconds ago"
    started_at: str = ""


def job_containers(t, job: str, label: str = JOB_LABEL) -> list[ContainerInfo]:
    """Containers of `job` on this node (any state), found by label rather than by name; with
    label=TASK_LABEL, its one-off steps (weights download, data conversion) instead."""
    result = t.run([DOCKER, "ps", "-a", "--filter", f"label={label}={job}",
                    "--format", "{{json .}}"], timeout=60)
    result.check(getattr(t, "host", "node"))
    out = []
    for line in result.stdout.splitlines():
        if line.strip():
            data = json.loads(line)
            out.append(ContainerInfo(name=data.get("Names", ""), state=data.get("State", ""),
                                     status=data.get("Status", "")))
    return out


def container_state(t, name: str) -> str | None:
    """'running', 'exited', … for an existing container, None when there is none."""
    result = t.run([DOCKER, "container", "inspect", "--format", "{{.State.Status}}", name], timeout=60)
    return result.stdout.strip() if result.rc == 0 else None


def image_id(t, image: str) -> str | None:
    """The image's id on this node, or None when the node does not have it."""
    result = t.run([DOCKER, "image", "inspect", "--format", "{{.Id}}", image], timeout=60)
    return result.stdout.strip() if result.rc == 0 else None


def remove_containers(t, names: list[str]) -> None:
    """`docker rm -f`: kills every process of the container (msrun's setsid workers included)."""
    if names:
        t.run([DOCKER, "rm", "-f", *names], timeout=120)


def wait_container(t, name: str, timeout: float | None = None) -> int:
    """Block until the container exits; its exit code (the job's), or -1 if it was removed before."""
    result = t.run([DOCKER, "wait", name], timeout=timeout)
    text = result.stdout.strip()
    if result.rc == 0 and text.lstrip("-").isdigit():
        return int(text)
    return -1
