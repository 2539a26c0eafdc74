"""`docker run` for one node, as an argv list, and the per-node `run-<node>.sh` script.

Everything the container needs from the server comes from the hardware profile (devices, driver and
tool mounts, IPC/shm, user); the deployment file adds its own mounts, env, name and privileges.
Quoting happens once, in `render_script`, with `shlex.quote` on each argv element; comment lines go
through `inputs.text.comment`, so no file name can end them.
"""

from __future__ import annotations

import functools
import shlex
from collections.abc import Mapping, Sequence

from ascend_run.inputs.common import Mount
from ascend_run.inputs.deployment import Deployment, Node
from ascend_run.inputs.text import comment

JOB_LABEL = "io.ascend-run.job"
RANK_LABEL = "io.ascend-run.rank"
TASK_LABEL = "io.ascend-run.task"  # one-off containers (weights download, data conversion): not the job
KEEPALIVE_COMMAND = ("sleep", "infinity")


def _csv_field(text: str) -> str:
    """Quote one field of docker's --mount value (it is parsed as CSV)."""
    if "," in text or '"' in text or "\n" in text:
        return '"' + text.replace('"', '""') + '"'
    return text


@functools.lru_cache(maxsize=4096)
def mount_flag(mount: Mount) -> str:
    """`--mount` rather than `-v`: a missing source is an error instead of a silently created empty dir.
    Cached: every node of a job has the same mounts, and a plan for 50,000 nodes renders them each time."""
    fields = ["type=bind", f"source={mount.source}", f"target={mount.target}"]
    if mount.read_only:
        fields.append("readonly")
    return "--mount=" + ",".join(_csv_field(f) for f in fields)


@functools.lru_cache(maxsize=256)
def _device_flags(npu_device: str, management: tuple[str, ...], npus: tuple[int, ...]) -> tuple[str, ...]:
    """`--device=` for each NPU of a node, then the management devices (as `HardwareProfile.device_paths`);
    nodes share a few NPU sets, so a plan for 50,000 nodes formats each set once."""
    return tuple(f"--device={path}" for path in [*(npu_device.format(index=i) for i in npus), *management])


_flag_lists: dict[tuple[int, ...], tuple[tuple[Mount, ...], list[str]]] = {}


def mount_flags(mounts: Sequence[Mount]) -> list[str]:
    """`mount_flag` of each mount, remembered by the mounts' identities (a plan for 50,000 nodes passes the
    same Mount objects every time, and hashing pydantic models was a third of its time). The entry holds
    the mounts themselves, so their ids cannot be reused by other objects while it is kept."""
    key = tuple(map(id, mounts))
    known = _flag_lists.get(key)
    if known is None:
        if len(_flag_lists) > 256:
            _flag_lists.clear()
        known = _flag_lists[key] = (tuple(mounts), [mount_flag(m) for m in mounts])
    return known[1]


def container_mounts(dep: Deployment) -> list[Mount]:
    """Profile mounts (driver, tools, hccn.conf, logs), then the deployment's own (datasets, checkpoints)."""
    return [*dep.profile.mounts, *dep.mounts]


def docker_run_argv(dep: Deployment, node: Node, command: Sequence[str] = KEEPALIVE_COMMAND,
                    *, docker: Sequence[str] = ("docker",), extra_mounts: Sequence[Mount] = (),
                    workdir: str | None = None, auto_remove: bool = False,
                    extra_env: Mapping[str, str] | None = None) -> list[str]:
    """The full `docker run -d …` command for `node`: one element per argument, nothing quoted.

    The launcher adds `extra_mounts` (the job's log dir, synced dirs) and the job's `workdir`.
    """
    profile, container = dep.profile, dep.spec.container
    argv = _run_head(docker, dep.container_name, node, container.user or profile.container.user, auto_remove)
    if profile.container.ipc_host:
        argv.append("--ipc=host")
    else:
        shm = container.shm_size or profile.container.shm_size
        if shm:
            argv += ["--shm-size", shm]
    if container.privileged:
        argv.append("--privileged")
    argv += _device_flags(profile.npu_device, profile.management_devices, node.npus)
    if dep.spec.secrets:  # the values travel in a 0600 file on the server, never in this argv (ascend_run/secrets.py)
        from ascend_run.secrets import env_file_path

        argv += ["--env-file", env_file_path(dep)]
    return argv + _run_tail([*container_mounts(dep), *extra_mounts], {**dep.node_env(node), **(extra_env or {})},
                            {JOB_LABEL: dep.name, RANK_LABEL: str(node.rank)}, workdir or container.workdir,
                            dep.image, command)


