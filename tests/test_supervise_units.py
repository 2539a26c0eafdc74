"""The supervisor's pure parts: decisions, resume inputs, the deployment file's new keys, the state directory."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.launch.losslog import loss_report
from ascend_run.launch.plan import launch_plan
from ascend_run.mfconfig.yamledit import Document
from ascend_run.supervise import decide
from ascend_run.supervise.checkpoints import Choice
from ascend_run.supervise.client import Follower
from ascend_run.supervise.decide import RankProgress
from ascend_run.supervise.resume import (
    attempt_overrides,
    checkpoint_dir,
    pipeline_stages,
    resume_config,
    saves_checkpoints,
)
from ascend_run.supervise.state import JobState, StateStore, SupervisorBusy, is_supervisor, job_dir, read_records


def deployment(**extra):
    data = {"name": "ds3", "profile": "atlas-800t-a2", "image": "img:1",
            "nodes": [{"address": "10.0.0.[1-2]", "name": "n[0-1]"}],
            "job": {"command": "python run_mindformer.py --config configs/pretrain.yaml"}}
    for key, value in extra.items():
        data[key] = {**data.get(key, {}), **value} if isinstance(value, dict) else value
    return deployment_from_data(data, Path("/tmp/ds3.yaml"))


# --- hangs, unreachable servers -----------------------------------------------------------------------------

def test_no_hang_while_steps_come_or_before_start_timeout():
    progress = {0: RankProgress(5, 100.0), 1: RankProgress(5, 101.0)}
    assert decide.find_hang(progress, [0, 1], 0.0, 160.0, 60, 1800) is None
    assert decide.find_hang({}, [0, 1], 0.0, 1799.0, 60, 1800) is None


def test_a_hang_names_the_ranks_behind_or_all_when_level():
    behind = {0: RankProgress(7, 100.0), 1: RankProgress(6, 95.0), 2: RankProgress(7, 100.0)}
    hang = decide.find_hang(behind, [0, 1, 2, 3], 0.0, 161.0, 60, 1800)
    assert (hang.ranks, hang.step, round(hang.silent_s)) == ((1, 3), 7, 61)
    assert hang.describe() == "no new step line for 61 s (hang_timeout); rank(s) 1, 3 stopped (last step 7)"
    level = {r: RankProgress(7, 100.0) for r in range(4)}
    assert decide.find_hang(level, range(4), 0.0, 161.0, 60, 1800).ranks == (0, 1, 2, 3)


def test_no_first_step_within_start_timeout():
    hang = decide.find_hang({}, [0, 1], 10.0, 1811.0, 60, 1800)
    assert hang.before_first_step and hang.describe().startswith("no step line from any rank within start_timeout")


def test_stopped_ranks_from_process_states():
    assert decide.stopped_ranks([(0, "S"), (1, "T"), (2, "R"), (3, "D"), (1, "S")]) == (1, 3)


def test_unreachable_only_after_the_timeout():
    assert decide.unreachable_too_long({"n1": 100.0}, 150.0, 60) is None
    assert decide.unreachable_too_long({"n1": 100.0, "n2": 80.0}, 150.0, 60) == ("n2", 70.0)


# --- after a failure --------------------------------------------------------------------------------------

def test_restarts_left_counts_attempts():
    assert decide.restarts_left(1, 2) and decide.restarts_left(2, 2) and not decide.restarts_left(3, 2)
    assert not decide.restarts_left(1, 0)


def test_healthy_servers_relaunch_as_they_were():
    plan = decide.plan_restart(["a", "b"], ["s"], {}, None, True)
    assert plan == decide.Relaunch(("a", "b"), (), ("s",))


def test_a_spare_takes_the_unhealthy_servers_place():
    plan = decide.plan_restart(["a", "b", "c"], ["s1", "s2"], {"b": "ssh: refused", "s1": "npu-health: NPU 2"}, True,
                               True)
    assert plan.nodes == ("a", "s2", "c") and plan.swaps == (decide.Swap("b", "s2", "ssh: refused"),)
    assert plan.spares_left == ("s1",)


def test_not_enough_spares_gives_up_naming_the_servers():
    plan = decide.plan_restart(["a", "b", "c"], ["s1"], {"a": "ssh: refused", "c": "disk: full"}, True, True)
    assert isinstance(plan, decide.GiveUp) and plan.node == "a"
    assert plan.message == ("not enough healthy servers: a: ssh: refused; c: disk: full; "
                            "1 healthy spare(s) for 2 server(s)")


def test_no_spare_without_shared_checkpoints_unless_there_is_nothing_to_resume():
    refused = decide.plan_restart(["a", "b"], ["s"], {"b": "ssh: refused"}, False, True)
    assert isinstance(refused, decide.GiveUp) and "not using spare s: the checkpoints are not on storage" in refused.message
    fresh = decide.plan_restart(["a", "b"], ["s"], {"b": "ssh: refused"}, False, False)
    assert fresh.nodes == ("a", "s")


def test_exhausted_messages_name_the_node_and_the_reason():
    failure = decide.Failure("n2", "exit", "exited with code 1", 0.0, rc=1)
    assert decide.exhausted(failure, 1, 0).message == ("the job failed on n2: exited with code 1; stopped on every "
                                                       "node (job.restarts is 0)")
    assert "all 2 restart(s) used up (attempt 3 of 3)" in decide.exhausted(failure, 3, 2).message


def test_progress_per_pipeline_stage():
    progress = {0: RankProgress(9, 1.0, None, 50.0), 1: RankProgress(10, 2.0, None, 52.0),
                2: RankProgress(10, 2.0, 2.5, 51.0), 3: RankProgress(10, 3.0, 2.4, 49.0)}
    summary = decide.summarize_progress(progress, world=4, stages=2)
    assert [(s.stage, s.ranks, s.step, s.loss) for s in summary.stages] == [(0, "0-1", 9, None), (1, "2-3", 10, 2.4)]
    assert summary.step_ms == 50.5 and summary.last_progress_at == 3.0


# --- resume inputs -------------------------------------------------------------------------------------------

CONFIG = """\
# the article's config
output_dir: './output'  # where checkpoints go
load_checkpoint: ''
parallel_config: &pc
  pipeline_stage: 2
