"""The supervisor end to end: a real msrun job (examples/cpu-job/train_dp.py, 40 steps, a checkpoint every 5)
on the simulated cluster of 3 servers and 1 spare (sim-node-3), checkpoints on storage every simulated server
shares (the host's /srv).

What issue 12 asks to see: a detached fail-fast with the CLI gone; a resume at step 11 after a crash past the
step-10 checkpoint; a lost server replaced by the spare; a hang; the supervisor SIGKILLed and taken over, a
later crash still handled; restarts used up. (`stop` from another shell: tests/test_launch_e2e.py.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest_e2e import CLI, REPO, job_leftovers, run_cli, wait_no_leftovers
from tests.test_launch_e2e import process_alive, restart_sshd, variant

pytestmark = pytest.mark.slow

TRAIN = "python /opt/ascend-run/cpu-job/train_dp.py"


# Short timeouts: a job that never starts, or hangs where no test expects it, fails its test in minutes with
# the supervisor's events in the message, not after the defaults' half hour.
TEST_TIMEOUTS = {"start_timeout": 180, "hang_timeout": 60}


def supervised(cluster, base: Path, name: str, args: str, **job) -> tuple[Path, Path]:
    """A job file saving checkpoints to shared storage (/srv, which every simulated server sees as its own).
    Returns (job file, the output directory)."""
    out = Path(f"/srv/ascend-run-test-{cluster.net.third_octet}/{name}")
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    out.chmod(0o777)  # the image's user (uid 1000) writes the checkpoints
    command = f"{TRAIN} --output-dir {out} --save-steps 5 {args}"
    path = variant(base, name, mounts=[f"{out}:{out}"],
                   job={"command": command, "output_dir": str(out), "restart_gap": 0, **TEST_TIMEOUTS, **job})
    return path, out


def state_dir(job: Path) -> Path:
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.supervise.state import StateStore

    return StateStore.for_deployment(load_deployment(job)).dir


def events(job: Path) -> list[dict]:
    """The supervisor's events, read from its state directory (cheap enough to poll)."""
    path = state_dir(job) / "events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.exists() else []


def events_cli(job: Path) -> list[dict]:
    """The same through `ascend-run events --output json`, as a user reads them."""
    result = run_cli("events", "-f", str(job), "--output", "json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def output_lines(job: Path) -> list[dict]:
    path = state_dir(job) / "output.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")] if path.exists() else []


def wait_for(what, condition, timeout: float = 180, every: float = 0.2, job: Path | None = None):
    """`condition()` once it is true; after `timeout`, the test fails with what the supervisor saw (`job`)."""
    deadline = time.monotonic() + timeout
    while True:
        found = condition()
        if found:
            return found
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g} s waiting for {what}" + (diagnosis(job) if job else ""))
        time.sleep(every)


def diagnosis(job: Path) -> str:
    """The supervisor's events, the job's last output lines and the supervisor's log: why a wait failed."""
    found = "\n".join(f"  {e['time'][11:]} {e['kind']}: {e['detail'][:300]}" for e in events(job))
    lines = "\n".join(f"  [{r['node']}/{r['rank']}] {r['line'][:200]}" for r in output_lines(job)[-15:])
    log = state_dir(job) / "supervisor.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
    return f"\nevents:\n{found}\nlast output lines:\n{lines}\nsupervisor.log ends:\n{tail}"


def lifecycle(found: list[dict]) -> list[str]:
    """The kinds of the events that make a run's story (notices and warnings, e.g. job.sync's, left out)."""
    return [e["kind"] for e in found if e["kind"] not in ("notice", "warning", "config", "unreachable",
                                                             "reconnected")]


def step_reached(job: Path, step: int):
    def check():
        for record in output_lines(job):
            match = re.search(r"step:\[\s*(\d+)/", record["line"])
            if match and int(match.group(1)) >= step:
                return record
        return None
    return check