def task_run_argv(dep: Deployment, node: Node, name: str, command: Sequence[str], *,
                  image: str | None = None, mounts: Sequence[Mount] = (), env: Mapping[str, str] | None = None,
                  workdir: str | None = None, user: str | None = None, env_file: str | None = None) -> list[str]:
    """`docker run --detach` of a one-off step on `node` (weights download, data conversion).

    Detached, so a step of hours outlives a dropped SSH session (`steps.task` follows its log, reads its
    exit code, then removes it). Host network, the deployment's own mounts (datasets, checkpoints) and
    env, and no NPUs: a job may hold them, and Ascend forbids mapping one NPU into two containers. `user`
    None means the job's user.
    """
    profile, container = dep.profile, dep.spec.container
    argv = _run_head(("docker",), name, node, user or container.user or profile.container.user)
    if env_file:  # values that must not be in an argv (a proxy's password): a 0600 file on the server
        argv += ["--env-file", env_file]
    by_target = {m.target: m for m in [*dep.mounts, *mounts]}  # the step's own mount wins over the file's
    return argv + _run_tail(list(by_target.values()), {**dep.node_env(node), **(env or {})},
                            {TASK_LABEL: dep.name}, workdir, image or dep.image, command)


def _run_head(docker: Sequence[str], name: str, node: Node, user: str | None, auto_remove: bool = False) -> list[str]:
    """What every container of the kit starts with: detached, named, the node's hostname, host network."""
    argv = [*docker, "run", "--detach", *(["--rm"] if auto_remove else []), "--name", name,
            "--hostname", node.hostname]
    if user:
        argv += ["--user", user]
    return [*argv, "--net=host"]


def _run_tail(mounts: Sequence[Mount], env: Mapping[str, str], labels: Mapping[str, str], workdir: str | None,
              image: str, command: Sequence[str]) -> list[str]:
    """Mounts, environment, labels, working directory, then the image and its command."""
    argv = list(mount_flags(mounts))
    for name, value in env.items():
        argv += ["--env", f"{name}={value}"]
    for name, value in labels.items():
        argv += ["--label", f"{name}={value}"]
    if workdir:
        argv += ["--workdir", workdir]
    return [*argv, image, *command]


def _lines(argv: list[str]) -> list[str]:
    """Group argv for a readable script: each flag with its value on one line."""
    lines: list[list[str]] = [[]]
    i = 0
    while i < len(argv):
        token = argv[i]
        if token.startswith("-") and len(lines[-1]) > 0:
            lines.append([])
        lines[-1].append(token)
        takes_value = token.startswith("-") and "=" not in token and token not in (
            "--detach", "--rm", "--net=host", "--ipc=host", "--privileged")
        if takes_value and i + 1 < len(argv):
            lines[-1].append(argv[i + 1])
            i += 1
        i += 1
    return [" ".join(shlex.quote(t) for t in line) for line in lines]


def render_script(dep: Deployment, node: Node, command: Sequence[str] = KEEPALIVE_COMMAND,
                  secret_values: Mapping[str, str] | None = None) -> str:
    """`run-<node>.sh`: starts this node's container exactly as `docker_run_argv` says. With `secrets:`, the
    script first writes their values into the 0600 env file `docker run --env-file` reads, and removes it
    when it ends: `secret_values` are embedded (the caller writes the script 0700), or shown as
    REDACTED-NAME when None (a script printed for people)."""
    argv = docker_run_argv(dep, node, command)
    image_at = argv.index(dep.image, len(argv) - len(command) - 1)
    flags, tail = argv[:image_at], argv[image_at:]
    body = " \\\n  ".join(_lines(flags) + [" ".join(shlex.quote(t) for t in tail)])
    header = [
        "#!/usr/bin/env bash",
        comment(f"Generated by ascend-run from {shlex.quote(str(dep.path.name))}: node {node.name} (rank "
                f"{node.rank} of {len(dep.nodes)}), profile {dep.profile.name}, NPUs {','.join(map(str, node.npus))}."),
        "# Re-generate instead of editing: ascend-run docker-run -f FILE --out DIR",
        "set -euo pipefail",
        "",
    ]
    if not dep.spec.secrets:
        return "\n".join(header) + "exec " + body + "\n"
    from ascend_run.secrets import WRITE_SCRIPT, env_file_path

    path = shlex.quote(env_file_path(dep))
    lines = "".join(f"{name}={secret_values[name] if secret_values is not None else f'REDACTED-{name}'}\n"
                    for name in dep.spec.secrets)
    secrets = [comment(f"secrets: {', '.join(dep.spec.secrets)} (0600 env file, removed when this script ends)"),
               f"trap {shlex.quote(f'rm -f -- {path}')} EXIT",
               f"sh -c {shlex.quote(WRITE_SCRIPT)} sh {path} <<'ASCEND_RUN_SECRETS'", lines + "ASCEND_RUN_SECRETS", ""]
    return "\n".join(header + secrets) + body + "\n"


def script_name(node: Node) -> str:
    return f"run-{node.name}.sh"