callbacks:
  - type: MFLossMonitor
  - type: CheckpointMonitor
    prefix: ds3
    save_checkpoint_steps: 500
other: *pc
"""


def test_the_resume_copy_sets_two_keys_and_keeps_the_rest():
    text = resume_config(CONFIG, "configs/pretrain.yaml", "/out/checkpoint", "ds3_rank_0-1_500.ckpt")
    doc = Document(text)
    assert doc.get(("load_checkpoint",)) == "/out/checkpoint"
    assert doc.get(("resume_training",)) == "ds3_rank_0-1_500.ckpt"
    assert "load_checkpoint: '/out/checkpoint'" in text, "the value keeps the style of the one it replaces"
    assert "parallel_config: &pc" in text and "other: *pc" in text and "# where checkpoints go" in text
    assert text.startswith("# Written by ascend-run's supervisor from configs/pretrain.yaml")
    assert saves_checkpoints(CONFIG) and not saves_checkpoints("output_dir: x\n")
    assert pipeline_stages(CONFIG) == 2 and pipeline_stages(None) == 1


def test_checkpoints_are_where_output_dir_is_mounted():
    dep = deployment(mounts=["/srv/ds3:/home/work/mindformers/output"])
    ckpt = checkpoint_dir(dep, CONFIG)
    assert (ckpt.container, ckpt.host) == ("/home/work/mindformers/output/checkpoint", "/srv/ds3/checkpoint")
    inside = checkpoint_dir(deployment(), CONFIG)
    assert inside.host is None, "an unmounted output_dir is inside the container"
    assert checkpoint_dir(deployment(), None) is None
    explicit = checkpoint_dir(deployment(mounts=["/nfs:/data"], job={"output_dir": "/data/run1"}), None)
    assert (explicit.host, explicit.source) == ("/nfs/run1/checkpoint", "job.output_dir")


def test_a_relaunch_gets_the_resume_variables_and_the_config_copy():
    dep = deployment(mounts=["/srv/ds3:/home/work/mindformers/output"], job={"config": "configs/pretrain.yaml"})
    ckpt = checkpoint_dir(dep, CONFIG)
    overrides = attempt_overrides(dep, 2, ckpt, Choice(1, 500, {0: "ds3_rank_0-1_500.ckpt"}), True, "/x/hccl.json")
    assert overrides.env == {"ASCEND_RUN_ATTEMPT": "2", "ASCEND_RUN_RESUME_DIR": "/home/work/mindformers/output/checkpoint",
                             "ASCEND_RUN_RESUME_NAME": "ds3_rank_0-1_500.ckpt", "ASCEND_RUN_RESUME_STEP": "500"}
    (mount,) = overrides.mounts
    assert (mount.source, mount.target, mount.read_only) == (
        "/var/lib/ascend-run/ds3/resume/pretrain.yaml", "/home/work/mindformers/configs/pretrain.yaml", True)
    argv = launch_plan(dep, overrides)[0].docker_argv
    assert ("--mount=type=bind,source=/var/lib/ascend-run/ds3/resume/pretrain.yaml,"
            "target=/home/work/mindformers/configs/pretrain.yaml,readonly") in argv
    assert "ASCEND_RUN_RESUME_STEP=500" in argv
    assert launch_plan(dep)[0].docker_argv == launch_plan(dep, None)[0].docker_argv


# --- the deployment file ---------------------------------------------------------------------------------------

def test_spares_and_restart_settings_load():
    dep = deployment(spares=[{"address": "10.0.1.[1-2]", "name": "sp[0-1]"}],
                     job={"restarts": 2, "hang_timeout": 30, "start_timeout": 90, "unreachable_timeout": 20})
    assert [(s.name, s.rank) for s in dep.spares] == [("sp0", -1), ("sp1", -1)]
    job = dep.job
    assert (job.restarts, job.hang_timeout, job.start_timeout, job.unreachable_timeout, job.restart_gap) == (
        2, 30, 90, 20, 10)
    defaults = deployment().job
    assert (defaults.restarts, defaults.hang_timeout, defaults.start_timeout) == (0, 600, 1800)


def test_a_spare_that_is_also_a_node_is_refused():
    with pytest.raises(ConfigError, match="spares\\[0\\].address: duplicate address 10.0.0.2:22 \\(also nodes\\[0\\]\\)"):
        deployment(spares=[{"address": "10.0.0.2", "name": "sp0"}])
    with pytest.raises(ConfigError, match="spares\\[0\\].name: duplicate node name 'n1'"):
        deployment(spares=[{"address": "10.0.0.9", "name": "n1"}])


def test_a_spare_needs_as_many_npus_as_a_node_runs_workers():
    with pytest.raises(ConfigError, match="spares\\[0\\].npus: spare sp0 has 4 NPUs but every node runs 8 workers"):
        deployment(spares=[{"address": "10.0.1.1", "name": "sp0", "npus": [0, 1, 2, 3]}])
    ok = deployment(spares=[{"address": "10.0.1.1", "name": "sp0", "npus": [0, 1, 2, 3]}], job={"local_workers": 4})
    assert len(ok.spares[0].npus) == 4


def test_restart_settings_are_validated():
    with pytest.raises((ConfigError, ConfigErrors), match="job.restarts"):
        deployment(job={"restarts": -1})
    with pytest.raises((ConfigError, ConfigErrors), match="job.hang_timeout"):
        deployment(job={"hang_timeout": 0})
    with pytest.raises(ConfigError, match="job.output_dir"):
        deployment(job={"output_dir": "output"})


# --- the state directory ------------------------------------------------------------------------------------

def test_one_directory_per_job_and_file(monkeypatch, tmp_path):
    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path))
    assert job_dir("/a/job.yaml", "ds3").parent == tmp_path
    assert job_dir("/a/job.yaml", "ds3") != job_dir("/b/job.yaml", "ds3")
    monkeypatch.delenv("ASCEND_RUN_STATE_DIR")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert job_dir("/a/job.yaml", "ds3").parent == tmp_path / "xdg" / "ascend-run"


def test_the_lock_keeps_a_second_owner_out_even_in_another_process(tmp_path, monkeypatch):
    """A lock held by this user's `supervise` for the job is believed (alive, its pid to signal); one held by
    any other process keeps a second owner out but is not believed, and its pid is never handed out."""
    monkeypatch.setenv("ASCEND_RUN_STATE_DIR", str(tmp_path / "state"))
    deploy = tmp_path / "job.yaml"
    deploy.write_text("x")
    directory = job_dir(deploy, "ds3")
    store = StateStore(directory)
    store.write(JobState(job="ds3", deployment="x", pid=os.getpid()))
    assert not store.owner_alive()
    probe = (f"from ascend_run.supervise.state import StateStore; s = StateStore({str(directory)!r}); "
             "print(s.owner_alive(), s.owner_pid()); s.owned().__enter__()")
    with store.owned():  # held by this process (pytest): not a supervisor, seen from another process
        assert store.owner_alive() and store.owner_pid() == os.getpid()
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert other.stdout.split() == ["False", "None"], other
        assert "SupervisorBusy" in other.stderr and "not your supervisor" in other.stderr
        with pytest.raises(SupervisorBusy):
            with StateStore(directory).owned():
                pass
    assert not store.owner_alive()
    holder = subprocess.Popen(  # what `ascend-run supervise -f job.yaml` looks like in /proc
        [sys.executable, "-c", f"import sys, time; from ascend_run.supervise.state import StateStore; "
         f"s = StateStore({str(directory)!r}); held = s.owned(); held.__enter__(); print('held', flush=True); "
         "time.sleep(60)",
         "supervise", "-f", str(deploy)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        assert store.owner_alive() and store.owner_pid() == holder.pid
        other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
        assert other.stdout.split() == ["True", str(holder.pid)] and "already supervised" in other.stderr
        assert not is_supervisor(holder.pid, job_dir(tmp_path / "other.yaml", "ds3"))
    finally:
        holder.kill()
        holder.wait()


def test_events_and_lines_are_read_whole_and_followed_across_a_new_run(tmp_path):
    store = StateStore(tmp_path)
    store.event("launch", "first run")
    with store.events_file.open("a") as fh:
        fh.write('{"kind": "half')  # being written
    records, offset = read_records(store.events_file, 0)
    assert [r["kind"] for r in records] == ["launch"] and offset < store.events_file.stat().st_size
    seen: list[str] = []
    follower = Follower(store, on_event=lambda r: seen.append(r["detail"]), lines=False)
    assert follower.poll() is None and seen == ["first run"]
    store.new_run()
    store.event("launch", "second run")
    store.event("succeeded", "done")
    assert follower.poll()["kind"] == "succeeded" and seen == ["first run", "second run", "done"]
    assert store.events_file.with_suffix(".jsonl.prev").exists()


def test_output_and_events_are_bounded_and_followed_across_a_rotation(tmp_path, monkeypatch):
    from ascend_run.supervise import state

    monkeypatch.setitem(state.ROTATE_BYTES, "output.jsonl", 1000)
    store = StateStore(tmp_path)
    seen: list[str] = []
    follower = Follower(store, on_line=lambda r: seen.append(r["line"]), on_event=lambda r: None)
    for i in range(60):
        store.line("n0", 0, f"line {i:02d} " + "x" * 40)
        if i % 7 == 0:
            follower.poll()
    follower.poll()
    kept = sorted(p.name for p in tmp_path.glob("output.jsonl*"))
    assert kept in (["output.jsonl", "output.jsonl.1"], ["output.jsonl.1"]), kept  # two files at most…
    assert all(p.stat().st_size < 1000 + 100 for p in tmp_path.glob("output.jsonl*"))  # … each bounded
    assert store.last_line_time() is not None
    assert [s[:7] for s in seen] == [f"line {i:02d}" for i in range(60)]  # followed across, no line lost
    store.output_file.unlink(missing_ok=True)  # just rotated: the newest line is in .1
    assert store.last_line_time() is not None


# --- logs of several attempts ----------------------------------------------------------------------------------

def test_logs_of_earlier_attempts_give_each_step_once(tmp_path):
    def steps(numbers):
        return "".join(f"{{ step:[{s:5d}/   12], loss: {10 - s * 0.5:.3f}, per_step_time: 10ms }}\n" for s in numbers)
    node = tmp_path / "n1"
    (node / "attempt-1").mkdir(parents=True)
    (node / "attempt-1" / "worker_1.log").write_text(steps(range(1, 8)) + "RuntimeError: injected crash\n")
    (node / "worker_1.log").write_text("rank 1: resumed from ... (step 5)\n" + steps(range(6, 13)))
    report = loss_report(tmp_path)
    assert [p.step for p in report.points] == list(range(1, 13))
    assert report.chosen.restarts == 1 and report.chosen.failure is None


def test_config_check_warns_when_checkpoints_stay_in_the_container():
    from ascend_run.inputs.common import Mount
    from ascend_run.mfconfig import JobContext, check_config

    train = "run_mode: train\n" + CONFIG
    inside = check_config(train, JobContext(mounts=()), memory=False)
    (issue,) = [i for i in inside.warnings if i.key == "output_dir"]
    assert "/home/work/mindformers/output (where CheckpointMonitor writes checkpoint/rank_*) is under no mount" in \
        issue.message and issue.line == 3
    mount = Mount(source="/srv/out", target="/home/work/mindformers/output")
    mounted = check_config(train, JobContext(mounts=(mount,)), memory=False)
    assert not [i for i in mounted.warnings if i.key == "output_dir"]
    no_mounts_known = check_config(train, JobContext(), memory=False)
    assert not [i for i in no_mounts_known.warnings if i.key == "output_dir"]


def test_msruns_line_for_a_failed_worker_gives_its_exit_code():
    from ascend_run.launch.watch import worker_failure

    line = ("[ERROR] ME(1:1405,MainProcess):2026-12-01-02:32:35.810.000 [mindspore/parallel/cluster/process_entity/"
            "_api.py:365] Worker process 11 exit with exception. Error code: {}.")
    assert worker_failure(line.format(1)) == 1 and worker_failure(line.format(-9)) == -9
    assert worker_failure("RuntimeError: Distributed job exited with exception. Please check logs") is None
    assert worker_failure("{ step:[    3/   40], loss:   7.283331 }") is None
