"""What the option-consistency tests (tests/test_cli_options.py) run every command against.

`CliWorld` holds the inputs: a deployment file whose nodes are unroutable (dry runs, renders), one whose
nodes are real loopback sshd servers that reach the test Docker engine (commands that act on nodes), a
MindFormers config, a directory of worker logs, an OpenAI stand-in service, and a tiny image in the engine.
`RECIPES` says how to run each command so that it prints a report; the tests find the commands in the
click tree, so a new command without a recipe (or a reason in NO_REPORT) fails them.
"""

from __future__ import annotations

import io
import json
import tarfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import click
import pytest

from ascend_run.cli import cli

# Commands with no report to format, and why.
NO_REPORT = {
    "demo": "a walkthrough for people: it runs the other commands (each of which has -o json) and narrates",
    "supervise": "a long-running process whose record is `events -o json` and `status -o json`",
    "completion": "prints a shell script, for the shell to read",
    "man": "prints (or writes with --out) a man page, for man(1) to read",
}

TINY_MF = ("run_mode: train\nparallel_config: {data_parallel: 8, model_parallel: 1, pipeline_stage: 1}\n"
           "model:\n  model_config: {num_layers: 4, num_heads: 8, hidden_size: 256}\n")


def leaf_commands(group: click.Group = cli, prefix: tuple[str, ...] = ()) -> dict[str, click.Command]:
    """Every runnable command of the tree, by its words: {"chart values": <Command>, …}."""
    found = {}
    for name in group.list_commands(None):
        command = group.get_command(None, name)
        if isinstance(command, click.Group):
            found.update(leaf_commands(command, (*prefix, name)))
        else:
            found[" ".join((*prefix, name))] = command
    return found


def has_report_format(command: click.Command) -> bool:
    from ascend_run.cli.common import ReportFormat

    return any(p.name == "output_format" and isinstance(p.type, ReportFormat) for p in command.params)


def offline_yaml(name: str) -> str:
    """Four nodes at unroutable addresses (192.0.2.0/24): anything that tried to connect would fail with 4."""
    return f"""name: {name}
profile: atlas-800t-a2
image: local/none:0
ssh: {{user: root, identity_file: /nonexistent/cli-test-key}}
nodes:
  - address: 192.0.2.[1-4]
    name: n[0-3]
mounts: [{{source: /data/dataset, target: /home/work/dataset}}, "/data/model:/data/model"]
weights: {{repo: MindSpore-Lab/DeepSeek-V3, dir: /data/model/DeepSeek-V3}}
job: {{command: "python train.py"}}
"""


@dataclass
class CliWorld:
    root: Path
    request: pytest.FixtureRequest
    _cache: dict = field(default_factory=dict)

    def _once(self, key: str, make: Callable):
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    @property
    def offline(self) -> Path:
        def make() -> Path:
            path = self.root / "offline.yaml"
            path.write_text(offline_yaml(f"cli-offline-{uuid.uuid4().hex[:6]}"))
            return path
        return self._once("offline", make)

    @property
    def nodes(self) -> Path:
        """A deployment of two sshd servers whose `docker` is the test engine, and whose image exists there."""
        def make() -> Path:
            fleet = self.request.getfixturevalue("docker_fleet")
            image = self.request.getfixturevalue("tiny_image")
            text = fleet.deployment_yaml().replace("name: fanout-test", f"name: cli-nodes-{uuid.uuid4().hex[:6]}")
            path = self.root / "nodes.yaml"
            path.write_text(text.replace("image: local/none:0", f"image: {image}"))
            return path
        return self._once("nodes", make)

    @property
    def mf_config(self) -> Path:
        def make() -> Path:
            path = self.root / "mf.yaml"
            path.write_text(TINY_MF)
            return path
        return self._once("mf", make)

    @property
    def worker_logs(self) -> Path:
        def make() -> Path:
            from tests.test_losslog import trainer_log, write_job

            return write_job(self.root / "logs", {0: trainer_log([3.0, 2.5, 2.0]), 1: trainer_log([3.1, 2.4, 2.1])})
        return self._once("logs", make)

    @property
    def service(self) -> str:
        def make() -> str:
            from tests.openai_standin import StandIn

            service = StandIn()
            service.__enter__()
            self.request.addfinalizer(lambda: service.__exit__(None, None, None))
            return service.url
        return self._once("service", make)

    @property
    def engine(self) -> str:
        return self.request.getfixturevalue("docker_engine")