def event_of(job: Path, kind: str):
    return lambda: next((e for e in events(job) if e["kind"] == kind), None)


def supervisor_pid(job: Path) -> int:
    return json.loads((state_dir(job) / "state.json").read_text())["pid"]


def cleanup(cluster, name: str) -> None:
    run_cli("stop", "-f", str(cluster.dir / f"{name}.yaml"))
    shutil.rmtree(f"/srv/ascend-run-test-{cluster.net.third_octet}/{name}", ignore_errors=True)


# --- the tests ------------------------------------------------------------------------------------------------

def test_resume_after_a_crash_continues_at_the_step_after_the_checkpoint(supervisor_cluster, tmp_path):
    cluster, base = supervisor_cluster
    job, out = supervised(cluster, base, "sv-resume", "--steps 40 --step-sleep 0.1 --crash-rank 1 --crash-at-step 12",
                          restarts=2)
    try:
        result = run_cli("launch", "-f", str(job), "--skip-preflight", timeout=400)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert re.search(r"\[sim-node-1/1\] rank 1: resumed from \S+/rank_1/standin_rank_1-1_10\.ckpt \(step 10\), "
                         r"continuing at step 11", result.stdout), result.stdout[-3000:]
        done = re.findall(r"rank (\d): done, world size 3, weights sha256 (\w+)", result.stdout)
        assert sorted(int(r) for r, _ in done) == [0, 1, 2] and len({d for _, d in done}) == 1
        found = events_cli(job)
        kinds = lifecycle(found)
        at = kinds.index("failure")
        assert kinds[at:at + 4] == ["failure", "stop", "preflight", "resume"], kinds
        resume = next(e for e in found if e["kind"] == "resume")
        assert resume["step"] == 10 and resume["detail"].startswith("from step 10 (standin_rank_0-1_10.ckpt)")
        assert kinds[-2:] == ["first-step", "succeeded"] and kinds.count("started") == 2
        logs = tmp_path / "logs"
        assert run_cli("logs", "-f", str(job), "--collect", "--out", str(logs)).returncode == 0
        loss = run_cli("logs", "--loss", "--from", str(logs), "--output", "json")
        assert loss.returncode == 0, loss.stderr
        steps = [p["step"] for p in json.loads(loss.stdout)["points"]]
        assert steps == list(range(1, 41)), "each step once: 1-10 from attempt 1, 11-40 from the resumed attempt 2"
        status = json.loads(run_cli("status", "-f", str(job), "--output", "json").stdout)["supervisor"]
        assert (status["state"], status["attempt"], status["attempts"]) == ("succeeded", 2, 3)
        assert status["last_checkpoint_step"] == 40 and status["stages"][0]["step"] == 40
        print_breakdown(result.stdout, found)
    finally:
        cleanup(cluster, "sv-resume")


def print_breakdown(stdout: str, found: list[dict]) -> None:
    """Where the recovery's time went (benchmarks/bench_recovery.py measures the same into docs/benchmarks.md)."""
    crashed = float(re.search(r"crashing at step \d+, t=([0-9.]+)", stdout).group(1))
    t = {}
    for e in found:
        t.setdefault(e["kind"], []).append(e["t"])
    detect, stopped, checked = t["failure"][0] - crashed, t["stop"][0], t["preflight"][-1]
    started, first = t["started"][1], t["first-step"][1]
    print(f"recovery: detection {detect:.2f} s, stop {stopped - t['failure'][0]:.2f} s, preflight "
          f"{checked - stopped:.2f} s, checkpoint choice + relaunch {started - checked:.2f} s "
          f"(kit's share {started - crashed:.2f} s); job start-up until the first new step {first - started:.2f} s")


