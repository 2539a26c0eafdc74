"""Download the model weights from the openMind hub onto one node, inside the image, resumably.

The article downloads ~1.4 TB with `openmind_hub.snapshot_download` from inside the inference
container. We do the same, so no Python package is needed on the servers themselves: a one-off
container of the image (it pins openmind-hub) runs `steps/hub_fetch.py`, which adds the free-space
check, staging in DEST.partial and the completion marker; see that file for the protocol. This module
builds the `docker run` (pure) and turns the script's events into progress and errors for people.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from ascend_run import secrets
from ascend_run.errors import ConfigError, StepFailed
from ascend_run.inputs import text
from ascend_run.inputs.common import Mount
from ascend_run.inputs.deployment import Deployment, Node, check_image, check_option
from ascend_run.inputs.text import HUB_REPO, REVISION
from ascend_run.launch.plan import SYNC_ROOT
from ascend_run.render.docker_run import task_run_argv
from ascend_run.steps.task import Command, SecretFile, Upload, run_task, task_commands
from ascend_run.transport.base import Transport

SCRIPT = Path(__file__).parent / "hub_fetch.py"
IN_CONTAINER = "/opt/ascend-run/hub_fetch.py"
EVENT_PREFIX = "@ascend-run "
DEFAULT_ENDPOINT = "https://modelers.cn"


@dataclass(frozen=True)
class HubFetch:
    """One download: the deployment's `weights:` section with the command line's overrides applied."""

    repo: str
    revision: str
    dest: str
    image: str
    endpoint: str | None = None
    https_proxy: str | None = None
    ca_bundle: str | None = None
    workers: int = 8


def hub_fetch(dep: Deployment, *, repo: str | None = None, dest: str | None = None,
              revision: str | None = None, image: str | None = None, workers: int = 8) -> HubFetch:
    weights = dep.spec.weights
    check_option("--repo", repo, lambda v: text.matching(HUB_REPO, v, "a hub repository like org/name"))
    check_option("--revision", revision, lambda v: text.matching(REVISION, v, "a branch, tag or commit"))
    check_option("--image", image, check_image)
    check_option("--to", dest, text.absolute_path)
    dest = dest or weights.dir
    if not dest:
        raise ConfigError("no weights directory", file=str(dep.path), key="weights.dir",
                          fix="set weights.dir in the deployment file, or pass --to /path/on/the/servers")
    if posixpath.normpath(dest) == "/":
        raise ConfigError(f"{dest!r} must be an absolute directory below / on the servers", key="--to")
    return HubFetch(repo=repo or weights.repo, revision=revision or weights.revision,
                    dest=posixpath.normpath(dest), image=image or weights.image or dep.image,
                    endpoint=weights.endpoint, https_proxy=weights.https_proxy, ca_bundle=weights.ca_bundle,
                    workers=workers)


def download_node(dep: Deployment, choice: str | None = None) -> Node:
    choice = choice or dep.spec.weights.node
    return dep.select([choice])[0] if choice else dep.nodes[0]


def script_on_node(dep: Deployment) -> str:
    return f"{SYNC_ROOT}/{dep.name}/tools/hub_fetch.py"


def container_name(dep: Deployment) -> str:
    return f"{dep.container_name}-weights"


def fetch_argv(dep: Deployment, node: Node, req: HubFetch) -> list[str]:
    """The `docker run` that downloads on `node`: the parent of DEST mounted, the script read-only."""
    parent = posixpath.dirname(req.dest)
    mounts = [Mount(source=parent, target=parent),
              Mount(source=script_on_node(dep), target=IN_CONTAINER, read_only=True)]
    # openmind_hub refuses to write outside its white list; progress bars would flood the log.
    env = {"HUB_WHITE_LIST_PATHS": parent, "OM_HUB_DISABLE_PROGRESS_BARS": "1"}
    if req.https_proxy and not proxy_env(req):  # with a password it goes in a 0600 env file, not in argv
        env.update(HTTPS_PROXY=req.https_proxy, https_proxy=req.https_proxy)
    if req.ca_bundle:
        mounts.append(Mount(source=req.ca_bundle, target=req.ca_bundle, read_only=True))
        env["REQUESTS_CA_BUNDLE"] = req.ca_bundle
    command = ["python3", IN_CONTAINER, "--repo", req.repo, "--revision", req.revision, "--dest", req.dest,
               "--workers", str(req.workers)]
    if req.endpoint:
        command += ["--endpoint", req.endpoint]
    # root in the container: the servers' directories are root's; the script leaves files world-readable
    return task_run_argv(dep, node, container_name(dep), command, image=req.image, mounts=mounts, env=env,
                         user="0", env_file=proxy_env_path(dep) if proxy_env(req) else None)


def proxy_env(req: HubFetch) -> dict[str, str]:
    """The proxy's variables when its URL carries a password (they travel in an env file), else {}."""
    if not req.https_proxy or not secrets.proxy_credentials(req.https_proxy):
        return {}
    return {"HTTPS_PROXY": req.https_proxy, "https_proxy": req.https_proxy}


