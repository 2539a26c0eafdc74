"""The command line around a detached job, end to end on the simulated cluster (tests/conftest_e2e.py):
`logs --follow` from another shell shows the job's lines with [node/rank] prefixes (-w/-x and -o json too) and
ends when the job ends; `stop --dry-run` prints the real commands (the supervisor's pid, the containers' names)
and stops nothing."""

from __future__ import annotations

import json
import re
import shlex
import subprocess

import pytest

from ascend_run.launch.nodeops import remove_argv
from tests.conftest_e2e import CLI, REPO, run_cli, wait_no_leftovers
from tests.test_launch_e2e import variant

pytestmark = pytest.mark.slow


def follow(job, *args: str) -> subprocess.Popen:
    return subprocess.Popen([*CLI, "logs", "--follow", "-f", str(job), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_follow_after_detach_shows_prefixed_lines_and_ends_with_the_job(e2e_cluster):
    cluster, job = e2e_cluster
    short = variant(job, "followed", "--steps 40 --step-sleep 0.25")
    started = run_cli("launch", "-f", str(short), "--skip-preflight", "--detach")
    assert started.returncode == 0, started.stderr
    everything = follow(short)
    one_node = follow(short, "-w", "sim-node-1", "-o", "json")
    others = follow(short, "-x", "sim-node-1", "--tail", "0")
    try:
        out, err = everything.communicate(timeout=240)
        json_out, _ = one_node.communicate(timeout=60)
        others_out, _ = others.communicate(timeout=60)
    finally:
        for proc in (everything, one_node, others):
            proc.kill()
    assert everything.returncode == 0, err[-2000:]
    prefixes = set(re.findall(r"^\[(sim-node-\d)/(\d)\]", out, re.M))
    assert prefixes == {("sim-node-0", "0"), ("sim-node-1", "1"), ("sim-node-2", "2")}, out[-2000:]
    assert re.search(r"^\[sim-node-\d/\d\]\s+.*step", out, re.M), out[-2000:]
    records = [json.loads(line) for line in json_out.splitlines()]
    assert records and {r["node"] for r in records} == {"sim-node-1"} and {r["rank"] for r in records} == {1}
    assert one_node.returncode == 0 and others.returncode == 0
    assert "[sim-node-1/" not in others_out and "[sim-node-0/0]" in others_out
    assert wait_no_leftovers(cluster, "followed", timeout=30) < 30


def test_stop_dry_run_names_the_supervisor_and_the_containers_then_stop_stops(e2e_cluster):
    cluster, job = e2e_cluster
    long = variant(job, "dryrunstop", "--steps 2000 --step-sleep 0.05")
    started = run_cli("launch", "-f", str(long), "--skip-preflight", "--detach")
    assert started.returncode == 0, started.stderr
    try:
        status = json.loads(run_cli("status", "-f", str(long), "-o", "json").stdout)
        pid = status["supervisor"]["supervisor_pid"]
        plan = run_cli("stop", "-f", str(long), "--dry-run")
        assert plan.returncode == 0, plan.stderr
        assert f"kill -TERM {pid}" in plan.stdout
        assert plan.stdout.count(shlex.join(remove_argv(["dryrunstop"]))) == 3, plan.stdout  # 3 nodes in use
        refused = run_cli("stop", "-f", str(long), "-w", "sim-node-1")
        assert refused.returncode == 2 and "is supervised" in refused.stderr
        after = json.loads(run_cli("status", "-f", str(long), "-o", "json").stdout)
        assert [row["state"] for row in after["nodes"]] == ["running"] * 3  # the dry run stopped nothing
        one = json.loads(run_cli("status", "-f", str(long), "-o", "json", "-x", "sim-node-0").stdout)
        assert [row["node"] for row in one["nodes"]] == ["sim-node-1", "sim-node-2"]
    finally:
        stopped = run_cli("stop", "-f", str(long), "-o", "json")
    assert stopped.returncode == 0, stopped.stderr
    assert json.loads(stopped.stdout)["ok"] is True
    assert wait_no_leftovers(cluster, "dryrunstop", timeout=10) < 10
