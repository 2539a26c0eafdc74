"""The orchestration over scripted fake servers (tests/fake_transport.py): no root, no sshd, no Docker.

Start/watch/stop of a job, Ctrl-C, stopping with an unreachable node, one-off steps, status, log collection,
image shipping, the fan-out bound, and every `--dry-run` against what the same command really runs.
The same code runs for real against simulated servers in the slow end-to-end tests.
"""

from __future__ import annotations

import _thread
import contextlib
import re
import shlex
import threading
import time
from pathlib import Path

import pytest

from ascend_run.errors import JobFailed, PreflightError, TransportError
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.launch import nodeops
from ascend_run.launch.collect import collect_logs
from ascend_run.launch.job import LaunchOptions, Reporter, start_job, watch_or_raise
from ascend_run.launch.launcher import stop_job
from ascend_run.launch.status import collect_status
from ascend_run.steps.task import run_task, task_commands
from ascend_run.transport.base import Result
from tests.fake_transport import FakeServer, fake_cluster

NO_CHECKS = LaunchOptions(preflight=False, config_check=False)


def job_deployment(nodes: int = 3, **job):
    return deployment_from_data({
        "name": "fake", "profile": "atlas-800t-a2", "image": "img:1",
        "nodes": [{"address": f"10.9.0.[1-{nodes}]", "name": f"n[0-{nodes - 1}]"}],
        "job": {"launcher": "msrun", "command": "python train.py", "local_workers": 1, **job}},
        Path("/tmp/fake-job.yaml"))


def later(seconds: float, action) -> threading.Timer:
    timer = threading.Timer(seconds, action)
    timer.start()
    return timer


# --- a job: start, watch, stop ------------------------------------------------------------------------

def test_one_node_failing_stops_the_job_on_every_node():
    dep = job_deployment(4)
    cluster, servers, _ = fake_cluster(dep)
    notices: list[str] = []
    launcher = start_job(cluster, NO_CHECKS, Reporter(notice=notices.append))
    assert all(s.running() == ["fake"] for s in servers.values())
    later(0.2, lambda: servers["n2"].exit("fake", 3))
    started = time.monotonic()
    outcome = launcher.watch()
    assert (outcome.failed_node, outcome.reason) == ("n2", "exited with code 3")
    assert all(not s.running() for s in servers.values())
    assert all(["docker", "rm", "-f", "fake"] in s.commands() for s in servers.values())
    assert notices == ["stopping the job on all 4 nodes: n2 exited with code 3"]
    assert time.monotonic() - started < 5


def test_a_failed_job_is_an_error_with_the_job_exit_code():
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep)
    launcher = start_job(cluster, NO_CHECKS)
    later(0.1, lambda: servers["n0"].exit("fake", 7))
    with pytest.raises(JobFailed, match="the job failed on n0: exited with code 7") as caught:
        watch_or_raise(launcher)
    assert caught.value.exit_code == 7


def test_every_node_finishing_is_success_and_lines_arrive_per_node():
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep)
    lines: list[tuple[str, str]] = []
    launcher = start_job(cluster, NO_CHECKS, Reporter(line=lambda node, line: lines.append((node.name, line))))

    def finish() -> None:
        for name, server in servers.items():
            server.say("fake", f"step 1 on {name}")
            server.exit("fake", 0)
    later(0.1, finish)
    outcome = watch_or_raise(launcher)
    assert outcome.ok and outcome.exit_codes == {"n0": 0, "n1": 0}
    time.sleep(0.2)  # the log streams end with the containers
    assert sorted(lines) == [("n0", "step 1 on n0"), ("n1", "step 1 on n1")]


def test_ctrl_c_stops_the_job_everywhere():
    dep = job_deployment(3)
    cluster, servers, _ = fake_cluster(dep)
    launcher = start_job(cluster, NO_CHECKS)
    later(0.2, _thread.interrupt_main)
    with pytest.raises(KeyboardInterrupt):
        watch_or_raise(launcher)
    assert all(not s.running() for s in servers.values())


def test_a_lost_node_is_a_failure_of_the_whole_job():
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep)
    launcher = start_job(cluster, NO_CHECKS)
    servers["n1"].unreachable = 2  # its log stream and its `docker wait` lose the connection
    outcome = launcher.watch()
    assert outcome.failed_node == "n1" and outcome.reason.startswith("lost:")
    assert not servers["n0"].running()


