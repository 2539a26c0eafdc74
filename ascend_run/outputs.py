"""Writing what a command makes (`--out`, `--plot`): all of it or nothing, and never through a link.

Every file is written to a temporary file beside it (created with O_EXCL, so nothing planted there is
opened) and renamed into place only when every file of the command is complete. A rename replaces a link
at the destination instead of writing where it points, and a directory on the way that is a link the kit
did not make is refused with its path. A failed write (a full disk, /proc, a read-only folder) removes the
temporary files and the directories the command created: nothing half-written is left behind.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path

from ascend_run.errors import ConfigError
from ascend_run.inputs.text import printable


class Staged:
    """The files of one command, staged as temporary files until `commit`."""

    def __init__(self, root: Path | None, option: str) -> None:
        self.root, self.option = root, option
        self.files: list[tuple[str, Path]] = []   # (temporary file, destination)
        self.made: list[Path] = []                # directories created, deepest last

    def add(self, path: str | Path, data: str | bytes, mode: int = 0o644) -> Path:
        """Stage `data` for `path`; `mode` is applied before the rename (0o755 for scripts)."""
        path = Path(path)
        self._directory(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        self.files.append((tmp, path))
        with os.fdopen(fd, "wb") as handle:
            handle.write(data.encode("utf-8") if isinstance(data, str) else data)
            os.fchmod(handle.fileno(), mode & ~_umask())
        return path

    def stage_with(self, path: str | Path, write) -> Path:
        """Stage a file that a library writes itself (`write(tmp_path)`, e.g. matplotlib's savefig)."""
        path = Path(path)
        self._directory(path.parent)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
        os.close(fd)
        self.files.append((tmp, path))
        write(tmp)
        return path

    def _directory(self, directory: Path) -> None:
        """Make `directory` (and its parents); below the command's own root, a link on the way is refused."""
        missing = []
        probe = directory
        while not os.path.lexists(probe):
            missing.append(probe)
            if probe.parent == probe:
                break
            probe = probe.parent
        for part in reversed(missing):
            os.mkdir(part)
            self.made.append(part)
        if self.root is not None:
            current = directory
            while current != self.root and self.root in current.parents:
                if stat.S_ISLNK(os.lstat(current).st_mode):
                    raise ConfigError(f"{printable(str(current))} is a symbolic link the kit did not make; "
                                      "nothing is written through it", key=self.option,
                                      fix="remove the link, or give another directory")
                current = current.parent
        if not os.path.isdir(directory):
            raise ConfigError(f"{printable(str(directory))} is not a directory", key=self.option,
                              fix=f"give {self.option} a directory, or a path in one")

    def commit(self) -> None:
        for _tmp, path in self.files:
            if os.path.isdir(path) and not os.path.islink(path):
                raise ConfigError(f"{printable(str(path))} is a directory; it is not replaced", key=self.option,
                                  fix="remove it, or write elsewhere")
        for tmp, path in self.files:
            os.replace(tmp, path)  # replaces a link there, never writes where it points
        self.files = []

    def discard(self) -> None:
        for tmp, _ in self.files:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        for directory in reversed(self.made):
            with contextlib.suppress(OSError):
                os.rmdir(directory)  # only if empty: what was there before is kept
        self.files, self.made = [], []


@contextlib.contextmanager
def staged_output(path: str | Path | None = None, option: str = "--out") -> Iterator[Staged]:
    """Stage a command's files; renamed into place together at the end, all removed on any failure. An
    OSError is a bad `option` (exit 2) naming the path, not a traceback."""
    staged = Staged(Path(path) if path is not None else None, option)
    try:
        yield staged
        staged.commit()
    except OSError as exc:
        staged.discard()
        where = str(exc.filename) if exc.filename else str(path)
        raise ConfigError(f"cannot write there: {exc.strerror or exc}", file=where, key=option,
                          fix=f"give {option} a place you can write to") from None
    except BaseException:
        staged.discard()
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
