"""The launch plan: what each node runs, as the article writes it by hand."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from ascend_run.inputs.deployment import deployment_from_data, load_deployment
from ascend_run.launch.plan import launch_plan

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def test_infer_matches_article_launch_lines():
    """Article: bash msrun_launcher.sh "run_deepseekv3_predict.py" 32 8 $master_ip 8888 k output/msrun_log False 300.

    Only JOIN differs: True, because msrun is the container's main process and must wait for its workers."""
    dep = load_deployment(EXAMPLES / "infer-671b-4nodes.yaml")
    plans = launch_plan(dep)
    for k, plan in enumerate(plans):
        assert plan.job_argv == ["bash", "msrun_launcher.sh", "run_deepseekv3_predict.py", "32", "8",
                                 "192.168.1.1", "8888", str(k), "output/msrun_log", "True", "300"]
        argv = plan.docker_argv
        assert "HCCL_OP_EXPANSION_MODE=AIV" in argv and "MS_ENABLE_LCCL=off" in argv
        assert argv[argv.index("--workdir") + 1] == "/data/model_path/DeepSeek-V3/examples"
        assert "--rm" in argv and argv[-len(plan.job_argv):] == plan.job_argv


def test_single_node_train_uses_8_workers():
    dep = load_deployment(EXAMPLES / "pretrain-1b-single.yaml")
    (plan,) = launch_plan(dep)
    assert plan.job_argv[:3] == ["bash", "scripts/msrun_launcher.sh", dep.job.command]
    assert plan.job_argv[3:8] == ["8", "8", "192.168.1.1", "8118", "0"]


def test_671b_on_128_nodes():
    dep = load_deployment(EXAMPLES / "pretrain-671b-128nodes.yaml")
    plans = launch_plan(dep)
    assert len(plans) == 128
    assert {p.values.worker_num for p in plans} == {1024}
    assert [p.values.node_rank for p in plans] == list(range(128))
    assert {p.values.master_addr for p in plans} == {"10.10.0.1"}


def test_plain_msrun_form_and_log_mount():
    data = {"name": "cpu", "profile": "atlas-800t-a2", "image": "img:1",
            "nodes": [{"address": "10.0.0.[1-2]"}],
            "job": {"launcher": "msrun", "command": "python train.py --steps '3 4'", "local_workers": 1,
                    "workdir": "/work", "master_port": 9000, "cluster_timeout": 60}}
    dep = deployment_from_data(data)
    plan = launch_plan(dep)[1]
    assert plan.job_argv == ["msrun", "--worker_num=2", "--local_worker_num=1", "--master_addr=10.0.0.1",
                             "--master_port=9000", "--node_rank=1", "--log_dir=output/msrun_log", "--join=True",
                             "--cluster_time_out=60", "python", "train.py", "--steps", "3 4"]
    mounts = [a for a in plan.docker_argv if a.startswith("--mount=")]
    assert "--mount=type=bind,source=/var/log/ascend-run/cpu,target=/work/output/msrun_log" in mounts
    assert shlex.split(shlex.join(plan.docker_argv)) == plan.docker_argv


def test_rank_table_is_mounted_read_only_and_named_in_the_env():
    data = {"name": "infer", "profile": "atlas-800i-a2", "image": "img:1",
            "nodes": [{"address": "10.0.0.[1-2]"}],
            "job": {"command": "run_deepseekv3_predict.py", "rank_table": "/data/hccl.json"}}
    for plan in launch_plan(deployment_from_data(data)):
        argv = plan.docker_argv
        assert "--mount=type=bind,source=/data/hccl.json,target=/data/hccl.json,readonly" in argv
        assert "RANK_TABLE_FILE=/data/hccl.json" in argv
    data["job"]["rank_table"] = "hccl.json"
    with pytest.raises(Exception, match="absolute"):
        deployment_from_data(data)
    del data["job"]["rank_table"]
    assert not any("RANK_TABLE_FILE" in a for a in launch_plan(deployment_from_data(data))[0].docker_argv)


@pytest.mark.parametrize("launcher", ["msrun_launcher", "msrun"])
def test_the_plan_for_many_nodes_is_each_nodes_own_plan(launcher):
    """launch_plan copies the first plan of nodes alike (same NPUs and env entry); each copy must be exactly
    what node_plan builds for that node, whatever differs between the entries."""
    from ascend_run.launch.plan import Overrides, job_mounts, node_plan, shell_lines, worker_num
    data = {"name": "many", "profile": "atlas-800t-a2", "image": "img:1", "env": {"A": "1"},
            "nodes": [{"address": "10.0.0.[1-3]", "name": "a[1-3]"},
                      {"address": "10.0.1.[1-3]", "npus": [0, 1, 2, 3, 4, 5, 6, 7], "env": {"B": "2"}},
                      {"address": "10.0.2.[1-2]", "name": "c[1-2]", "env": {"B": "2"}},
                      {"address": "10.0.3.1", "name": "io-ascend-run-rank-1"}],
            "job": {"launcher": launcher, "command": "run.py --x 'a b'", "rank_table": "/data/hccl.json"}}
    dep = deployment_from_data(data)
    for overrides in (None, Overrides(env={"RESUME": "1"}, rank_table_source="/srv/t.json")):
        shared = job_mounts(dep, overrides)
        assert launch_plan(dep, overrides) == [node_plan(dep, n, worker_num(dep), shared) for n in dep.nodes]
    plans = launch_plan(dep)
    assert [p.docker_argv[p.docker_argv.index("--hostname") + 1] for p in plans] == [n.name for n in dep.nodes]
    assert [p.shell_line() for p in plans] == [shlex.join(p.docker_argv) for p in plans]
    assert list(shell_lines(dep)) == [(p.node, shlex.join(p.docker_argv)) for p in plans]
    subset = [dep.nodes[i] for i in (4, 2, 7, 3)]  # what -w/-x leave, in any order: the same lines
    assert list(shell_lines(dep, subset)) == [(n, shlex.join(plans[n.rank].docker_argv)) for n in subset]
    assert sum(p.model is not None for p in plans) == 5, "the copies (a2, a3, 10-0-1-2, 10-0-1-3, c2)"