def test_a_node_that_cannot_start_leaves_nothing_running():
    dep = job_deployment(3)
    cluster, servers, _ = fake_cluster(dep)
    servers["n1"].answers[("docker", "run")] = Result(125, "", "docker: Error: No such image: img:1")
    with pytest.raises(TransportError, match="(?s)n1: `docker run ... img:1` exited 125.*No such image"):
        start_job(cluster, NO_CHECKS)
    assert all(not s.running() for s in servers.values())


def test_a_running_job_is_refused_unless_replaced():
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep)
    start_job(cluster, NO_CHECKS)
    with pytest.raises(Exception, match="already has containers: n0: fake \\(running\\)") as caught:
        start_job(cluster, NO_CHECKS)
    assert "ascend-run stop -f /tmp/fake-job.yaml" in str(caught.value)
    start_job(cluster, LaunchOptions(replace=True, preflight=False, config_check=False))
    assert all(s.running() == ["fake"] for s in servers.values())


def test_a_failed_preflight_starts_nothing_and_reports_the_checks():
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep)  # fake servers answer nothing: no docker version, no devices
    seen: list = []
    with pytest.raises(PreflightError, match="preflight check\\(s\\) failed, first: n0: "):
        start_job(cluster, LaunchOptions(config_check=False), Reporter(checks=seen.extend))
    assert {c.node for c in seen} == {"n0", "n1"}
    assert not any(argv[:2] == ["docker", "run"] for s in servers.values() for argv in s.commands())


# --- stop -----------------------------------------------------------------------------------------------

def test_stop_job_retries_an_unreachable_node():
    dep = job_deployment(3)
    cluster, servers, _ = fake_cluster(dep)
    start_job(cluster, NO_CHECKS)
    servers["n2"].unreachable = 2  # back on the third attempt
    assert stop_job(cluster, pause_s=0.01) == {}
    assert all(not s.running() for s in servers.values())


def test_stop_job_names_a_node_that_stays_unreachable():
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep)
    start_job(cluster, NO_CHECKS)
    servers["n1"].unreachable = 100
    problems = stop_job(cluster, attempts=3, pause_s=0.01)
    assert list(problems) == ["n1"] and "could not remove the job's containers" in problems["n1"]
    assert "ascend-run stop -f /tmp/fake-job.yaml" in problems["n1"]
    assert not servers["n0"].running()


def test_stop_dry_run_prints_the_commands_stop_runs():
    """`stop --dry-run` prints `stop_commands` for the containers it lists on each server (the CLI over real
    servers: tests/test_cli_options.py, tests/test_cli_e2e.py); these are exactly what stop_job runs."""
    from ascend_run.cli.launch import stop_commands

    dep = job_deployment(1)
    cluster, servers, _ = fake_cluster(dep)
    start_job(cluster, NO_CHECKS)
    names = [c.name for c in nodeops.job_containers(cluster.transport("n0"), dep.name)]
    servers["n0"].calls.clear()
    stop_job(cluster)
    assert servers["n0"].commands() == stop_commands(dep, names)
    assert stop_commands(dep, []) == [nodeops.list_argv(dep.name)]  # nothing listed: nothing removed


# --- the fan-out bound ----------------------------------------------------------------------------------

@pytest.mark.parametrize("operation", ["preflight", "status", "stop"])
def test_parallel_bounds_the_commands_in_flight(operation):
    from ascend_run.launch.preflight import run_preflight

    dep = job_deployment(8)
    cluster, servers, in_flight = fake_cluster(dep, delay=0.02, parallelism=2)
    {"preflight": run_preflight, "status": collect_status, "stop": stop_job}[operation](cluster)
    assert in_flight.peak == 2
    assert all(s.calls for s in servers.values())


# --- one-off steps, status, logs, ship ------------------------------------------------------------------

def test_a_one_off_step_runs_exactly_its_commands_and_returns_the_exit_code():
    server = FakeServer("n0")
    docker_run = ["docker", "run", "--detach", "--name", "step", "--label", "io.ascend-run.task=fake", "img", "x"]

    def finish() -> None:
        server.say("step", "converting")
        server.exit("step", 4)
    later(0.1, finish)
    lines: list[str] = []
    assert run_task(server, "step", docker_run, lines.append) == 4
    assert lines == ["converting"]
    assert [argv for _, argv in server.calls] == task_commands("step", docker_run)
    assert not server.running()


