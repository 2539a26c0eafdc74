"""A corpus of broken inputs against every command that reads a deployment file or a MindFormers config.

Each must end with exit 2 and a message naming the file (no traceback, nothing run, no connection made):
the commands are found by walking the CLI, so a new command that takes `-f` is in the corpus test or
fails `test_the_corpus_covers_every_command`. The CLI runs in process (fast); a few cases also run as
`python -m ascend_run`, the way a user runs them.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import pytest

from ascend_run.cli import cli
from tests.hostile_support import run_cli

ROOT = Path(__file__).resolve().parents[1]

# Loopback on a closed port with a short timeout: if a case were ever accepted, a command that connects
# would fail fast, and its exit code (not 2) would fail the test.
GOOD = {
    "name": "ds3",
    "profile": "atlas-800t-a2",
    "image": "registry.local/ds3-train:1",
    "ssh": {"user": "root", "port": 1, "connect_timeout": 1, "known_hosts": "/dev/null"},
    "nodes": [{"address": "127.0.0.[2-3]", "name": "n[0-1]"}],
    "mounts": [{"source": "/data/dataset", "target": "/home/work/dataset"}],
    "weights": {"dir": "/data/weights/DeepSeek-V3"},
    "job": {"command": "run_mindformer.py --config x.yaml", "master_port": 8118},
}
GOOD_CONFIG = ("run_mode: train\nparallel_config: {data_parallel: 16, model_parallel: 1, pipeline_stage: 1}\n"
               "model:\n  model_config: {num_layers: 4, num_heads: 8, hidden_size: 256}\n")


def _with(**changes) -> str:
    data = json.loads(json.dumps(GOOD))
    for dotted, value in changes.items():
        node = data
        *parents, last = dotted.split(".")
        for part in parents:
            node = node[int(part)] if part.isdigit() else node.setdefault(part, {})
        node[int(last) if last.isdigit() else last] = value
    return json.dumps(data)  # JSON is YAML, and it escapes every control character


def _bomb(levels: int = 8) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, levels + 1)]
    return "\n".join(lines) + "\n"


# name -> file contents (str or bytes); "{dir}" in a str is the corpus directory. None: the file is absent.
DEPLOYMENT_CORPUS: dict[str, str | bytes | None] = {
    "missing-file": None,
    "empty": "",
    "binary": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),
    "utf-16": "name: ds3\nprofile: atlas-800t-a2\n".encode("utf-16"),
    "nul-byte": b"name: ds3\x00\n",
    "bad-yaml": "name: [ds3\nprofile: x\n",
    "top-level-list": "- name: ds3\n",
    "unknown-key": _with(nmae="x"),
    "no-nodes": _with(nodes=[]),
    "name-newline": _with(name="ds3\n"),
    "name-markup": _with(name="[/red]"),
    "image-markup": _with(image="img:[/red]"),
    "image-option": _with(image="--privileged"),
    "env-nul": _with(env={"A": "x\u0000y"}),
    "env-name-newline": _with(env={"A\n": "x"}),
    "address-newline": _with(nodes=[{"address": "10.0.0.1\n"}]),
    "address-injection": _with(nodes=[{"address": "$(touch pwned)"}]),
    "ipv6-zone-injection": _with(nodes=[{"address": "fe80::1%$(id)"}]),
    "duplicate-address": _with(nodes=[{"address": "127.0.0.2"}, {"address": "127.0.0.2"}]),
    "npu-out-of-range": _with(nodes=[{"address": "127.0.0.2", "npus": [9]}]),
    "huge-range": _with(nodes=[{"address": "node[0-999999999999]"}]),
    "launcher-script-option": _with(**{"job.launcher_script": "-c"}),
    "command-option": _with(**{"job.command": "--master_addr=1.2.3.4 run.py"}),
    "command-unterminated": _with(**{"job.launcher": "msrun", "job.command": "run.py 'x"}),
    "log-dir-injection": _with(**{"job.log_dir": "out/$(touch pwned)"}),
    "workdir-relative": _with(**{"job.workdir": "work"}),
    "host-log-dir-field": _with(**{"job.host_log_dir": "/var/log/{0}"}),
    "container-user": _with(**{"container.user": "root --privileged"}),
    "container-workdir": _with(**{"container.workdir": "/w\nx"}),
    "weights-dir-newline": _with(**{"weights.dir": "/data/w\ntouch x"}),
    "surrogate": '{"name": "ds3", "image": "a\\ud800"}',
    "bidi-override": _with(**{"mounts": [{"source": "/data/\u202ex", "target": "/home/work/dataset"}]}),
    "profile-traversal": _with(profile="../../../etc/passwd"),
    "profile-bad-yaml": _with(profile="{dir}/broken-profile.yaml"),
    "profile-missing": _with(profile="{dir}/no-such-profile.yaml"),
    "alias-bomb": "name: ds3\nx:\n" + "".join(f"  {line}\n" for line in _bomb().splitlines()),
    "deep-flow": "name: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "deep-block": "name:\n  " + "- " * 3_000 + "x\n",
    "huge-integer": "name: ds3\nssh: {port: " + "9" * 5_000 + "}\n",
    "extends-loop": "extends: extends-loop.yaml\n",
    "extends-directory": "extends: a-directory\n",
    "extends-binary": "extends: binary.yaml\n",
    "extends-missing": "extends: nowhere.yaml\n",
    "oversized": "name: ds3\n" + ("# " + "y" * 1021 + "\n") * 9 * 1024,
    "huge-range-step": _with(nodes=[{"address": "node[0-999999999999/3]"}]),
    "range-step-zero": _with(nodes=[{"address": "node[1-9/0]"}]),
    "spare-is-a-node": _with(spares=[{"address": "127.0.0.2"}]),
    "spare-address-injection": _with(spares=[{"address": "$(touch pwned)"}]),
    "spare-too-few-npus": _with(spares=[{"address": "127.0.0.9", "npus": [0]}]),
    "spare-name-newline": _with(spares=[{"address": "127.0.0.9", "name": "s0\n"}]),
    "proxy-jump-words": _with(**{"ssh.proxy_jump": "a b"}),
    "proxy-jump-newline": _with(**{"ssh.proxy_jump": "login\n-oProxyCommand=x"}),
    "output-dir-relative": _with(**{"job.output_dir": "output"}),
    "ssh-config-missing": _with(**{"ssh.config_file": "{dir}/no-such-ssh-config"}),
    **{case: _with(**{"ssh.config_file": f"{{dir}}/{case}.ssh_config"}) for case in (
        "ssh-config-binary", "ssh-config-include-loop", "ssh-config-dev-zero", "ssh-config-hostname-injection",
        "ssh-config-proxycommand", "ssh-config-match-exec", "ssh-config-jump-loop", "ssh-config-bad-port")},
}

# The user's ssh config of the `ssh-config-*` cases above ({dir}: the corpus directory).
SSH_CONFIGS: dict[str, str | bytes] = {
    "ssh-config-binary": b"Host \xff\xfe\x00\n",
    "ssh-config-include-loop": "Include {dir}/ssh-config-include-loop.ssh_config {dir}/ssh-config-include-loop.ssh_config\n",
    "ssh-config-dev-zero": "Include /dev/zero\n",
    "ssh-config-hostname-injection": "Host 127.*\n  HostName $(touch pwned)\n",
    "ssh-config-proxycommand": "Host *\n  ProxyCommand sh -c 'touch pwned'\n",
    "ssh-config-match-exec": "Match exec \"touch pwned\"\n  User x\n",
    "ssh-config-jump-loop": "Host 127.*\n  ProxyJump gw\nHost gw\n  ProxyJump 127.0.0.2\n",
    "ssh-config-bad-port": "Host *\n  Port 99999\n",
}

CONFIG_CORPUS: dict[str, str | bytes | None] = {
    "missing-file": None,
    "empty": "",
    "binary": b"\x7fELF\x02\x01\x01\x00" + bytes(range(256)),
    "utf-16": GOOD_CONFIG.encode("utf-16"),
    "bad-yaml": "run_mode: train\nparallel_config: {data_parallel: 2\n",
    "top-level-list": "- run_mode: train\n",
    "no-parallel-config": "run_mode: train\nmodel:\n  model_config: {num_layers: 4}\n",
    "parallel-config-list": "run_mode: train\nparallel_config: [16, 1, 1]\n",
    "parallel-config-scalar": "run_mode: train\nparallel_config: 16\n",
    "model-config-list": "run_mode: train\nparallel_config: {data_parallel: 16}\nmodel: {model_config: [1]}\n",
    "data-parallel-string": "run_mode: train\nparallel_config: {data_parallel: 'x'}\n",
    "data-parallel-huge": "run_mode: train\nparallel_config: {data_parallel: " + "9" * 5_000 + "}\n",
    "alias-bomb": "run_mode: train\nx:\n" + "".join(f"  {line}\n" for line in _bomb().splitlines()),
    "deep-flow": "run_mode: " + "[" * 50_000 + "]" * 50_000 + "\n",
    "oversized": "run_mode: train\n" + ("# " + "y" * 1021 + "\n") * 9 * 1024,
}

# Every command that reads a deployment file: its arguments around -f FILE ({file}, {config}, {out}).
DEPLOYMENT_COMMANDS = {
    "validate": ["validate", "-f", "{file}"],
    "config check": ["config", "check", "{config}", "-f", "{file}"],
    "config derive": ["config", "derive", "{config}", "-f", "{file}", "--out", "{out}/derived.yaml"],
    "image ship": ["image", "ship", "train", "-f", "{file}"],
    "docker-run": ["docker-run", "-f", "{file}", "--out", "{out}/scripts"],
    "preflight": ["preflight", "-f", "{file}"],
    "launch": ["launch", "-f", "{file}", "--dry-run"],
    "status": ["status", "-f", "{file}"],
    "stop": ["stop", "-f", "{file}", "--dry-run"],
    "supervise": ["supervise", "-f", "{file}"],
    "events": ["events", "-f", "{file}"],
    "logs": ["logs", "-f", "{file}", "--collect", "--out", "{out}/logs"],
    "exec": ["exec", "-f", "{file}", "--dry-run", "--", "true"],
    "push": ["push", "-f", "{file}", "--dry-run", "{file}", "/tmp/ascend-run-push-test"],
    "chart values": ["chart", "values", "train", "-f", "{file}"],
    "ranktable": ["ranktable", "-f", "{file}"],
    "weights fetch": ["weights", "fetch", "-f", "{file}", "--dry-run"],
    "data prepare": ["data", "prepare", "-f", "{file}", "--dry-run"],
    "ask": ["ask", "hello", "-f", "{file}"],
}
# Every command that reads a MindFormers config, with a good deployment file where one is taken. (`data
# prepare --derive` calls the same derive_config once its conversion has run on a node; `launch` checks
# job.config with check_config once connected.)
CONFIG_COMMANDS = {
    "config check": ["config", "check", "{config}", "--npus", "16"],
    "config check -f": ["config", "check", "{config}", "-f", "{good}"],
    "config derive": ["config", "derive", "{config}", "--npus", "16", "--out", "{out}/derived.yaml"],
    "config derive --preset": ["config", "derive", "{config}", "--preset", "article-1b", "-f", "{good}",
                               "--out", "{out}/derived.yaml"],
}


def _write_corpus(root: Path, corpus: dict, suffix: str) -> dict[str, Path]:
    paths = {}
    for name, content in corpus.items():
        path = root / f"{name}{suffix}"
        if isinstance(content, bytes):
            path.write_bytes(content)
        elif isinstance(content, str):
            path.write_text(content.replace("{dir}", str(root)), encoding="utf-8")
        paths[name] = path
    return paths


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("corpus")
    (root / "a-directory").mkdir()
    (root / "broken-profile.yaml").write_text("name: [unclosed\n")
    (root / "out").mkdir()
    good = root / "good.yaml"
    good.write_text(json.dumps(GOOD))
    good_config = root / "good-config.yaml"
    good_config.write_text(GOOD_CONFIG)
    _write_corpus(root, SSH_CONFIGS, ".ssh_config")
    return {"root": root, "good": good, "good_config": good_config,
            "deployments": _write_corpus(root, DEPLOYMENT_CORPUS, ".yaml"),
            "configs": _write_corpus(root, CONFIG_CORPUS, ".mf.yaml")}


def _argv(template: list[str], **values: Path) -> list[str]:
    return [part.format(**{k: str(v) for k, v in values.items()}) for part in template]


def _assert_refused(result, case: str, file: Path, also: Path | None = None) -> None:
    """Exit 2, no traceback, a message that names the file (the base file for an extends: case, the ssh
    config for an ssh-config case; `also`: `config derive` checks what it derived and names that)."""
    assert result.rc == 2, f"{case}: exit {result.rc}\n{result.text}"
    assert "Traceback" not in result.text
    errors = [line for line in result.err.splitlines() if line.startswith("error: ")]
    assert errors, result.err
    named = any(name in errors[0] for name in (file.name, also and also.name, f"{case}.ssh_config") if name)
    assert named or (case.startswith("extends-") and ".yaml" in errors[0]), errors[0]


def _commands_reading(param: str) -> set[str]:
    found = set()

    def walk(command: click.Command, path: list[str]) -> None:
        if isinstance(command, click.Group):
            for name in command.list_commands(None):
                walk(command.get_command(None, name), [*path, name])
        elif any(p.name == param for p in command.params):
            found.add(" ".join(path))

    walk(cli, [])
    return found


def test_the_corpus_covers_every_command():
    assert _commands_reading("deployment_file") == set(DEPLOYMENT_COMMANDS)
    config_commands = {" ".join(argv[:2]) for argv in CONFIG_COMMANDS.values()}
    assert config_commands == {"config check", "config derive"} <= _commands_reading("deployment_file")


def test_the_good_files_pass(corpus):
    good, config = corpus["good"], corpus["good_config"]
    for argv in (["validate", "-f", str(good)], ["launch", "-f", str(good), "--dry-run"],
                 ["config", "check", str(config), "--npus", "16"]):
        result = run_cli(argv)
        assert result.rc == 0, result.text


@pytest.mark.parametrize("command", sorted(DEPLOYMENT_COMMANDS))
def test_every_command_refuses_every_broken_deployment(corpus, command):
    out = corpus["root"] / "out"
    for case, path in corpus["deployments"].items():
        argv = _argv(DEPLOYMENT_COMMANDS[command], file=path, config=corpus["good_config"], out=out)
        _assert_refused(run_cli(argv), case, path)
    assert not (corpus["root"] / "pwned").exists() and not Path("pwned").exists()


@pytest.mark.parametrize("command", sorted(CONFIG_COMMANDS))
def test_every_command_refuses_every_broken_config(corpus, command):
    out = corpus["root"] / "out"
    for case, path in corpus["configs"].items():
        argv = _argv(CONFIG_COMMANDS[command], config=path, good=corpus["good"], out=out)
        result = run_cli(argv)
        if case == "no-parallel-config" and command.startswith("config derive") and result.rc == 0:
            # derive may fit the job's NPUs by adding the section: then the config it writes has one
            assert "parallel_config" in (out / "derived.yaml").read_text(), result.text
            continue
        _assert_refused(result, case, path, also=out / "derived.yaml")


@pytest.mark.parametrize("case,command", [
    ("deep-flow", "validate"), ("binary", "config check"), ("huge-range", "launch"),
    ("launcher-script-option", "docker-run"), ("utf-16", "weights fetch"),
])
def test_as_a_user_runs_it(corpus, case, command):
    argv = _argv(DEPLOYMENT_COMMANDS[command], file=corpus["deployments"][case], config=corpus["good_config"],
                 out=corpus["root"] / "out")
    result = subprocess.run([sys.executable, "-m", "ascend_run", *argv], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error: ") and case in result.stderr
