"""docker run scripts: the article's mapping from the profile, valid shell, hostile values inert."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ascend_run.cli import main
from ascend_run.errors import ConfigError
from ascend_run.inputs.deployment import deployment_from_data, load_deployment
from ascend_run.inputs.text import printable
from ascend_run.render.docker_run import docker_run_argv, render_script

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

ARTICLE_TRAIN_DEVICES = [f"--device=/dev/davinci{i}" for i in range(8)] + [
    "--device=/dev/davinci_manager", "--device=/dev/devmm_svm", "--device=/dev/hisi_hdc"]
ARTICLE_TRAIN_MOUNTS = {  # target: source, from the article's train `docker run`
    "/etc/localtime": "/etc/localtime",
    "/usr/local/Ascend/driver": "/usr/local/Ascend/driver",
    "/usr/local/bin/hccn_tool": "/usr/local/Ascend/driver/tools/hccn_tool",
    "/etc/ascend_install.info": "/etc/ascend_install.info",
    "/usr/slog": "/var/log/npu",
    "/usr/local/bin/npu-smi": "/usr/local/bin/npu-smi",
    "/etc/hccn.conf": "/etc/hccn.conf",
}


def mounts_of(argv: list[str]) -> dict[str, str]:
    out = {}
    for token in argv:
        if token.startswith("--mount="):
            fields = dict(f.split("=", 1) for f in token.removeprefix("--mount=").split(",") if "=" in f)
            out[fields["target"]] = fields["source"]
    return out


def test_train_matches_article():
    dep = load_deployment(EXAMPLES / "pretrain-1b-single.yaml")
    argv = docker_run_argv(dep, dep.nodes[0])
    assert [a for a in argv if a.startswith("--device=")] == ARTICLE_TRAIN_DEVICES
    mounts = mounts_of(argv)
    for target, source in ARTICLE_TRAIN_MOUNTS.items():
        assert mounts[target] == source
    assert {"--net=host", "--ipc=host"} <= set(argv)
    assert argv[argv.index("--user") + 1] == "root"
    assert "--privileged" not in argv
    assert argv[argv.index("--name") + 1] == "deepseek_v3"
    assert argv[argv.index("--hostname") + 1] == "train-0"


def test_infer_has_shm_and_env_and_distinct_hostnames():
    dep = load_deployment(EXAMPLES / "infer-671b-4nodes.yaml")
    argvs = [docker_run_argv(dep, n) for n in dep.nodes]
    hostnames = {a[a.index("--hostname") + 1] for a in argvs}
    assert len(hostnames) == 4
    first = argvs[0]
    assert first[first.index("--shm-size") + 1] == "500g" and "--ipc=host" not in first
    assert "HCCL_OP_EXPANSION_MODE=AIV" in first and "MS_ENABLE_LCCL=off" in first
    assert mounts_of(first)["/usr/local/Ascend/firmware"] == "/usr/local/Ascend/firmware"
    assert len([a for a in first if a.startswith("--device=")]) == 11


def test_npu_subset_and_privileged_opt_in():
    data = {"name": "x", "profile": "atlas-800t-a2", "image": "img:1", "container": {"privileged": True},
            "nodes": [{"address": "10.1.1.1", "npus": [2, 5]}]}
    dep = deployment_from_data(data)
    argv = docker_run_argv(dep, dep.nodes[0])
    assert [a for a in argv if a.startswith("--device=/dev/davinci") and a[-1].isdigit()] == [
        "--device=/dev/davinci2", "--device=/dev/davinci5"]
    assert "--privileged" in argv


def test_cli_writes_one_script_per_node_that_shellcheck_accepts(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["docker-run", "-f", str(EXAMPLES / "infer-671b-4nodes.yaml"), "--out", str(tmp_path)])
    assert exit_info.value.code == 0
    scripts = sorted(tmp_path.glob("run-*.sh"))
    assert [s.name for s in scripts] == [f"run-infer{i}.sh" for i in range(4)]
    for script in scripts:
        assert script.stat().st_mode & stat.S_IXUSR
        subprocess.run(["bash", "-n", str(script)], check=True)
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    subprocess.run(["shellcheck", *map(str, scripts)], check=True)


def test_cli_dry_run_prints_one_script(capsys):
    with pytest.raises(SystemExit):
        main(["docker-run", "-f", str(EXAMPLES / "infer-671b-4nodes.yaml"), "--node", "infer2", "--dry-run"])
    out = capsys.readouterr().out
    assert out.startswith("#!/usr/bin/env bash") and "--hostname infer2" in out and out.count("exec docker") == 1


# --- hostile values: whatever a user (or an attacker) writes, bash hands docker exactly that argv ----------

hostile_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"),
                       min_size=0, max_size=40)
hostile_path = hostile_text.filter(lambda s: "\n" not in s).map(lambda s: "/" + s.replace("\r", ""))
SPICY = ["$(touch /tmp/pwned)", "`id`", "a b", "'quote'", '"dq"', "x;rm -rf /", "\nnewline", "$HOME", "*", "\\"]


@pytest.fixture(scope="module")
def fake_docker(tmp_path_factory) -> Path:
    """A `docker` that writes the argv it received (NUL-separated) to $ARGV_OUT instead of running."""
    bindir = tmp_path_factory.mktemp("bin")
    stub = bindir / "docker"
    stub.write_text('#!/bin/bash\nprintf "%s\\0" "$@" > "$ARGV_OUT"\n')
    stub.chmod(0o755)
    return bindir


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(env_value=st.one_of(hostile_text, st.sampled_from(SPICY)),
       mount_src=st.one_of(hostile_path, st.sampled_from(["/" + s.replace("\n", "") for s in SPICY])),
       workdir=hostile_path,
       arg=st.one_of(hostile_text, st.sampled_from(SPICY)))
def test_hostile_values_reach_docker_verbatim(tmp_path, fake_docker, env_value, mount_src, workdir, arg):
    data = {"name": "x", "profile": "atlas-800i-a2", "image": "img:1",
            "container": {"workdir": workdir},
            "nodes": [{"address": "10.1.1.1"}], "env": {"EVIL": env_value},
            "mounts": [{"source": mount_src, "target": "/data"}]}
    try:
        dep = deployment_from_data(data)
    except ConfigError:  # refused only for a control character (env values may hold tabs and newlines)
        assert printable(mount_src + workdir) != mount_src + workdir or \
            printable(env_value.replace("\t", "").replace("\n", "")) != env_value.replace("\t", "").replace("\n", "")
        return
    node = dep.nodes[0]
    command = ["python", "-c", arg]
    script = tmp_path / "run.sh"
    script.write_text(render_script(dep, node, command))
    out = tmp_path / "argv"
    env = {**os.environ, "PATH": f"{fake_docker}:{os.environ['PATH']}", "ARGV_OUT": str(out)}
    subprocess.run(["bash", str(script)], check=True, env=env, cwd=tmp_path)
    seen = out.read_bytes().decode().split("\0")[:-1]
    assert seen == docker_run_argv(dep, node, command)[1:]
    assert not Path("/tmp/pwned").exists()
