"""The article's inference launch form across 4 simulated Atlas 800I A2 servers.

No Ascend model can run here: `examples/cpu-job/predict_standin.py` (a MindSpore CPU job) stands in for
run_deepseekv3_predict.py and `examples/cpu-job/msrun_launcher.sh` for MindFormers' launcher script (same
9-argument contract), both synced to the nodes by the launcher. One worker per server.
"""

from __future__ import annotations

import re

import pytest
from ruamel.yaml import YAML

from ascend_run.inputs.deployment import load_deployment
from ascend_run.sim.demo import cpu_job_dir
from ascend_run.steps.ship_image import ship_image
from ascend_run.transport.cluster import connect
from tests.conftest_e2e import job_leftovers, needs_root_tools, run_cli

pytestmark = pytest.mark.slow


def test_inference_launch_form_on_4_servers(docker_client, cpu_train_image, tmp_path_factory):
    needs_root_tools()
    from ascend_run.sim.cluster import SimCluster

    image = cpu_train_image  # MindSpore + msrun on the CPU; the predict stand-in needs nothing more
    cluster = SimCluster(tmp_path_factory.mktemp("infer") / "cluster")
    cluster.up(4, "atlas-800i-a2")
    try:
        job = cluster.dir / "infer-job.yaml"
        with job.open("w") as fh:
            YAML().dump({
                "extends": "cluster.yaml", "name": "infer", "image": image, "container": {"name": "deepseek-v3"},
                "env": {"HCCL_OP_EXPANSION_MODE": "AIV", "MS_ENABLE_LCCL": "off"},
                "job": {"launcher": "msrun_launcher", "launcher_script": "/opt/ascend-run/cpu-job/msrun_launcher.sh",
                        "command": "/opt/ascend-run/cpu-job/predict_standin.py", "local_workers": 1,
                        "master_port": 8888, "cluster_timeout": 300,
                        "sync": [{"source": str(cpu_job_dir()), "target": "/opt/ascend-run/cpu-job"}]},
            }, fh)
        dep = load_deployment(job)
        with connect(dep) as live:
            ship_image(live, docker_client, image)
        dry = run_cli("launch", "-f", str(job), "--dry-run")
        assert dry.stdout.count("msrun_launcher.sh /opt/ascend-run/cpu-job/predict_standin.py 4 1") == 4
        result = run_cli("launch", "-f", str(job))
        assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
        ranks = re.findall(r"rank (\d): world size (\d), HCCL_OP_EXPANSION_MODE=(\w+), MS_ENABLE_LCCL=(\w+)",
                           result.stdout)
        assert sorted(ranks) == [(str(r), "4", "AIV", "off") for r in range(4)]
        assert "生抽和老抽的区别是什么？" in result.stdout
        assert "finished on all 4 servers" in result.stderr
        assert not job_leftovers(cluster, "infer")
    finally:
        cluster.down()
