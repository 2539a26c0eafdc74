"""`ascend-run jobs` and `--job NAME`: the jobs of this machine's state folder, from any folder and any user.

The supervisor's part is played by what it leaves in the folder: state.json written as it writes it, the launch's
copy of the deployment (client.spawn → joblist.save_snapshot), and its lock held by a live process (the kernel's
flock, as a supervisor holds it). tests/test_supervisor_e2e.py runs real supervisors on `sim`.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from ascend_run.cli import main
from ascend_run.inputs.deployment import load_deployment
from ascend_run.supervise.joblist import save_snapshot
from ascend_run.supervise.state import JobState, StateStore

REPO = Path(__file__).resolve().parents[1]
HOLD_LOCK = ("import sys, time\nfrom ascend_run.supervise.state import StateStore\n"
             "with StateStore(sys.argv[1]).owned():\n    print('held', flush=True)\n    time.sleep(600)\n")


def job_file(folder: Path, name: str, first: int) -> Path:
    """A job on two loopback addresses where nothing listens (port 22 refused at once)."""
    folder.mkdir(parents=True, exist_ok=True)
    key = Path(os.environ["ASCEND_RUN_STATE_DIR"]).parent / f"key-{name}-{first}"  # outside the folder that moves
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    path = folder / "job.yaml"
    path.write_text(f"name: {name}\nprofile: atlas-800t-a2\nimage: img:1\n"
                    f"ssh: {{identity_file: {key}, known_hosts: {key}.hosts, connect_timeout: 2}}\n"
                    f"nodes:\n  - address: 127.0.0.[{first}-{first + 1}]\n    name: {name}-n[0-1]\n"
                    f"job: {{command: python train.py}}\n")
    return path


def launched(path: Path, state: str = "running", step: int | None = None, age_s: float = 120) -> StateStore:
    """What a launch and its supervisor leave in the folder."""
    dep = load_deployment(path)
    store = StateStore.for_deployment(dep)
    save_snapshot(store, dep)
    progress = {"stages": [{"stage": 0, "ranks": "0-15", "step": step}]} if step is not None else {}
    store.write(JobState(job=dep.name, deployment=str(path.resolve()), state=state, pid=4242, attempt=1, attempts=3,
                         nodes=[{"name": n.name, "address": n.address, "rank": n.rank} for n in dep.nodes],
                         progress=progress, started_at=time.time() - age_s))
    return store


@pytest.fixture
def supervised():
    """Hold a job's lock from another process, as its live supervisor does: its command line names `supervise -f
    FILE`, as the kit's does (a lock held by anything else is not believed: state.is_supervisor)."""
    procs = []

    def hold(store: StateStore) -> None:
        argv = [sys.executable, "-c", HOLD_LOCK, str(store.dir), "supervise", "-f", store.read().deployment]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
        assert proc.stdout.readline().strip() == "held"
        procs.append(proc)

    yield hold
    for proc in procs:
        proc.kill()
        proc.wait()


def run(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    return info.value.code, out, err


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("ASCEND_RUN_FILE", raising=False)
    return tmp_path


def test_jobs_lists_two_jobs_launched_from_different_folders(folder, capsys, supervised, monkeypatch):
    a = launched(job_file(folder / "alice" / "pretrain", "pretrain", 10), step=1200, age_s=7200)
    launched(job_file(folder / "bob" / "serve", "serve", 20), state="failed", age_s=30)
    supervised(a)
    monkeypatch.chdir(folder)  # a third folder: nothing here names either job
    code, out, _ = run(["jobs", "-o", "json"], capsys)
    assert code == 0
    jobs = {j["name"]: j for j in json.loads(out)["jobs"]}
    assert set(jobs) == {"pretrain", "serve"}
    assert jobs["pretrain"]["deployment"] == str(folder / "alice" / "pretrain" / "job.yaml")
    assert jobs["pretrain"]["state"] == "running" and jobs["pretrain"]["supervisor_pid"] == 4242
    assert jobs["pretrain"]["step"] == 1200 and jobs["pretrain"]["attempt"] == 1
    assert jobs["pretrain"]["servers"] == ["pretrain-n0", "pretrain-n1"] and 7100 < jobs["pretrain"]["age_s"] < 7300
    assert jobs["serve"]["state"] == "failed" and jobs["serve"]["supervisor_pid"] is None

    code, out, _ = run(["jobs"], capsys)
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "STATE", "ATTEMPT", "STEP", "SERVERS", "AGE", "DEPLOYMENT"]
    assert lines[1].split()[:4] == ["serve", "failed", "1/3", "-"] and lines[1].split()[-2:] == ["30s", str(
        folder / "bob" / "serve" / "job.yaml")]
    assert lines[2].split()[:4] == ["pretrain", "running", "1/3", "1200"] and "2h" in lines[2].split()
    code, out, _ = run(["jobs", "-o", "wide"], capsys)
    assert "KEY" in out and str(a.dir) in out
    code, out, _ = run(["jobs", "-o", "yaml"], capsys)
    assert code == 0 and "- name: serve" in out


def test_a_dead_supervisor_shows(folder, capsys):
    launched(job_file(folder / "a", "pretrain", 10), state="running")  # nobody holds the lock
    code, out, _ = run(["jobs", "-o", "json"], capsys)
    assert json.loads(out)["jobs"][0]["state"] == "running (supervisor not running)"


def test_job_names_a_job_from_anywhere_and_after_its_file_moved(folder, capsys, monkeypatch):
    path = job_file(folder / "alice" / "pretrain", "pretrain", 10)
    store = launched(path, state="succeeded")
    store.event("succeeded", "the job finished")
    monkeypatch.chdir(folder)
    code, out, _ = run(["events", "--job", "pretrain", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)[-1]["detail"] == "the job finished"
    shutil.move(folder / "alice", folder / "alice-old")  # the file is gone from where it was launched
    code, out, _ = run(["events", "--job", "pretrain", "-o", "json"], capsys)
    assert code == 0 and json.loads(out)[-1]["detail"] == "the job finished"
    code, out, _ = run(["jobs", "-o", "json"], capsys)
    assert json.loads(out)["jobs"][0]["file_exists"] is False
    code, out, err = run(["status", "--job", "pretrain", "-o", "json"], capsys)
    assert code == 4 and json.loads(out)["supervisor"]["state"] == "succeeded"  # its servers are not there: 4


def test_two_files_naming_one_job_are_told_apart_by_key(folder, capsys):
    first = launched(job_file(folder / "a", "pretrain", 10))
    launched(job_file(folder / "b", "pretrain", 20))
    code, out, err = run(["events", "--job", "pretrain", "-o", "json"], capsys)
    assert code == 2 and "2 jobs are called 'pretrain'" in err and first.dir.name in err
    code, out, err = run(["events", "--job", first.dir.name, "-o", "json"], capsys)
    assert code == 0, err
    code, out, err = run(["events", "--job", "nope"], capsys)
    assert code == 2 and "no job called 'nope'" in err and "pretrain" in err
    code, out, err = run(["events", "--job", first.dir.name, "-f", str(folder / "a" / "job.yaml")], capsys)
    assert code == 2 and "not both" in err


def _can_run_as_nobody() -> bool:
    try:
        return subprocess.run([sys.executable, "-c", "import ascend_run"], user=65534, group=65534, cwd="/",
                              env={"PYTHONPATH": str(REPO)}, capture_output=True, timeout=60).returncode == 0
    except (PermissionError, OSError):
        return False


@pytest.mark.skipif(os.geteuid() != 0 or not _can_run_as_nobody(),
                    reason="needs root, and a Python (and checkout) that another user may run")
def test_a_teammate_on_the_same_login_node_sees_the_jobs(folder, supervised):
    """Another user (uid 65534) with the same ASCEND_RUN_STATE_DIR: the folder as docs/supervisor.md says to
    share it (a group folder, setgid, umask 002: the team's group may read)."""
    shared = folder / "state"
    shared.mkdir(mode=0o2775)
    os.chmod(shared, 0o2775)
    os.chmod(folder, 0o755)
    store = launched(job_file(folder / "alice", "pretrain", 10), step=7)
    supervised(store)
    for path in [store.dir, *store.dir.iterdir()]:
        os.chmod(path, 0o755 if path.is_dir() else 0o644)
    env = {"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO), "ASCEND_RUN_STATE_DIR": str(shared),
           "HOME": "/nonexistent"}
    result = subprocess.run([sys.executable, "-m", "ascend_run", "jobs", "-o", "json"], env=env, capture_output=True,
                            text=True, cwd="/", user=65534, group=65534, timeout=60)
    assert result.returncode == 0, result.stderr
    (job,) = json.loads(result.stdout)["jobs"]
    assert job["name"] == "pretrain" and job["state"] == "running" and job["step"] == 7 and job["supervisor_pid"]
