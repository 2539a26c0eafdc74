"""The supervisor's main loop over scripted fake servers (tests/fake_transport.py): no root, no sshd, no Docker.

A failure relaunches from the newest checkpoint every rank has; a lost server is replaced by a spare (or not,
when the checkpoints are not shared); restarts run out; a hang; a stop request; taking over a running job.
The same code runs against simulated servers and a real msrun job in tests/test_supervisor_e2e.py.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from ascend_run.errors import AscendRunError, TransportError
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.launch.preflight import Check
from ascend_run.supervise.state import JobState, StateStore
from ascend_run.supervise.supervisor import StartOptions, Supervisor
from ascend_run.transport.base import Result
from tests.fake_transport import FakeServer

NO_CHECKS = StartOptions(preflight=False, config_check=False)
CKPT = "/srv/job/output/checkpoint"


def listing(steps: dict[int, dict[int, int]], meta_step: int | None = None) -> str:
    """The checkpoint listing script's output: {rank: {step: size}}, meta.json at `meta_step` (else the newest)."""
    out = []
    for rank, files in steps.items():
        out.append(f"@@dir rank_{rank}")
        out += [f"{size} standin_rank_{rank}-1_{step}.ckpt" for step, size in files.items()]
        last = meta_step or max(files)
        out += [f"@@meta rank_{rank}",
                f'{{"last_epoch": 1, "last_step": {last}, "last_ckpt_file": "standin_rank_{rank}-1_{last}.ckpt"}}']
    return "\n".join(out) + "\n"


