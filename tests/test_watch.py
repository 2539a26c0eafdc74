"""`status --watch` and `events --follow`, against a state folder the way a supervisor writes it (tests/test_jobs.py
plays the supervisor's part: state.json, events, its lock held by a live process)."""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.test_jobs import job_file, launched, supervised  # noqa: F401 - a fixture

REPO = Path(__file__).resolve().parents[1]


def cli(*argv: str, env_dir: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "ASCEND_RUN_STATE_DIR": str(env_dir)}
    env.pop("ASCEND_RUN_FILE", None)
    return subprocess.Popen([sys.executable, "-m", "ascend_run", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def next_line(proc: subprocess.Popen, timeout: float) -> str:
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    assert ready, f"nothing printed in {timeout} s"
    return proc.stdout.readline()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    return tmp_path


def test_status_watch_json_prints_a_document_when_the_step_advances(folder, supervised):
    store = launched(job_file(folder / "alice", "pretrain", 10), step=1200)
    supervised(store)
    proc = cli("status", "--job", "pretrain", "--watch", "-o", "json", "--interval", "0.2", env_dir=folder / "state")
    try:
        first = json.loads(next_line(proc, 60))
        assert first["supervisor"]["stages"][0]["step"] == 1200
        assert [row["state"] for row in first["nodes"]] == ["unreachable", "unreachable"]
        time.sleep(1.5)  # several looks with nothing new: nothing printed
        ready, _, _ = select.select([proc.stdout], [], [], 0)
        assert not ready, "a document without a change"
        state = store.read()
        state.progress = {"stages": [{"stage": 0, "ranks": "0-15", "step": 1201, "loss": 2.5}]}
        changed = time.monotonic()
        store.write(state)
        second = json.loads(next_line(proc, 60))
        seen_after = time.monotonic() - changed
        assert second["supervisor"]["stages"][0]["step"] == 1201 and second["supervisor"]["stages"][0]["loss"] == 2.5
        print(f"the new step was printed {seen_after:.2f} s after state.json changed (interval 0.2 s)")
    finally:
        proc.send_signal(signal.SIGINT)
        proc.communicate(timeout=30)
    assert proc.returncode == 130


def test_events_follow_prints_each_event_until_the_run_ends(folder, supervised):
    store = launched(job_file(folder / "alice", "pretrain", 10))
    store.event("launch", "job pretrain on 2 servers")
    supervised(store)
    proc = cli("events", "--job", "pretrain", "--follow", "-o", "json", env_dir=folder / "state")
    try:
        assert json.loads(next_line(proc, 30))["kind"] == "launch"
        store.event("started", "the job runs on 2 servers")
        assert json.loads(next_line(proc, 30))["detail"] == "the job runs on 2 servers"
        store.event("succeeded", "the job finished")
        assert json.loads(next_line(proc, 30))["kind"] == "succeeded"
        assert proc.wait(30) == 0  # the run's ending event ends the follow
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_events_follow_of_an_ended_run_prints_and_returns(folder, capsys):
    from ascend_run.cli import main

    store = launched(job_file(folder / "alice", "pretrain", 10), state="succeeded")
    store.event("succeeded", "the job finished")
    with pytest.raises(SystemExit) as info:
        main(["events", "--job", "pretrain", "--follow"])
    assert info.value.code == 0 and "succeeded    the job finished" in capsys.readouterr().out


def test_status_watch_redraws_in_place_on_a_terminal(folder, supervised):
    """On a terminal the view is redrawn (cleared, then drawn again) every --interval, not appended."""
    import pty

    store = launched(job_file(folder / "alice", "pretrain", 10), step=5)
    supervised(store)
    leader, follower = pty.openpty()
    env = {**os.environ, "PYTHONPATH": str(REPO), "ASCEND_RUN_STATE_DIR": str(folder / "state"), "TERM": "xterm"}
    for name in ("NO_COLOR", "FORCE_COLOR", "ASCEND_RUN_FILE"):
        env.pop(name, None)
    proc = subprocess.Popen([sys.executable, "-m", "ascend_run", "status", "--job", "pretrain", "--watch",
                             "--interval", "0.2"], env=env, stdout=follower, stderr=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    deadline = time.monotonic() + 60
    try:
        while seen.count(b"every 0.2 s: ascend-run status") < 2 and time.monotonic() < deadline:
            ready, _, _ = select.select([leader], [], [], 1)
            if ready:
                seen += os.read(leader, 65536)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
        os.close(leader)
    assert seen.count(b"every 0.2 s: ascend-run status") >= 2, seen[-2000:]
    assert seen.count(b"\x1b[2J") >= 2 and b"job pretrain: \x1b[1mrunning" in seen  # cleared, drawn again


def test_events_follow_as_yaml_is_one_document_per_event(folder, capsys):
    from ruamel.yaml import YAML

    from ascend_run.cli import main

    store = launched(job_file(folder / "alice", "pretrain", 10), state="succeeded")
    store.event("started", "the job runs")
    store.event("succeeded", "the job finished")
    with pytest.raises(SystemExit) as info:
        main(["events", "--job", "pretrain", "--follow", "-o", "yaml"])
    out = capsys.readouterr().out
    docs = list(YAML(typ="safe").load_all(out))
    assert info.value.code == 0 and [d["kind"] for d in docs] == ["started", "succeeded"] and out.startswith("---\n")
