"""The local Docker engine through the `docker` SDK: connect with a clear error, build with progress."""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ascend_run.errors import EngineError

STEP = re.compile(r"^Step (\d+)/(\d+) : (.*)")


def connect(base_url: str | None = None, timeout: int = 600):
    """A DockerClient, or EngineError saying where we looked and how to fix it."""
    import docker

    where = base_url or os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    try:
        client = (docker.DockerClient(base_url=base_url, timeout=timeout) if base_url
                  else docker.from_env(timeout=timeout))
        client.ping()
    except Exception as exc:  # the SDK raises several unrelated types for "nobody home"
        raise EngineError(f"no Docker engine answers at {where}: {str(exc).splitlines()[0][:200]}",
                          fix="start dockerd (or `systemctl start docker`), or point DOCKER_HOST at a running "
                              "engine") from None
    return client


@dataclass(frozen=True)
class BuildRequest:
    """One image build as the engine receives it: `image build` runs it, `--dry-run` prints it."""

    tag: str
    buildargs: dict[str, str]
    network_host: bool = False

    @property
    def network_mode(self) -> str | None:
        return "host" if self.network_host else None

    def with_index(self, index_url: str) -> BuildRequest:
        """Installs from a package index on this machine (a served wheelhouse): host networking to reach it."""
        return BuildRequest(self.tag, {**self.buildargs, "PIP_INDEX_URL": index_url}, network_host=True)

    def cli_argv(self, context: str) -> list[str]:
        """The same build as a `docker build` command line, for people to read or run by hand."""
        argv = ["docker", "build", "--tag", self.tag]
        for name, value in self.buildargs.items():
            argv += ["--build-arg", f"{name}={value}"]
        if self.network_host:
            argv += ["--network", "host"]
        return [*argv, context]


@dataclass(frozen=True)
class BuildEvent:
    """One line of build output; `step`/`total` are set when the engine starts a Dockerfile step."""

    text: str
    step: int | None = None
    total: int | None = None


def build_image(client, context_files: dict[str, str], tag: str, buildargs: dict[str, str],
                on_event: Callable[[BuildEvent], None] = lambda e: None, network_mode: str | None = None) -> str:
    """Build an image from in-memory context files; stream events; return the image id."""
    with tempfile.TemporaryDirectory(prefix="ascend-run-build-") as tmp:
        for name, text in context_files.items():
            (Path(tmp) / name).write_text(text, encoding="utf-8")
        image_id = None
        for event in _stream(client, tmp, tag, buildargs, network_mode):
            on_event(event)
            if event.text.startswith("Successfully built "):
                image_id = event.text.split()[-1]
        if image_id is None:
            image_id = client.images.get(tag).id
        return image_id


def _stream(client, path: str, tag: str, buildargs: dict[str, str], network_mode: str | None) -> Iterator[BuildEvent]:
    import docker

    try:
        chunks = client.api.build(path=path, tag=tag, buildargs=buildargs, decode=True, rm=True,
                                  forcerm=True, network_mode=network_mode)
        for chunk in chunks:
            if "error" in chunk:
                raise EngineError(f"build of {tag} failed: {chunk['error'].strip()}",
                                  fix="read the build output above; `--base` must name an image with Python 3 "
                                      "and pip, and the MindSpore pin must exist for its Python")
            text = chunk.get("stream", "").rstrip("\n")
            if not text.strip():
                continue
            match = STEP.match(text)
            if match:
                yield BuildEvent(text, int(match.group(1)), int(match.group(2)))
            else:
                yield BuildEvent(text)
    except docker.errors.APIError as exc:
        raise EngineError(f"the engine refused the build of {tag}: {exc.explanation or exc}") from None