class Rig:
    """A supervised fake job: 3 nodes (n0-n2), optional spares (s0…), checkpoints in /srv/job/output."""

    def __init__(self, tmp_path: Path, spares: int = 0, **job) -> None:
        data = {"name": "fake", "profile": "atlas-800t-a2", "image": "img:1",
                "nodes": [{"address": "10.9.0.[1-3]", "name": "n[0-2]"}],
                "mounts": ["/srv/job:/job"],
                "job": {"launcher": "msrun", "command": "python train.py", "local_workers": 1,
                        "output_dir": "/job/output", "restart_gap": 0, "unreachable_timeout": 1, **job}}
        if spares:
            data["spares"] = [{"address": f"10.9.1.[1-{spares}]", "name": f"s[0-{spares - 1}]"}]
        self.dep = deployment_from_data(data, tmp_path / "fake.yaml")
        self.servers = {n.name: FakeServer(n.name, answers={("sh", "-c"): self._sh})
                        for n in (*self.dep.nodes, *self.dep.spares)}
        self.down: set[str] = set()
        self.partitioned: set[str] = set()   # connecting hangs until the connect timeout (3 s here)
        self.bad: dict[str, str] = {}        # preflight failures to report
        self.listing = ""                    # what the checkpoint listing shows (on every server: shared)
        self.not_shared: set[str] = set()    # servers that do not see the probe file
        self.stopped_ranks: dict[str, str] = {}  # {node: "rank state"} rows of the process check
        self.store = StateStore(tmp_path / "state")
        self.supervisor = Supervisor(self.dep, self.store, factory=self._connect, probe_s=0.1, tick_s=0.02,
                                     checkpoint_poll_s=0, preflight=self._preflight)
        self.rc: int | None = None
        self.error: BaseException | None = None
        for name, server in self.servers.items():
            server.answers[("test", "-e")] = (lambda argv, n=name: Result(1 if n in self.not_shared else 0, "", ""))

    def _connect(self, node, known):
        if node.name in self.partitioned:
            time.sleep(3)
            raise TransportError("cannot connect: timed out", host=node.name)
        if node.name in self.down:
            raise TransportError("cannot connect: connection refused", host=node.name)
        return self.servers[node.name]

    def _sh(self, argv: list[str]) -> Result:
        script = argv[2]
        if "@@dir" in script:
            return Result(0, self.listing, "")
        if any(a.startswith("attempt-") for a in argv):  # the last attempt's logs move away: tail starts afresh
            for server in self.servers.values():
                with server.worker_changed:
                    server.worker_lines.clear()
        return Result(0, "", "")

    def _preflight(self, cluster) -> list[Check]:
        checks = []
        for node in cluster.nodes:
            try:
                cluster.transport(node).run(["true"])
            except TransportError as exc:
                checks.append(Check(node.name, "ssh", False, str(exc)))
                continue
            ok = node.name not in self.bad
            checks.append(Check(node.name, "npu-health", ok, self.bad.get(node.name, "8 NPUs OK")))
        return checks

    # --- driving it ----------------------------------------------------------------------------------

    def start(self, options: StartOptions = NO_CHECKS) -> Rig:
        return self._run(lambda: self.supervisor.start(options))

    def adopt(self) -> Rig:
        return self._run(self.supervisor.adopt)

    def _run(self, target) -> Rig:
        def body() -> None:
            try:
                self.rc = target()
            except BaseException as exc:  # noqa: BLE001 - the test looks at it
                self.error = exc
        self.thread = threading.Thread(target=body, daemon=True)
        self.thread.start()
        return self

    def wait(self, timeout: float = 10) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the supervisor did not end; events: {self.kinds()}"
        if self.error is not None:
            raise self.error
        return self.rc

    def running(self, names=None) -> bool:
        names = names or [n.name for n in self.dep.nodes]
        return all(self.servers[n].running() == ["fake"] for n in names)

    def until(self, condition, timeout: float = 10, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert time.monotonic() < deadline, f"timed out waiting for {what}; events: {self.kinds()}"
            time.sleep(0.02)

    def attempt_started(self, attempt: int) -> None:
        self.until(lambda: any(e["kind"] == "started" and e.get("attempt") == attempt for e in self.store.events()),
                   what=f"attempt {attempt}")

    def kinds(self) -> list[str]:
        return [e["kind"] for e in self.store.events()]

    def event(self, kind: str) -> dict:
        return next(e for e in self.store.events() if e["kind"] == kind)

    def finish(self, names=None) -> None:
        for name in names or [n.name for n in self.dep.nodes]:
            self.servers[name].exit("fake", 0)

    def docker_runs(self, name: str) -> list[list[str]]:
        return [argv for argv in self.servers[name].commands() if argv[:2] == ["docker", "run"]]


def env_of(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "--env")


# --- restarts -------------------------------------------------------------------------------------------

def test_a_failure_relaunches_from_the_newest_checkpoint_every_rank_has(tmp_path):
    rig = Rig(tmp_path, restarts=2).start()
    rig.attempt_started(1)
    for step in (1, 2, 3):
        for rank, name in enumerate(("n0", "n1", "n2")):
            rig.servers[name].worker_log(rank, f"{{ step:[{step:5d}/   40], loss: N/A (non-last PP stage) }}")
    rig.until(lambda: "first-step" in rig.kinds(), what="the first step")
    rig.listing = listing({0: {5: 70, 10: 70}, 1: {5: 70, 10: 70}, 2: {5: 70, 10: 0}})  # rank 2's step 10: empty
    rig.servers["n1"].exit("fake", 1)
    rig.attempt_started(2)
    assert rig.running()
    first, second = rig.docker_runs("n1")
    assert env_of(first)["ASCEND_RUN_ATTEMPT"] == "1" and "ASCEND_RUN_RESUME_DIR" not in env_of(first)
    assert env_of(second) == {**env_of(second), "ASCEND_RUN_ATTEMPT": "2", "ASCEND_RUN_RESUME_DIR": "/job/output/checkpoint",
                              "ASCEND_RUN_RESUME_NAME": "standin_rank_0-1_5.ckpt", "ASCEND_RUN_RESUME_STEP": "5"}
    kept = [argv for argv in rig.servers["n0"].commands() if argv[:2] == ["sh", "-c"] and "attempt-1" in argv]
    assert kept, "the first attempt's logs are kept in attempt-1/ before the relaunch"
    rig.finish()
    assert rig.wait() == 0
    assert rig.kinds() == ["launch", "started", "first-step", "failure", "stop", "preflight", "resume", "started",
                           "succeeded"]
    assert rig.event("failure")["detail"] == "n1: exited with code 1"
    assert rig.event("resume")["step"] == 5
    assert any("standin_rank_2-1_10.ckpt is empty" in note for note in rig.event("resume")["notes"])
    state = rig.store.read()
    assert (state.state, state.attempt, state.attempts) == ("succeeded", 2, 3)


MSRUN_WORKER_FAILED = ("[ERROR] ME(1:140552863613184,MainProcess):2026-12-01-02:32:35.810.000 [mindspore/parallel/"
                       "cluster/process_entity/_api.py:365] Worker process 11 exit with exception. Error code: {rc}.")


def test_msruns_report_of_a_dead_worker_is_the_failure_before_msrun_exits(tmp_path):
    """msrun logs the dead worker, then takes its time to exit (seconds on a busy machine): the line is enough."""
    rig = Rig(tmp_path, restarts=1).start()
    rig.attempt_started(1)
    rig.servers["n1"].say("fake", MSRUN_WORKER_FAILED.format(rc=-9))
    rig.attempt_started(2)  # n1's container never exited by itself: the supervisor removed it
    failure = rig.event("failure")
    assert (failure["detail"], failure["rc"]) == ("n1: a worker was killed by signal 9", None)
    rig.servers["n2"].say("fake", MSRUN_WORKER_FAILED.format(rc=3))
    assert rig.wait() == 3
    assert rig.event("failed")["detail"].startswith("the job failed on n2: a worker exited with code 3; all 1 restart")


def test_restarts_used_up_stop_everything_and_name_the_node(tmp_path):
    rig = Rig(tmp_path, restarts=1).start()
    rig.attempt_started(1)
    rig.servers["n2"].exit("fake", 3)
    rig.attempt_started(2)
    rig.servers["n2"].exit("fake", 3)
    assert rig.wait() == 3
    failed = rig.event("failed")
    assert failed["detail"] == ("the job failed on n2: exited with code 3; all 1 restart(s) used up (attempt 2 of 2); "
                                "stopped on every node")
    assert failed["node"] == "n2" and "exhausted" in rig.kinds()
    assert not any(s.running() for s in rig.servers.values())
    assert rig.store.read().state == "failed" and rig.store.read().error["exit_code"] == 3


def test_no_restarts_is_todays_fail_fast(tmp_path):
    rig = Rig(tmp_path).start()
    rig.attempt_started(1)
    rig.servers["n0"].exit("fake", 7)
    assert rig.wait() == 7
    assert rig.kinds() == ["launch", "started", "failure", "stop", "failed"]
    assert "stopped on every node (job.restarts is 0)" in rig.event("failed")["detail"]
    assert not any(s.running() for s in rig.servers.values())


def test_a_lost_server_is_replaced_by_a_spare_with_its_rank(tmp_path):
    rig = Rig(tmp_path, spares=1, restarts=1).start()
    rig.attempt_started(1)
    rig.listing = listing({0: {5: 70}, 1: {5: 70}, 2: {5: 70}})
    rig.down.add("n1")
    rig.servers["n1"].unreachable = 10**6  # its sshd is gone: every command fails, reconnecting too
    rig.attempt_started(2)
    assert rig.running(["n0", "s0", "n2"])
    (spare_run,) = rig.docker_runs("s0")
    assert "io.ascend-run.rank=1" in spare_run and env_of(spare_run)["ASCEND_RUN_RESUME_STEP"] == "5"
    spare = rig.event("spare")
    assert spare["detail"].startswith("s0 takes n1's place (rank 1): ssh: ")
    assert [e["kind"] for e in rig.store.events()][2:6] == ["unreachable", "failure", "stop", "preflight"]
    assert "unreachable for" in rig.event("failure")["detail"]
    assert "n1: not stopped, unreachable" in rig.event("stop")["detail"]
    state = rig.store.read()
    assert [(n["name"], n["rank"], n["spare"]) for n in state.nodes] == [("n0", 0, False), ("s0", 1, True),
                                                                         ("n2", 2, False)]
    assert state.spares == []
    rig.finish(["n0", "s0", "n2"])
    assert rig.wait() == 0


def test_a_partitioned_server_fails_from_its_last_answer_and_the_stop_does_not_wait_for_it(tmp_path):
    rig = Rig(tmp_path, spares=1, restarts=1).start()
    rig.attempt_started(1)
    rig.listing = listing({0: {5: 70}, 1: {5: 70}, 2: {5: 70}})
    rig.partitioned.add("n1")
    silenced = time.time()
    rig.servers["n1"].silent = True  # its link is down: nothing arrives, nothing fails, connecting hangs
    rig.attempt_started(2)
    failure, stop = rig.event("failure"), rig.event("stop")
    assert failure["node"] == "n1" and failure["cause"] == "unreachable", failure
    # silent for 2 s (the watcher's heartbeats missed) and unreachable_timeout 1 s counted from the last one
    assert failure["t"] - silenced < 2.0 + 1.0, failure["t"] - silenced
    assert stop["seconds"] < 1.0 and stop["total_seconds"] < 1.5, stop  # not the 3 s connect
    assert "n1: not stopped, unreachable: no answer since" in stop["detail"]
    assert rig.running(["n0", "s0", "n2"])
    rig.finish(["n0", "s0", "n2"])
    assert rig.wait() == 0


def test_no_spare_when_the_checkpoints_are_not_shared(tmp_path):
    rig = Rig(tmp_path, spares=1, restarts=1).start()
    rig.attempt_started(1)
    rig.listing = listing({0: {5: 70}, 1: {5: 70}, 2: {5: 70}})
    rig.not_shared.add("s0")
    rig.bad["n1"] = "NPU 3: Critical"
    rig.servers["n1"].exit("fake", 1)
    assert rig.wait() == 6
    failed = rig.event("failed")["detail"]
    assert failed.startswith("n1: npu-health: NPU 3: Critical; not using spare s0: the checkpoints are not on storage")
    assert not any(s.running() for s in rig.servers.values())


def test_not_enough_healthy_servers_is_an_error_naming_them(tmp_path):
    rig = Rig(tmp_path, restarts=3).start()
    rig.attempt_started(1)
    rig.bad["n2"] = "link DOWN on NPU 3"
    rig.servers["n0"].exit("fake", 1)
    assert rig.wait() == 6
    assert rig.event("failed")["detail"].startswith("not enough healthy servers: n2: npu-health: link DOWN on NPU 3;")


def test_a_server_that_answers_again_is_not_a_failure(tmp_path):
    rig = Rig(tmp_path, restarts=0, unreachable_timeout=30).start()
    rig.attempt_started(1)
    rig.servers["n1"].unreachable = 1  # one probe fails; the reconnection works
    rig.until(lambda: "reconnected" in rig.kinds(), what="the reconnection")
    rig.finish()
    assert rig.wait() == 0
    assert rig.kinds() == ["launch", "started", "unreachable", "reconnected", "succeeded"]


# --- hangs ----------------------------------------------------------------------------------------------

def test_a_hang_names_the_stopped_rank_and_is_a_failure(tmp_path):
    rig = Rig(tmp_path, hang_timeout=0.4)
    rig.servers["n1"].answers[("sh", "-c")] = lambda argv: Result(0, "1 T\n" if "docker top" in argv[2] else "", "")
    rig.start()
    rig.attempt_started(1)
    for rank, name in enumerate(("n0", "n1", "n2")):
        rig.servers[name].worker_log(rank, "{ step:[    4/   40], loss: 2.5, per_step_time: 90ms }")
    assert rig.wait() == 6
    hang = rig.event("hang")
    assert hang["ranks"] == [1] and hang["node"] == "n1" and "stopped process(es): rank(s) 1" in hang["detail"]
    assert rig.event("failure")["cause"] == "hang"
    assert not any(s.running() for s in rig.servers.values())


def test_no_first_step_within_start_timeout_is_a_hang(tmp_path):
    rig = Rig(tmp_path, start_timeout=0.3, hang_timeout=100).start()
    assert rig.wait() == 6
    assert "no step line from any rank within start_timeout" in rig.event("hang")["detail"]


# --- stop, takeover --------------------------------------------------------------------------------------

def test_a_stop_request_stops_the_job_everywhere(tmp_path):
    rig = Rig(tmp_path).start()
    rig.attempt_started(1)
    rig.supervisor.request_stop()
    assert rig.wait() == 0
    assert rig.kinds()[-2:] == ["stop", "stopped"]
    assert rig.store.read().state == "stopped"
    assert not any(s.running() for s in rig.servers.values())


def test_takeover_of_a_running_job_restarts_nothing(tmp_path):
    rig = Rig(tmp_path, restarts=2)
    for name in ("n0", "n1", "n2"):
        rig.servers[name].run(["docker", "run", "--detach", "--name", "fake", "--label", "io.ascend-run.job=fake"])
    rig.store.write(JobState(job="fake", deployment=str(rig.dep.path), state="running", attempt=2, attempts=3,
                             nodes=[{"name": f"n{i}", "address": "x", "rank": i, "spare": False} for i in range(3)]))
    rig.store.line("n0", 0, "a line the dead supervisor recorded")
    recorded = rig.store.last_line_time()
    rig.adopt()
    rig.until(lambda: "adopt" in rig.kinds(), what="the takeover")
    assert rig.event("adopt")["detail"].startswith("took over the running job: attempt 2 of 3 on n0, n1, n2")
    rig.until(lambda: any(argv[:1] == ["python3"] for kind, argv in rig.servers["n0"].calls), what="the watcher")
    watcher = next(argv for kind, argv in rig.servers["n0"].calls if argv[:1] == ["python3"])
    config = json.loads(watcher[-1])  # the job watcher's `docker logs --follow` options
    assert config["logs"] == ["--since", f"{recorded:.3f}"] and config["container"] == "fake", "no line recorded twice"
    rig.servers["n2"].exit("fake", 1)  # a later crash is handled as before
    rig.attempt_started(3)
    rig.finish()
    assert rig.wait() == 0
    assert sum(len(rig.docker_runs(n)) for n in ("n0", "n1", "n2")) == 6  # 3 made by the test, 3 by the relaunch


def test_takeover_with_nothing_running_is_an_error(tmp_path):
    rig = Rig(tmp_path).adopt()
    with pytest.raises(AscendRunError, match="nothing to supervise: the job 'fake' is not running"):
        rig.wait()


def test_takeover_after_the_job_died_unwatched_relaunches_it(tmp_path):
    rig = Rig(tmp_path, restarts=1)
    rig.store.write(JobState(job="fake", deployment=str(rig.dep.path), state="running", attempt=1, attempts=2))
    rig.adopt()
    rig.attempt_started(2)
    assert rig.event("failure")["cause"] == "gone"
    rig.finish()
    assert rig.wait() == 0


def test_a_second_supervisor_is_refused(tmp_path):
    rig = Rig(tmp_path).start()
    rig.attempt_started(1)
    other = Supervisor(rig.dep, StateStore(rig.store.dir), factory=rig._connect)
    with pytest.raises(AscendRunError, match="already supervised"):
        other.start(NO_CHECKS)
    rig.finish()
    assert rig.wait() == 0
