"""`ascend-run ranktable` on a simulated 4 × Atlas 800I A2 cluster (sshd only: no Docker needed)."""

from __future__ import annotations

import json

import pytest

from ascend_run.npu.tools import parse_hccn_conf
from tests.conftest_e2e import run_cli
from tests.conftest_sim import ssh

pytestmark = pytest.mark.slow


def test_rank_table_matches_every_hccn_conf_and_refuses_a_down_link(sim_cluster, tmp_path):
    cluster = sim_cluster(nodes=4, profile="atlas-800i-a2", docker=False)
    out = tmp_path / "hccl.json"
    result = run_cli("ranktable", "-f", str(cluster.deployment_file), "--out", str(out))
    assert result.returncode == 0, result.stderr
    table = json.loads(out.read_text())
    assert table["server_count"] == "4" and table["status"] == "completed"
    assert [s["server_id"] for s in table["server_list"]] == [n.address for n in cluster.nodes()]
    assert [d["rank_id"] for s in table["server_list"] for d in s["device"]] == [str(r) for r in range(32)]
    for node, server in zip(cluster.nodes(), table["server_list"]):
        conf = parse_hccn_conf(ssh(cluster, node, "cat /etc/hccn.conf").stdout)
        assert {int(d["device_id"]): d["device_ip"] for d in server["device"]} == conf
    assert run_cli("ranktable", "-f", str(cluster.deployment_file), "--check", str(out)).returncode == 0

    cluster.set_link("sim-node-2", 6, "DOWN")
    result = run_cli("ranktable", "-f", str(cluster.deployment_file), "--out", str(tmp_path / "again.json"))
    assert result.returncode == 2
    assert "sim-node-2: NPU 6" in result.stderr and "DOWN" in result.stderr
    assert not (tmp_path / "again.json").exists()
