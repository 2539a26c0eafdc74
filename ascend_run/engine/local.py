"""The Docker engine on this machine that holds and builds images, found the same way by every command.

In order: the one named (`--docker-host`, else DOCKER_HOST); the system engine (/var/run/docker.sock); the
kit's own. Machines without an init system (CI, containers) have the engine installed but not running: the
kit then runs its own daemon with a persistent data-root, so built layers and images are kept from run to
run, and an image the demo built is found again by `image ship` or `image build` afterwards (the engine is
started again if it was stopped).
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ascend_run.errors import EngineError

DEFAULT_ROOT = Path("/var/lib/ascend-run/engine")
SYSTEM_ENGINE = "unix:///var/run/docker.sock"


def kit_engine_url(root: Path = DEFAULT_ROOT) -> str:
    """Where the kit's own engine for `root` listens."""
    return f"unix:///run/ascend-run-{Path(root).name}.sock"


def answers(base_url: str) -> bool:
    import docker

    try:
        docker.DockerClient(base_url=base_url, timeout=5).ping()
        return True
    except Exception:
        return False


@dataclass
class LocalEngine:
    base_url: str
    process: subprocess.Popen | None = None  # set when we started it, so we also stop it
    exec_root: str = ""

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        subprocess.run(["umount", "-R", self.exec_root], capture_output=True)
        self.process = None


def ensure_engine(root: Path = DEFAULT_ROOT, timeout_s: float = 30.0, docker_host: str | None = None) -> LocalEngine:
    """The engine for images (see the module docstring): `docker_host` (default $DOCKER_HOST) if it answers,
    the system engine, or the kit's own for `root`, started when it does not run. A named engine that does not
    answer is an error, unless it is the kit's own socket (then it is started)."""
    named = docker_host or os.environ.get("DOCKER_HOST")
    root = Path(root)
    base_url = kit_engine_url(root)
    if named and answers(named):
        return LocalEngine(named)
    if named and named != base_url:
        raise EngineError(f"no Docker engine answers at {named} (--docker-host or DOCKER_HOST)",
                          fix="start that engine, or unset DOCKER_HOST to use the system's or the kit's own")
    if not named and answers(SYSTEM_ENGINE):
        return LocalEngine(SYSTEM_ENGINE)
    if answers(base_url):
        return LocalEngine(base_url)
    return _start(root, base_url, timeout_s)


def _start(root: Path, base_url: str, timeout_s: float) -> LocalEngine:
    """The kit's own dockerd for `root` (data-root under it, so images survive a stop)."""
    name = root.name
    if shutil.which("dockerd") is None:
        raise EngineError("no Docker engine answers and dockerd is not installed",
                          fix="apt-get install docker.io (or set DOCKER_HOST to a running engine)")
    if os.geteuid() != 0:
        raise EngineError("no Docker engine answers, and starting one needs root",
                          fix="run as root, or start dockerd and set DOCKER_HOST")
    root.mkdir(parents=True, exist_ok=True)
    exec_root = f"/run/ascend-run-{name}-exec"
    log = open(root / "dockerd.log", "ab")
    process = subprocess.Popen(
        ["dockerd", "--storage-driver=overlay2", "--iptables=false", "--bridge=none",
         f"--data-root={root / 'docker'}", f"--exec-root={exec_root}", f"--pidfile=/run/ascend-run-{name}.pid",
         "-H", base_url],
        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if answers(base_url):
            return LocalEngine(base_url, process, exec_root)
        if process.poll() is not None:
            raise EngineError(f"dockerd exited with code {process.returncode}",
                              fix=f"read {shlex.quote(str(root / 'dockerd.log'))}")
        time.sleep(0.1)
    process.kill()
    raise EngineError(f"dockerd did not answer within {timeout_s:.0f} s",
                      fix=f"read {shlex.quote(str(root / 'dockerd.log'))}")


@contextlib.contextmanager
def engine_client(docker_host: str | None = None) -> Iterator[tuple[LocalEngine, object]]:
    """(engine, docker client) for one command; an engine started here is stopped at the end (its images
    stay in its data-root)."""
    from ascend_run.engine.build import connect

    engine = ensure_engine(docker_host=docker_host)
    try:
        yield engine, connect(engine.base_url)
    finally:
        engine.stop()
