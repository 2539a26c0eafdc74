"""A Docker engine on this machine for building images: the one at DOCKER_HOST, or a private dockerd.

Machines without an init system (CI, containers) have the engine installed but not running. The kit
then starts its own daemon with a persistent data-root, so built layers are reused from run to run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from ascend_run.errors import EngineError

DEFAULT_ROOT = Path("/var/lib/ascend-run/engine")


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


def ensure_engine(root: Path = DEFAULT_ROOT, timeout_s: float = 30.0) -> LocalEngine:
    """An engine that answers: DOCKER_HOST's, the kit's own if already running, or a new private one."""
    env_host = os.environ.get("DOCKER_HOST")
    if env_host and answers(env_host):
        return LocalEngine(env_host)
    root = Path(root)
    name = root.name
    socket = f"/run/ascend-run-{name}.sock"
    base_url = f"unix://{socket}"
    if answers(base_url):
        return LocalEngine(base_url)
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
            raise EngineError(f"dockerd exited with code {process.returncode}", fix=f"read {root / 'dockerd.log'}")
        time.sleep(0.1)
    process.kill()
    raise EngineError(f"dockerd did not answer within {timeout_s:.0f} s", fix=f"read {root / 'dockerd.log'}")
