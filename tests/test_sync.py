"""`job.sync`: only what changed is sent (checked by sha256), as a stream; a re-sync of an unchanged tree
sends no file contents. Counted at the transport: every byte given to a command's stdin."""

from __future__ import annotations

import io
import os
import tarfile
from pathlib import Path

import pytest

from ascend_run.launch.sync import Tree, changes, local_tree, parse_listing, sync_dir, tar_stream
from ascend_run.transport.local import LocalTransport


class Counting(LocalTransport):
    """A local transport that counts what it sends to commands' stdin (what would cross the network)."""

    def __init__(self) -> None:
        super().__init__("node")
        self.sent = 0
        self.commands: list[list[str]] = []

    def run(self, argv, *, stdin=None, **kw):
        self.commands.append(list(argv))
        if stdin is not None:
            chunks = [stdin] if isinstance(stdin, bytes) else stdin

            def counted():
                for chunk in chunks:
                    self.sent += len(chunk)
                    yield chunk
            stdin = counted()
        return super().run(argv, stdin=stdin, **kw)


def tree_of(path: Path) -> dict[str, bytes]:
    return {str(p.relative_to(path)): (p.read_bytes() if p.is_file() else b"<dir>")
            for p in sorted(path.rglob("*"))}


@pytest.fixture
def source(tmp_path) -> Path:
    src = tmp_path / "src"
    (src / "pkg" / "sub").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "big.bin").write_bytes(os.urandom(3 << 20))  # 3 MiB: several chunks
    (src / "run.sh").write_text("#!/bin/sh\necho hi\n")
    (src / "run.sh").chmod(0o755)
    (src / "pkg" / "a.py").write_text("a = 1\n")
    (src / "pkg" / "sub" / "b.py").write_text("b = 2\n")
    return src


def sync(t, src: Path, dest: Path):
    return sync_dir(t, src, local_tree(src), str(dest))


def test_first_sync_sends_everything_then_nothing_when_unchanged(source, tmp_path):
    dest, t = tmp_path / "node" / "sync" / "0", Counting()
    first = sync(t, source, dest)
    assert tree_of(dest) == tree_of(source) and os.access(dest / "run.sh", os.X_OK)
    assert first.files_sent == 4 and t.sent >= 3 << 20
    t.sent, t.commands = 0, []
    again = sync(t, source, dest)
    assert (again.files_sent, again.bytes_sent, again.removed) == (0, 0, 0)
    assert t.sent == 0, "an unchanged tree sends no bytes at all"
    assert len(t.commands) == 1, "one listing command, nothing else"


def test_only_changed_files_travel_and_removed_ones_go(source, tmp_path):
    dest, t = tmp_path / "node", Counting()
    sync(t, source, dest)
    (source / "pkg" / "a.py").write_text("a = 2\n")
    (source / "pkg" / "sub" / "b.py").unlink()
    (source / "pkg" / "sub").rmdir()
    (source / "new.txt").write_text("new\n")
    (source / "run.sh").chmod(0o644)  # a mode-only change travels too
    (dest / "stray").write_text("left on the node by hand\n")
    t.sent = 0
    result = sync(t, source, dest)
    assert tree_of(dest) == tree_of(source) and not os.access(dest / "run.sh", os.X_OK)
    assert result.files_sent == 3 and result.removed == 2  # pkg/sub (with b.py) and stray
    assert t.sent < 10_000, "the 3 MiB file did not travel again"


def test_a_file_that_became_a_directory_and_back(source, tmp_path):
    dest, t = tmp_path / "node", Counting()
    sync(t, source, dest)
    (source / "pkg" / "a.py").unlink()
    (source / "pkg" / "a.py").mkdir()
    (source / "pkg" / "a.py" / "inner").write_text("x")
    sync(t, source, dest)
    assert tree_of(dest) == tree_of(source)


def test_the_stream_is_a_valid_tar_and_bounded(source):
    names = ["pkg", "big.bin", "run.sh"]
    chunks = list(tar_stream(source, names))
    assert max(len(c) for c in chunks) <= 1 << 20, "produced 1 MiB at a time, never whole files"
    with tarfile.open(fileobj=io.BytesIO(b"".join(chunks))) as tar:
        assert tar.getnames() == names
        assert tar.extractfile("big.bin").read() == (source / "big.bin").read_bytes()
        assert tar.getmember("run.sh").mode == 0o755


def test_changes_is_pure():
    local = Tree(files={"a": ("1", False), "d/b": ("2", True)}, dirs={"d"})
    remote = parse_listing("present\nd ./d\nd ./old\nm 644 ./d/b\nm 644 ./a\nm 644 ./old/x\n"
                           "1  ./a\n2  ./d/b\n3  ./old/x\n")
    todo = changes(local, remote)
    assert todo.send == ["d/b"] and todo.remove == ["old"]  # b only lost its exec bit; old/x goes with old
    assert not parse_listing("").present