def test_a_lost_server_is_replaced_by_the_spare(supervisor_cluster):
    cluster, base = supervisor_cluster
    table = Path(f"/srv/ascend-run-test-{cluster.net.third_octet}/sv-spare-hccl.json")
    job, out = supervised(cluster, base, "sv-spare", "--steps 40 --step-sleep 0.15", restarts=1,
                          unreachable_timeout=3, rank_table=str(table))
    made = run_cli("ranktable", "-f", str(job), "--out", str(table))
    assert made.returncode == 0, made.stderr
    proc = subprocess.Popen([*CLI, "launch", "-f", str(job), "--skip-preflight"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_for("step 7 (past the step-5 checkpoint)", step_reached(job, 7), timeout=180, job=job)
        lost = cluster.node(1)
        cluster.kill_sshd(1)  # the server drops off: its sshd and its job container die
        subprocess.run(["docker", "-H", cluster.docker_host(1), "rm", "-f", "sv-spare"], capture_output=True)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        found = events(job)
        failure = next(e for e in found if e["kind"] == "failure")
        assert (failure["node"], failure["cause"]) == ("sim-node-1", "unreachable"), failure  # not "exited with -1"
        assert "unreachable for" in failure["detail"]
        spare = next(e for e in found if e["kind"] == "spare")
        assert spare["detail"].startswith("sim-node-3 takes sim-node-1's place (rank 1)"), spare
        assert any(e["kind"] == "ranktable" for e in found)
        assert re.search(r"\[sim-node-3/1\] rank 1: resumed from \S+standin_rank_1-1_\d+\.ckpt", stdout), stdout[-3000:]
        spare_address = cluster.node(3).address
        assert re.search(rf"\[sim-node-3/1\] rank 1: rank table .*: 3 servers .*{re.escape(spare_address)}", stdout)
        assert lost.address not in "".join(re.findall(r"rank table .*", stdout.split("resumed from")[-1]))
        assert re.search(r"rank 1: done, world size 3", stdout)
        state = json.loads((state_dir(job) / "state.json").read_text())
        assert [(n["name"], n["rank"]) for n in state["nodes"]] == [("sim-node-0", 0), ("sim-node-3", 1),
                                                                   ("sim-node-2", 2)]
    finally:
        proc.kill()
        restart_sshd(cluster, 1)
        cleanup(cluster, "sv-spare")
        table.unlink(missing_ok=True)
    assert wait_no_leftovers(cluster, "sv-spare", timeout=30) < 30


def test_a_partitioned_server_costs_no_more_than_a_refused_one(supervisor_cluster):
    """Issue 24: the server's link goes down (nothing refuses, nothing resets). The failure comes
    unreachable_timeout after its last answer, the stop of the reachable servers does not wait on it, and the
    kit's share (the cut to the spare's attempt started) stays within 15 s at unreachable_timeout 5."""
    cluster, base = supervisor_cluster
    job, out = supervised(cluster, base, "sv-cut", "--steps 40 --step-sleep 0.3", restarts=1, unreachable_timeout=5)
    proc = subprocess.Popen([*CLI, "launch", "-f", str(job), "--skip-preflight"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO)
    try:
        wait_for("step 7 (past the step-5 checkpoint)", step_reached(job, 7), timeout=180, job=job)
        cut_at = time.time()
        cluster.partition(1)
        wait_for("attempt 2 started", lambda: next((e for e in events(job) if e["kind"] == "started"
                                                    and e.get("attempt") == 2), None), timeout=120, job=job)
        cluster.partition(1, cut=False)
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stdout[-3000:] + stderr[-3000:]
        found = events(job)
        failure = next(e for e in found if e["kind"] == "failure")
        assert (failure["node"], failure["cause"]) == ("sim-node-1", "unreachable"), failure
        stop = next(e for e in found if e["kind"] == "stop")
        started = next(e for e in found if e["kind"] == "started" and e.get("attempt") == 2)
        shares = {"detection": failure["t"] - cut_at, "stop": stop["seconds"], "kit": started["t"] - cut_at}
        print(f"\npartition: {shares}")
        assert shares["detection"] <= 5 + 1.5, shares   # the last heartbeat was at most a second before the cut
        assert shares["stop"] < 2, (shares, stop["detail"])
        assert "sim-node-1: not stopped, unreachable" in stop["detail"]
        assert shares["kit"] <= 15, shares
        assert next(e for e in found if e["kind"] == "spare")["detail"].startswith("sim-node-3 takes sim-node-1's")
        assert re.search(r"rank 1: done, world size 3", stdout)
    finally:
        cluster.partition(1, cut=False)
        proc.kill()
        cleanup(cluster, "sv-cut")
    assert wait_no_leftovers(cluster, "sv-cut", timeout=60) < 60


def test_a_hang_is_detected_and_handled_as_a_failure(supervisor_cluster):
    cluster, base = supervisor_cluster
    hang_timeout = 6
    job, _ = supervised(cluster, base, "sv-hang", "--steps 2000 --step-sleep 0.1", hang_timeout=hang_timeout)
    try:
        started = run_cli("launch", "-f", str(job), "--skip-preflight", "--detach")
        assert started.returncode == 0, started.stderr
        wait_for("a few steps", step_reached(job, 5), timeout=180, job=job)
        worker = worker_pid(cluster, 1, rank=1)
        os.kill(worker, signal.SIGSTOP)
        stopped_at = time.time()
        hang = wait_for("the hang event", event_of(job, "hang"), timeout=hang_timeout + 30, every=0.2, job=job)
        detected = hang["t"] - stopped_at
        print(f"hang: detected {detected:.1f} s after SIGSTOP (hang_timeout {hang_timeout} s)")
        assert detected <= hang_timeout + 10
        assert hang["ranks"] == [1] and hang["node"] == "sim-node-1", hang
        wait_for("the end", event_of(job, "failed"), timeout=60, job=job)
        assert wait_no_leftovers(cluster, "sv-hang", timeout=10) < 10
    finally:
        cleanup(cluster, "sv-hang")


def worker_pid(cluster, index: int, rank: int) -> int:
    """The pid (in the host's view) of the training worker of `rank` on simulated server `index`."""
    netns = cluster.record()["nodes"][index]["netns"]
    for pid in subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout.split():
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"train_dp.py" in cmdline and f"RANK_ID={rank}".encode() in environ:
            return int(pid)
    pytest.fail(f"no worker of rank {rank} on {cluster.node(index).name}")


def test_the_supervisor_killed_then_taken_over_still_handles_a_crash(supervisor_cluster):
    cluster, base = supervisor_cluster
    job, _ = supervised(cluster, base, "sv-takeover", "--steps 60 --step-sleep 0.2 --crash-rank 2 --crash-at-step 45",
                        restarts=1)
    try:
        started = run_cli("launch", "-f", str(job), "--skip-preflight", "--detach")
        assert started.returncode == 0, started.stderr
        wait_for("step 5", step_reached(job, 5), timeout=180, job=job)
        pid = supervisor_pid(job)
        os.kill(pid, signal.SIGKILL)
        wait_for("the supervisor to die", lambda: not process_alive(pid), timeout=10, job=job)
        before = job_leftovers(cluster, "sv-takeover")
        assert sorted(before) == ["sim-node-0", "sim-node-1", "sim-node-2"], "the job runs on without it"
        status = json.loads(run_cli("status", "-f", str(job), "--output", "json").stdout)
        assert status["supervisor"]["state"] == "running (supervisor not running)"
        took = run_cli("supervise", "-f", str(job), "--detach")
        assert took.returncode == 0, took.stderr
        adopt = next(e for e in events(job) if e["kind"] == "adopt")
        assert adopt["detail"].startswith("took over the running job: attempt 1 of 2") and "nothing restarted" in \
            adopt["detail"]
        assert [e["kind"] for e in events(job)].count("started") == 1, "no restart at the takeover"
        assert job_leftovers(cluster, "sv-takeover") == before, "the same containers run on"
        wait_for("the job's end", event_of(job, "succeeded"), timeout=300, every=0.5, job=job)
        kinds = lifecycle(events(job))
        assert kinds[kinds.index("adopt"):] == ["adopt", "failure", "stop", "preflight", "resume", "started",
                                                "first-step", "succeeded"], kinds
        assert next(e for e in events(job) if e["kind"] == "resume")["step"] == 45
    finally:
        cleanup(cluster, "sv-takeover")


def test_restarts_used_up_end_with_the_node_the_reason_and_nothing_left(supervisor_cluster):
    cluster, base = supervisor_cluster
    # rank 2 exits before it joins the cluster, on every attempt: each attempt fails in seconds
    job, _ = supervised(cluster, base, "sv-exhausted",
                        "--steps 40 --crash-rank 2 --crash-before-init --crash-attempt 0", restarts=1)
    try:
        result = run_cli("launch", "-f", str(job), "--skip-preflight", timeout=300)
        # the worker's own exit code (3) from msrun's report of it, or msrun's (1) if its exit came first
        said = re.search(r"error: the job failed on sim-node-2: (a worker exited with code 3|exited with code 1); "
                         r"all 1 restart\(s\) used up \(attempt 2 of 2\); stopped on every node", result.stderr)
        assert said, result.stderr[-2000:]
        assert result.returncode == (3 if said.group(1).startswith("a worker") else 1)
        assert wait_no_leftovers(cluster, "sv-exhausted", timeout=5) < 5
        assert not process_alive(supervisor_pid(job)), "the supervisor is gone too"
    finally:
        cleanup(cluster, "sv-exhausted")


# Last in the file: under xdist the group's first tests share the disk with the image loads of the other groups'
# clusters, and this one bounds the whole crash-to-no-container time (docs/benchmarks.md, the test suite).
def test_detached_fail_fast_with_the_cli_gone(supervisor_cluster):
    cluster, base = supervisor_cluster
    job, _ = supervised(cluster, base, "sv-failfast", "--steps 400 --step-sleep 0.05 --crash-rank 1 --crash-at-step 10")
    try:
        started = run_cli("launch", "-f", str(job), "--skip-preflight", "--detach")
        assert started.returncode == 0, started.stderr  # run_cli waited for it: the CLI process is gone
        assert "detached (supervisor pid" in started.stdout
        pid = supervisor_pid(job)
        assert process_alive(pid)
        crash = wait_for("the crash", lambda: next((r for r in output_lines(job) if "crashing at step" in r["line"]),
                                                   None), timeout=180, every=0.05, job=job)
        crashed_at = float(re.search(r"t=([0-9.]+)", crash["line"]).group(1))
        while job_leftovers(cluster, "sv-failfast") and time.time() - crashed_at < 30:
            time.sleep(0.05)
        latency = time.time() - crashed_at
        wait_for("the supervisor to end", lambda: not process_alive(pid), timeout=30, job=job)
        found = events_cli(job)
        failure, stop = found[-3], found[-2]
        print(f"detached fail-fast: no job container on any server {latency:.2f} s after the crash (detection "
              f"{failure['t'] - crashed_at:.2f} s, stop {stop['seconds']:.2f} s)")
        assert latency <= 10, "every server's job is gone within 10 s of the crash, with nobody attached"
        assert not job_leftovers(cluster, "sv-failfast")
        assert [e["kind"] for e in found][-3:] == ["failure", "stop", "failed"]
        failed = found[-1]
        # msrun's report of the dead worker, or (if its exit came first) msrun's exit code
        assert re.match(r"the job failed on sim-node-1: (a worker )?exited with code 1;", failed["detail"]), failed
        status = json.loads(run_cli("status", "-f", str(job), "--output", "json").stdout)
        assert status["supervisor"]["state"] == "failed" and status["supervisor"]["supervisor_pid"] is None
    finally:
        cleanup(cluster, "sv-failfast")
