"""A local package index for image builds on machines whose containers cannot reach PyPI.

Air-gapped clusters (and this project's CI, whose TLS goes through a proxy the build containers do not
trust) build images from a wheelhouse: `pip download` on the host, then a PEP 503 "simple" index served
on 127.0.0.1 for the build's `pip install` (the build runs with host networking).
"""

from __future__ import annotations

import contextlib
import functools
import http.server
import re
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

from ascend_run.errors import AscendRunError


def project_of(filename: str) -> str:
    """PEP 503 normalized project name of a wheel or sdist file name."""
    name = filename.split("-")[0]
    return re.sub(r"[-_.]+", "-", name).lower()


def download(requirements: list[str], dest: Path, python_version: str = "3.11", build_sdists: bool = False) -> Path:
    """`pip download` the requirements (and dependencies) as binary wheels for `python_version`.

    `build_sdists`: some dependencies exist only as source (MindFormers needs jieba and rouge-chinese);
    `pip wheel` then builds them into wheels here, which only fits an image of this interpreter's version."""
    dest.mkdir(parents=True, exist_ok=True)
    if build_sdists:
        here = f"{sys.version_info.major}.{sys.version_info.minor}"
        if here != python_version:
            raise AscendRunError(f"building source-only packages for Python {python_version} needs that Python; "
                                 f"this is {here}", fix=f"run this with Python {python_version}")
        command = [sys.executable, "-m", "pip", "wheel", "-q", "-w", str(dest), *requirements]
    else:
        command = [sys.executable, "-m", "pip", "download", "-q", "--only-binary=:all:", "-d", str(dest),
                   "--python-version", python_version, *requirements]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        raise AscendRunError(f"pip download failed: {result.stderr.strip()[-500:]}",
                             fix="check the package index is reachable from this machine")
    return dest


# A fixed port keeps the index URL (a build arg) the same from build to build, so the engine's layer cache
# still applies; a random port is the fallback when it is taken.
INDEX_PORT = 38419


@contextlib.contextmanager
def serve(wheelhouse: Path) -> Iterator[str]:
    """Serve `wheelhouse` as a simple index on 127.0.0.1; yields the index URL (…/simple/)."""
    files = [p for p in Path(wheelhouse).iterdir() if p.suffix in (".whl", ".gz", ".zip")]
    if not files:
        raise AscendRunError(f"no wheels in {wheelhouse}", fix="fill it with `pip download -d DIR …`")
    with tempfile.TemporaryDirectory(prefix="ascend-run-index-") as tmp:
        for path in files:
            project = Path(tmp) / "simple" / project_of(path.name)
            project.mkdir(parents=True, exist_ok=True)
            (project / path.name).symlink_to(path.resolve())
        handler = functools.partial(_QuietHandler, directory=tmp)
        try:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", INDEX_PORT), handler)
        except OSError:
            server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        thread = threading.Thread(target=server.serve_forever, daemon=True)
        thread.start()
        try:
            yield f"http://127.0.0.1:{server.server_address[1]}/simple/"
        finally:
            server.shutdown()
            server.server_close()


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's name
        pass