def proxy_env_path(dep: Deployment) -> str:
    return f"{SYNC_ROOT}/{dep.name}/proxy-{container_name(dep)}.env"


def parse_event(line: str) -> dict | None:
    """The script's `@ascend-run {json}` lines; None for anything else (the library's own log)."""
    text = line.strip()
    if not text.startswith(EVENT_PREFIX):
        return None
    try:
        event = json.loads(text[len(EVENT_PREFIX):])
    except ValueError:
        return None
    return event if isinstance(event, dict) and "event" in event else None


def ca_check_argv(req: HubFetch) -> list[str]:
    return ["test", "-f", req.ca_bundle]


def mkdir_argv(dep: Deployment, req: HubFetch) -> list[str]:
    """The parent of DEST (bind mounts need it) and the script's directory."""
    return ["mkdir", "-p", posixpath.dirname(req.dest), posixpath.dirname(script_on_node(dep))]


def commands(dep: Deployment, node: Node, req: HubFetch) -> list[Command]:
    """Everything `run_fetch` runs on the node, in order (`--dry-run` prints this list)."""
    secret = [SecretFile(proxy_env_path(dep), tuple(proxy_env(req)))] if proxy_env(req) else []
    return [*([ca_check_argv(req)] if req.ca_bundle else []), mkdir_argv(dep, req), Upload(SCRIPT, script_on_node(dep)),
            *secret, *task_commands(container_name(dep), fetch_argv(dep, node, req))]


def prepare_node(t: Transport, dep: Deployment, req: HubFetch) -> None:
    """The CA bundle checked, the directories made, the script copied: the first commands of `commands`."""
    if req.ca_bundle and not t.run(ca_check_argv(req), timeout=60).ok:
        raise ConfigError(f"{t.host}: {req.ca_bundle} does not exist on the download node", key="weights.ca_bundle",
                          fix="copy the proxy's CA certificate (PEM) there, or remove weights.ca_bundle")
    argv = mkdir_argv(dep, req)
    t.run(argv, timeout=60).check(t.host, argv)
    t.put(SCRIPT, script_on_node(dep))


def run_fetch(t: Transport, dep: Deployment, node: Node, req: HubFetch, on_event: Callable[[dict], None],
              on_log: Callable[[str], None]) -> dict:
    """Download on `node`; returns the script's final `done` event or raises StepFailed for people."""
    prepare_node(t, dep, req)
    events: list[dict] = []
    tail: list[str] = []

    def on_line(line: str) -> None:
        event = parse_event(line)
        if event is None:
            tail[:] = [*tail[-19:], line]
            on_log(line)
            return
        events.append(event)
        on_event(event)

    path, found = proxy_env_path(dep), proxy_env(req)
    if found:
        t.run(["sh", "-c", secrets.WRITE_SCRIPT, "sh", path], stdin=secrets.env_file(found),
              timeout=60).check(t.host, ["sh", "-c", "(write the 0600 proxy env file)", path])
    rc = run_task(t, container_name(dep), fetch_argv(dep, node, req), on_line, on_notice=on_log,
                  after_start=(lambda: t.run([*secrets.REMOVE_ARGV, path], timeout=60)) if found else (lambda: None))
    last = events[-1] if events else {}
    if rc == 0 and last.get("event") == "done":
        return last
    raise fetch_error(node.name, req, rc, last, tail)


# The script's error kinds: (message, fix), formatted with node, hub, message, repo, revision and dest.
HUB_ERRORS = {
    "unreachable": ("{node}: cannot reach the hub {hub}: {message}; nothing was downloaded",
                    "check the node's route to the hub; behind a proxy set weights.https_proxy "
                    "(and weights.ca_bundle if the proxy re-signs TLS)"),
    "space": ("{node}: {message}; nothing was downloaded",
              "free space there, or download to a larger disk with --to"),
    "not-ours": ("{node}: {message}",
                 "move it aside, or if it is a complete copy spread it as it is: --to {dest} --from-node"),
    "missing-library": ("{node}: {message}", "use the infer image (it pins openmind-hub): --image or weights.image"),
    "hub": ("{node}: the hub {hub} refused {repo}@{revision}: {message}",
            "check the repository name and revision on the hub"),
    "download": ("{node}: the download stopped: {message}; what arrived is kept in {dest}.partial and {dest} was "
                 "not created", "run the same command again to resume"),
}


def fetch_error(node: str, req: HubFetch, rc: int, event: dict, tail: list[str]) -> StepFailed:
    """The script's last event (or the container's exit code and output) as an error for people."""
    known = HUB_ERRORS.get(event.get("kind"))
    if known is not None:
        fields = {"node": node, "hub": req.endpoint or DEFAULT_ENDPOINT, "message": event.get("message", ""),
                  "repo": req.repo, "revision": req.revision, "dest": req.dest}
        message, fix = known
        return StepFailed(message.format(**fields), fix=fix.format(**fields))
    detail = "\n    ".join([line for line in tail if line.strip()][-3:])
    return StepFailed(f"{node}: the download container exited with code {rc}"
                      + (f":\n    {detail}" if detail else ""),
                      fix=f"{req.dest} was not marked complete; fix the cause above and run again to resume")
