"""`ascend-run push` against a real loopback sshd server (tests/conftest_sshd.py): the relays of the broadcast
run there over the kit's SSH connection. The loopback servers share this machine's filesystem, so one server
receives here; tests/test_push_sim.py sends to three simulated servers, each with its own disk."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from ascend_run.cli import main


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


def tree(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and not p.name.startswith(".ascend-run")}


@pytest.fixture
def deploy(sshd_fleet, tmp_path) -> Path:
    path = tmp_path / "deploy.yaml"
    path.write_text(sshd_fleet.deployment_yaml())
    return path


@pytest.fixture
def folder(tmp_path) -> Path:
    src = tmp_path / "src"
    (src / "sub" / "deeper").mkdir(parents=True)
    (src / "a.bin").write_bytes(os.urandom(3 << 20))
    (src / "sub" / "b.txt").write_text("hello\n")
    (src / "sub" / "deeper" / "empty").write_bytes(b"")
    return src


def test_a_folder_lands_verified_and_unchanged_files_are_skipped(deploy, folder, tmp_path, capsys):
    dest = tmp_path / "dest"
    code, out, err = run(["push", "-f", str(deploy), "-w", "n0", "-o", "json", str(folder), str(dest)], capsys)
    assert code == 0, err
    report = json.loads(out)
    assert tree(dest) == tree(folder)
    (server,) = report["servers"]
    assert server["node"] == "n0" and server["files_written"] == 3 and server["bytes"] == (3 << 20) + 6
    assert server["seconds"] > 0
    (folder / "sub" / "b.txt").write_text("changed\n")
    code, out, err = run(["push", "-f", str(deploy), "-w", "n0", "-o", "json", str(folder), str(dest)], capsys)
    (server,) = json.loads(out)["servers"]
    assert code == 0 and server["files_written"] == 1 and server["files_skipped"] == 2 and server["bytes"] == 8
    assert tree(dest) == tree(folder)
    code, out, err = run(["push", "-f", str(deploy), "-w", "n0", str(folder), str(dest)], capsys)
    assert code == 0 and "n0: all 3 file(s) already there, unchanged" in out


def test_a_file_to_a_path_or_into_a_directory(deploy, tmp_path, capsys):
    src = tmp_path / "hccl.json"
    src.write_text('{"version": "1.0"}\n')
    code, _, err = run(["push", "-f", str(deploy), "-w", "n1", str(src), str(tmp_path / "etc" / "renamed.json")],
                       capsys)
    assert code == 0, err
    assert (tmp_path / "etc" / "renamed.json").read_text() == src.read_text()
    code, _, err = run(["push", "-f", str(deploy), "-w", "n1", str(src), f"{tmp_path / 'into'}/"], capsys)
    assert code == 0 and (tmp_path / "into" / "hccl.json").read_text() == src.read_text()


def test_dry_run_says_what_each_server_would_get_and_sends_nothing(deploy, folder, tmp_path, capsys):
    dest = tmp_path / "dest"
    code, out, _ = run(["push", "-f", str(deploy), "-w", "n0", "--dry-run", "-o", "json", str(folder), str(dest)],
                       capsys)
    assert code == 0 and not dest.exists()
    (server,) = json.loads(out)["servers"]
    assert sorted(server["send"]) == ["a.bin", "sub/b.txt", "sub/deeper/empty"]


@pytest.mark.parametrize("dest,message", [("relative/path", "absolute"), ("/ok\nno", "control character")])
def test_a_bad_destination_is_refused_before_connecting(dest, message, tmp_path, capsys):
    (tmp_path / "x").write_text("x")
    offline = tmp_path / "offline.yaml"
    offline.write_text("name: o\nprofile: atlas-800t-a2\nimage: x:1\nssh: {identity_file: /nonexistent/k}\n"
                       "nodes:\n  - address: 192.0.2.1\n")
    code, _, err = run(["push", "-f", str(offline), str(tmp_path / "x"), dest], capsys)
    assert code == 2 and message in err