def test_a_one_off_step_already_running_is_followed_not_started_twice():
    server = FakeServer("n0")
    docker_run = ["docker", "run", "--detach", "--name", "step", "img", "x"]
    server.run(docker_run)
    later(0.1, lambda: server.exit("step", 0))
    notes: list[str] = []
    assert run_task(server, "step", docker_run, lambda line: None, notes.append) == 0
    assert notes == ["n0: step is already running (started earlier); following it"]
    assert sum(argv[:2] == ["docker", "run"] for argv in server.commands()) == 1


def test_status_rows_come_from_every_node_and_an_unreachable_one_says_so():
    dep = job_deployment(2)
    log = "@@ /var/log/ascend-run/fake/worker_0.log\n{ step:[    3/   10], loss:  2.500000, per_step_time: 9ms }\n"
    cluster, servers, _ = fake_cluster(dep, answers={("sh", "-c"): Result(0, log, "")})
    start_job(cluster, NO_CHECKS)
    servers["n1"].unreachable = 1
    rows = collect_status(cluster)
    assert [(r["node"], r["state"]) for r in rows] == [("n0", "running"), ("n1", "unreachable")]
    assert rows[0]["last_loss"] == "2.5 (step 3)"


def test_collect_logs_copies_every_listed_file_into_a_directory_per_node(tmp_path):
    dep = job_deployment(2)
    cluster, servers, _ = fake_cluster(dep, answers={("sh", "-c"): Result(0, "worker_0.log\nscheduler.log\n", "")})
    copied = collect_logs(cluster, tmp_path)
    assert copied == {"n0": ["worker_0.log", "scheduler.log"], "n1": ["worker_0.log", "scheduler.log"]}
    gets = [argv for kind, argv in servers["n1"].calls if kind == "get"]
    assert [src for src, _ in gets] == ["/var/log/ascend-run/fake/worker_0.log", "/var/log/ascend-run/fake/scheduler.log"]
    # each into a temporary file beside its place, renamed into place once all are there (outputs.py)
    assert all(Path(dst).parent == tmp_path / "n1" and Path(dst).name.startswith(".") for _, dst in gets)
    assert sorted(p.name for p in (tmp_path / "n1").iterdir()) == ["scheduler.log", "worker_0.log"]


class FakeImage:
    id = "sha256:" + "a" * 64

    def save(self, chunk_size: int, named: bool):
        yield b"tar" * 10


class FakeClient:
    class images:  # noqa: N801 - the docker SDK's attribute name
        @staticmethod
        def get(name: str) -> FakeImage:
            return FakeImage()


def test_ship_sends_nothing_where_the_image_is_present():
    """Where the ids match, nothing is streamed (the node-to-node chain itself: test_broadcast, sim tests)."""
    from ascend_run.steps.ship_image import ship_image

    dep = job_deployment(3)
    loaded: set[str] = {"n0", "n1", "n2"}

    def inspect(server: str):
        return lambda argv: Result(0, FakeImage.id + "\n", "") if server in loaded else Result(1, "", "No such image")

    def load(server: str):
        def answer(argv):
            loaded.add(server)
            return Result(0, "Loaded image: img:1\n", "")
        return answer
    cluster, servers, _ = fake_cluster(dep)
    for name, server in servers.items():
        server.answers = {("docker", "image", "inspect"): inspect(name), ("docker", "load"): load(name)}
    results = ship_image(cluster, FakeClient(), "img:1")
    assert sorted((r.node, r.action) for r in results) == [("n0", "present"), ("n1", "present"), ("n2", "present")]
    assert all(server.commands() == [["docker", "image", "inspect", "--format", "{{.Id}}", "img:1"]]
               for server in servers.values()), {n: s.commands() for n, s in servers.items()}


# --- dry runs are what runs -------------------------------------------------------------------------------

def test_weights_download_dry_run_is_what_runs():
    from ascend_run.steps import weights_download
    from ascend_run.steps.task import Upload

    dep = deployment_from_data({"name": "infer", "profile": "atlas-800i-a2", "image": "infer:1",
                                "nodes": [{"address": "10.9.0.1", "name": "n0"}],
                                "weights": {"dir": "/data/w/DeepSeek-V3", "ca_bundle": "/data/ca.pem"}})
    node = dep.nodes[0]
    req = weights_download.hub_fetch(dep)
    server = FakeServer("n0")
    name = weights_download.container_name(dep)

    def finish() -> None:
        while name not in server.containers:
            time.sleep(0.01)
        server.say(name, '@ascend-run {"event": "done", "files": 1}')
        server.exit(name, 0)
    later(0, finish)
    done = weights_download.run_fetch(server, dep, node, req, lambda e: None, lambda line: None)
    assert done["event"] == "done"
    ran = [Upload(Path(argv[0]), argv[1]) if kind == "put" else argv for kind, argv in server.calls]
    assert ran == weights_download.commands(dep, node, req)