# How to make each command print its report: one or more argument lists (without -o json) per command.
RECIPES: dict[str, list[Callable[[CliWorld], list[str]]]] = {
    "validate": [lambda w: ["validate", "-f", str(w.offline)]],
    "init": [lambda w: ["init", "train"], lambda w: ["init", "sim", "--force", "--out", str(w.root / "sim-job.yaml")]],
    "config derive": [lambda w: ["config", "derive", str(w.mf_config), "--npus", "4", "--set",
                                 "parallel_config.data_parallel=4", "--out", str(w.root / "derived.yaml")]],
    "config check": [lambda w: ["config", "check", str(w.mf_config), "--npus", "8"]],
    "config presets": [lambda w: ["config", "presets"]],
    "image render": [lambda w: ["image", "render", "train"],
                     lambda w: ["image", "render", "infer", "--out", str(w.root / "context")]],
    "image build": [lambda w: ["image", "build", "train", "--dry-run"]],
    "image ship": [lambda w: ["image", "ship", "train", "-f", str(w.nodes), "--docker-host", w.engine, "--dry-run"],
                   lambda w: ["image", "ship", "train", "-f", str(w.nodes), "--docker-host", w.engine]],
    "docker-run": [lambda w: ["docker-run", "-f", str(w.offline)],
                   lambda w: ["docker-run", "-f", str(w.offline), "--out", str(w.root / "scripts"), "-x", "n0"]],
    "preflight": [lambda w: ["preflight", "-f", str(w.nodes)]],
    "launch": [lambda w: ["launch", "-f", str(w.offline), "--dry-run"],
               lambda w: ["launch", "-f", str(w.nodes)]],  # its preflight fails (no NPUs): exit 5, still JSON
    "status": [lambda w: ["status", "-f", str(w.nodes)]],
    "stop": [lambda w: ["stop", "-f", str(w.nodes), "--dry-run"], lambda w: ["stop", "-f", str(w.nodes)]],
    "events": [lambda w: ["events", "-f", str(w.offline)]],
    "jobs": [lambda w: ["jobs"]],
    "push": [lambda w: ["push", "-f", str(w.nodes), "-w", "n1", "--dry-run", str(w.mf_config), "/tmp/x.yaml"],
             lambda w: ["push", "-f", str(w.nodes), "-w", "n0", str(w.mf_config), str(w.root / "pushed" / "x.yaml")]],
    "logs": [lambda w: ["logs", "--loss", "--from", str(w.worker_logs)],
             lambda w: ["logs", "-f", str(w.nodes), "--collect", "--out", str(w.root / "collected")]],
    "exec": [lambda w: ["exec", "-f", str(w.offline), "--dry-run", "--", "echo", "3"],
             lambda w: ["exec", "-f", str(w.nodes), "--", "sh", "-c", "echo 3"]],
    "chart values": [lambda w: ["chart", "values", "train", "-f", str(w.offline)]],
    "chart write": [lambda w: ["chart", "write", "train", "--out", str(w.root / "charts")]],
    "ranktable": [lambda w: ["ranktable", "-f", str(w.offline), "--dry-run"]],
    "weights fetch": [lambda w: ["weights", "fetch", "-f", str(w.offline), "--dry-run"],
                      lambda w: ["weights", "fetch", "-f", str(w.offline), "--from-node", "--dry-run", "-x", "n2"]],
    "data prepare": [lambda w: ["data", "prepare", "-f", str(w.offline), "--dry-run"]],
    "ask": [lambda w: ["ask", "hello", "--url", w.service]],
    # a simulated cluster of one server (root, a few seconds): slow
    "sim up": [lambda w: ["sim", "up", "--servers", "1", "--no-docker", "--dir", str(w.root / "sim")]],
    "sim status": [lambda w: ["sim", "status", "--dir", str(w.root / "sim")]],
    "sim down": [lambda w: ["sim", "down", "--dir", str(w.root / "sim")]],
}
SLOW = {"sim up", "sim status", "sim down"}  # run in this order, in one test (tests/test_cli_options.py)


def tiny_image_tar() -> bytes:
    """A root filesystem of one file, for `docker import`: an image in a second, with nothing to pull."""
    data = io.BytesIO()
    with tarfile.open(fileobj=data, mode="w") as tar:
        body = b"cli option tests\n"
        info = tarfile.TarInfo("hello.txt")
        info.size = len(body)
        tar.addfile(info, io.BytesIO(body))
    return data.getvalue()


def parse_json(text: str):
    """The whole of stdout as one JSON document (an error names what came instead)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise AssertionError(f"stdout is not one JSON document ({exc}): {text[:500]!r}") from None
