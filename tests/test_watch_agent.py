"""The job watcher (launch/watch_agent.py) run for real by this machine's python3, under JobWatch over the local
transport: only `docker` is a stand-in (a script on PATH answering `docker logs --follow` and `docker wait` from
files the test writes). The same program runs over SSH on the simulated servers in the end-to-end tests."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.launch.watch import JobWatch
from ascend_run.transport.cluster import Cluster
from ascend_run.transport.local import LocalTransport

FAKE_DOCKER = """#!{python}
import os, sys, time
state = {state!r}
if sys.argv[1] == "logs":
    sent = 0
    while True:
        done = os.path.exists(state + "/rc")
        with open(state + "/out") as fh:
            lines = fh.read().splitlines(True)
        for line in lines[sent:]:
            sys.stdout.write(line)
        sys.stdout.flush()
        sent = len(lines)
        if done:
            sys.exit(0)
        time.sleep(0.05)
if sys.argv[1] == "wait":
    while not os.path.exists(state + "/rc"):
        time.sleep(0.05)
    print(open(state + "/rc").read().strip())
"""

STEP = ("2026-12-07 10:00:0{s},000 - mindformers[mindformers/core/callback/callback.py:352] - INFO - "
        "{{ Epoch:[  1/  1], step:[{s:5d}/  100], loss: 9.{s}00000, per_step_time: 500ms, lr: 1e-05 }}\n")
CHATTER = "[INFO] ME(1:1,MainProcess):2026-12-07-10:00:00.000 [mindspore/train/model.py:1] dataset batch sent\n"


def until(condition, timeout: float = 15.0):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_watcher_sends_steps_output_heartbeats_and_the_exit(tmp_path, monkeypatch):
    state, bin_dir, logs = tmp_path / "docker", tmp_path / "bin", tmp_path / "logs"
    for d in (state, bin_dir, logs):
        d.mkdir()
    (state / "out").write_text("Start worker process with rank id:0\n")
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state)))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    (logs / "worker_0.log").write_text("x" * 70000 + "\n" + CHATTER + STEP.format(s=1) + CHATTER)  # > 64 KiB
    dep = deployment_from_data({"name": "w", "profile": "atlas-800t-a2", "image": "img:1",
                                "nodes": [{"address": "10.9.0.1", "name": "n0"}]}, tmp_path / "w.yaml")
    cluster = Cluster(dep, {"n0": LocalTransport("n0")})
    lines: list[str] = []
    watch = JobWatch(cluster, "w", on_line=lambda node, line: lines.append(line), ranks={"n0": [0, 1]},
                     log_dir=str(logs), probe_s=0.2).start()
    events = []

    def drain():
        while (event := watch.get(0)) is not None:
            events.append(event)
        return events

    try:
        until(lambda: any(e.kind == "step" and e.rank == 0 for e in drain()))
        first = next(e for e in events if e.kind == "step" and e.rank == 0)
        assert first.point.step == 1 and first.point.loss == 9.1
        assert first.at <= time.time()  # dated when the server read it, not later
        with (logs / "worker_1.log").open("w") as fh:  # a log that appears later: read from its start
            fh.write(STEP.format(s=2) + CHATTER)
        until(lambda: any(e.kind == "step" and e.rank == 1 and e.point.step == 2 for e in drain()))
        with (state / "out").open("a") as fh:
            fh.write("Worker process 12 exit with exception. Error code: 3\n")
        until(lambda: any(e.kind == "worker-failed" for e in drain()))
        assert lines[0] == "Start worker process with rank id:0" and CHATTER.strip() not in lines
        (state / "rc").write_text("1\n")
        until(lambda: any(e.kind == "exit" for e in drain()))
    finally:
        watch.close()
    kinds = [e.kind for e in events]
    assert "lost" not in kinds  # heartbeats every 0.2 s: never silent
    assert next(e for e in events if e.kind == "worker-failed").rc == 3
    assert next(e for e in events if e.kind == "exit").rc == 1


def test_a_watcher_that_cannot_run_is_an_exit_with_the_reason(tmp_path, monkeypatch):
    fake = tmp_path / "python3"  # what a server without a usable python3 answers
    fake.write_text("#!/bin/sh\necho 'sh: 1: python3: not found'\nexit 127\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:/usr/bin:/bin")
    dep = deployment_from_data({"name": "w", "profile": "atlas-800t-a2", "image": "img:1",
                                "nodes": [{"address": "10.9.0.1", "name": "n0"}]}, tmp_path / "w.yaml")
    watch = JobWatch(Cluster(dep, {"n0": LocalTransport("n0")}), "w").start()
    try:
        event = watch.get(15)
    finally:
        watch.close()
    assert event is not None and event.kind == "exit" and event.rc is None
    assert event.detail == ("cannot watch the job there: the watcher (python3 on the server) ended with code 127: "
                            "sh: 1: python3: not found")


def test_quiet_leaves_mindspores_log_lines_and_repeated_steps_on_the_server(tmp_path, monkeypatch):
    """msrun --join tails every rank's log into the container's output: quiet forwards one line per step."""
    state, bin_dir = tmp_path / "docker", tmp_path / "bin"
    for d in (state, bin_dir):
        d.mkdir()
    (state / "out").write_text("Start worker process with rank id:0\n" + CHATTER + STEP.format(s=1) + CHATTER
                               + STEP.format(s=1) + STEP.format(s=2) + STEP.format(s=1)  # a rank behind
                               + "Traceback (most recent call last):\n")
    (state / "rc").write_text("0\n")
    docker = bin_dir / "docker"
    docker.write_text(FAKE_DOCKER.format(python=sys.executable, state=str(state)))
    docker.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{Path(sys.executable).parent}:/usr/bin:/bin")
    dep = deployment_from_data({"name": "w", "profile": "atlas-800t-a2", "image": "img:1",
                                "nodes": [{"address": "10.9.0.1", "name": "n0"}]}, tmp_path / "w.yaml")
    lines: list[str] = []
    watch = JobWatch(Cluster(dep, {"n0": LocalTransport("n0")}), "w", on_line=lambda node, line: lines.append(line),
                     quiet=True).start()
    try:
        event = watch.get(15)
        until(lambda: len(lines) >= 4)  # the watcher gives the output 1 s to drain before the exit: on a busy
        time.sleep(0.2)                 # machine the exit can come first
    finally:
        watch.close()
    assert event is not None and event.kind == "exit" and event.rc == 0
    assert [line[-60:] for line in lines] == [
        "Start worker process with rank id:0",
        STEP.format(s=1).strip()[-60:], STEP.format(s=2).strip()[-60:], "Traceback (most recent call last):"]