def test_data_prepare_dry_run_is_what_runs():
    from ascend_run.steps import dataprep

    dep = deployment_from_data({"name": "data", "profile": "atlas-800t-a2", "image": "train:1",
                                "nodes": [{"address": "10.9.0.1", "name": "n0"}],
                                "mounts": ["/data/dataset:/home/work/dataset"]})
    node = dep.nodes[0]
    prep = dataprep.DataPrep(input="/home/work/dataset/wiki.train.tokens",
                             vocab_file="/home/work/dataset/tokenizer.json",
                             output_prefix="/home/work/dataset/wiki_64", seq_length=64, workers=1,
                             script=dataprep.DEFAULT_SCRIPT, mindformers_dir="/home/work/mindformers")
    header = dataprep.IDX_HEADER.pack(dataprep.IDX_MAGIC, 1, 4, 1, 3)  # version 1, int32, 1 sequence, 2 docs
    idx_size = dataprep.parse_index_header(header).expected_idx_size()
    server = FakeServer("n0", answers={
        ("od",): Result(0, " ".join(f"{b:02x}" for b in header), ""),
        ("stat",): Result(0, f"260\n{idx_size}\n", "")})
    name = dataprep.container_name(dep)
    later(0.1, lambda: server.exit(name, 0))
    result = dataprep.run_prepare(server, dep, node, prep, lambda line: None)
    assert result["sequences"] == 1
    assert [argv for _, argv in server.calls] == dataprep.commands(dep, node, prep)


def test_image_build_dry_run_is_the_build_the_engine_gets(capsys, monkeypatch, tmp_path):
    from ascend_run.cli import image as image_cli
    from ascend_run.cli import main
    from ascend_run.engine.build import BuildRequest

    args = ["image", "build", "train", "--build-arg", "X=a b", "--tag", "t:1", "--wheelhouse", str(tmp_path)]
    with pytest.raises(SystemExit):
        main([*args, "--dry-run"])
    lines = capsys.readouterr().out.strip().splitlines()
    printed = lines[-1]
    received: dict = {}

    class Api:
        def build(self, **kwargs):
            received.update(kwargs)
            yield {"stream": "Successfully built 0123abcd\n"}

    class Client:
        api = Api()
    monkeypatch.setattr(image_cli, "engine_client", lambda host: contextlib.nullcontext((None, Client())))
    (tmp_path / "x-1.0-py3-none-any.whl").write_bytes(b"")
    with pytest.raises(SystemExit):
        main(args)
    built = BuildRequest(received["tag"], received["buildargs"], received["network_mode"] == "host")
    port = re.compile(r"127\.0\.0\.1:\d+")  # the index takes another port when its own is busy
    assert port.sub("PORT", shlex.join(built.cli_argv("ascend-run-train-context"))) == port.sub("PORT", printed)
    assert lines[-2].startswith("ascend-run image render train --out ascend-run-train-context  #")
    assert "PIP_INDEX_URL=http://127.0.0.1:" in printed and "'X=a b'" in printed


def test_exec_dry_run_prints_the_line_the_ssh_transport_sends(monkeypatch, capsys, tmp_path):
    from ascend_run.cli import main
    from ascend_run.transport import ssh

    path = tmp_path / "c.yaml"
    path.write_text("name: c\nprofile: atlas-800t-a2\nimage: i:1\nnodes: [{address: 10.9.0.1, name: n0}]\n")
    with pytest.raises(SystemExit):
        main(["exec", "-f", str(path), "--dry-run", "--timeout", "5", "--", "sh", "-c", "echo 'a b'"])
    printed = capsys.readouterr().out.strip().split(" (n0): ", 1)[1]
    sent: list[str] = []

    class Channel:
        def exec_command(self, line):
            sent.append(line)
            raise RuntimeError("recorded")

        def close(self):
            pass
    transport = object.__new__(ssh.SSHTransport)
    monkeypatch.setattr(transport, "_session", lambda: Channel(), raising=False)
    with pytest.raises(RuntimeError, match="recorded"):
        transport.run(["sh", "-c", "echo 'a b'"], timeout=5)
    assert sent == [printed]
    assert printed.startswith("timeout -k 5 5 ")
