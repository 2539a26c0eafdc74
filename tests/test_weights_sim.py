"""`ascend-run weights fetch --from-node` on a simulated cluster (sshd only)."""

from __future__ import annotations

import pytest

from tests.conftest_e2e import run_cli
from tests.conftest_sim import ssh

pytestmark = pytest.mark.slow

WEIGHTS = "/data/model_path"
MAKE = (f"mkdir -p {WEIGHTS}/sub && head -c 3000000 /dev/urandom > {WEIGHTS}/model-00001.safetensors && "
        f"head -c 1000000 /dev/urandom > {WEIGHTS}/sub/model-00002.safetensors && "
        f"echo '{{}}' > {WEIGHTS}/config.json")
SUMS = f"cd {WEIGHTS} && find . -type f | sort | xargs sha256sum"


def test_spread_from_node_checks_sums_skips_copies_and_refuses_a_full_disk(sim_cluster):
    cluster = sim_cluster(nodes=4, profile="atlas-800i-a2", docker=False)
    nodes = cluster.nodes()
    ssh(cluster, nodes[0], MAKE)
    dep_file = str(cluster.deployment_file)

    cluster.fill_disk(nodes[2].name, "/data", free="1M")
    full = run_cli("weights", "fetch", "-f", dep_file, "--to", WEIGHTS, "--from-node")
    assert full.returncode != 0 and nodes[2].name in full.stderr and "nothing copied" in full.stderr
    for node in nodes[1:]:
        assert ssh(cluster, node, f"ls {WEIGHTS} 2>/dev/null | wc -l").stdout.strip() == "0"
    cluster.free_disk(nodes[2].name, "/data")

    # node 1 already has config.json; node 3 has a damaged first shard: each receives only what it lacks
    ssh(cluster, nodes[1], f"mkdir -p {WEIGHTS} && echo '{{}}' > {WEIGHTS}/config.json")
    ssh(cluster, nodes[3], f"mkdir -p {WEIGHTS} && head -c 3000000 /dev/zero > {WEIGHTS}/model-00001.safetensors")
    first = run_cli("weights", "fetch", "-f", dep_file, "--to", WEIGHTS, "--from-node")
    assert first.returncode == 0, first.stderr
    expected = ssh(cluster, nodes[0], SUMS).stdout
    assert expected.count("\n") == 3
    for node in nodes[1:]:
        assert ssh(cluster, node, SUMS).stdout == expected
    assert f"{nodes[1].name}: copied 2 of 3 files, sha256 verified" in first.stderr
    assert f"{nodes[2].name}: copied 3 of 3 files, sha256 verified" in first.stderr
    assert f"{nodes[3].name}: copied 3 of 3 files, sha256 verified" in first.stderr

    second = run_cli("weights", "fetch", "-f", dep_file, "--to", WEIGHTS, "--from-node")
    assert second.returncode == 0 and "already have the 3 files" in second.stderr
    assert "0 file copies" in second.stderr

    # storage every node mounts (here the host's /srv, which the simulated servers share): nothing to copy
    shared = f"/srv/ascend-run-test-{cluster.net.third_octet}/model_path"
    ssh(cluster, nodes[0], f"mkdir -p {shared} && head -c 1000 /dev/urandom > {shared}/model.safetensors")
    try:
        same = run_cli("weights", "fetch", "-f", dep_file, "--to", shared, "--from-node")
        assert same.returncode == 0, same.stderr
        for node in nodes[1:]:
            assert f"{node.name}: sees {nodes[0].name}'s {shared} (shared storage): nothing to copy" in same.stderr
        assert ssh(cluster, nodes[1], f"ls -A {shared}").stdout.split() == ["model.safetensors"]  # no probe left
    finally:
        ssh(cluster, nodes[0], f"rm -rf {shared.rsplit('/', 1)[0]}")
