"""One lock file for work that two processes on this machine must not do at once (two `sim up` choosing a
network, two builds downloading the same wheels or making the same base image)."""

from __future__ import annotations

import contextlib
import fcntl
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def held(path: Path | str) -> Iterator[None]:
    """Waits for the exclusive lock on `path` (created if missing) and holds it for the block; closing the
    file releases it, also when the process dies."""
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        yield
