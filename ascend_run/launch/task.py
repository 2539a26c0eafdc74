"""Run one one-off step (weights download, data conversion) in a container on one node.

The container runs attached over the transport, so its output streams line by line and its exit code is
the step's. It is never left behind: `--rm` when it ends, `docker rm -f` when we are interrupted. A
container of the same name still running (a download whose SSH session was lost) is reported rather than
replaced, since killing it could throw away hours of work.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ascend_run.errors import AscendRunError
from ascend_run.launch import nodeops


def container_state(t, name: str) -> str | None:
    """'running', 'exited', … for an existing container, None when there is none."""
    result = t.run(["docker", "container", "inspect", "--format", "{{.State.Status}}", name], timeout=60)
    return result.stdout.strip() if result.rc == 0 else None


def run_task(t, name: str, docker_argv: Sequence[str], on_line: Callable[[str], None]) -> int:
    """Run `docker_argv` (a `docker run --rm --name NAME …`) on the node; returns the container's exit code."""
    host = getattr(t, "host", "node")
    state = container_state(t, name)
    if state == "running":
        raise AscendRunError(f"{host}: container {name} is already running",
                             fix=f"wait for it to end, or stop it: ssh to {host} and run docker rm -f {name}")
    if state is not None:
        nodeops.remove_containers(t, [name])  # an exited leftover only blocks the name
    try:
        return t.stream(list(docker_argv), on_line)
    except BaseException:
        nodeops.remove_containers(t, [name])
        raise
