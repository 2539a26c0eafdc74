"""`ascend-run push` to three simulated servers, each with its own /data (a tmpfs of its mount namespace): a
64 MiB folder arrives with identical sha256 everywhere, and this machine sends it once (its bridge interface
carries about 64 MiB, not 3 × 64 MiB: the servers feed each other)."""

from __future__ import annotations

import json
import os

import pytest

from tests.conftest_e2e import run_cli
from tests.conftest_sim import ssh
from tests.test_broadcast_sim import relays_and_ports

DEST = "/data/pushed"
SUMS = f"cd {DEST} && find . -type f | sort | xargs sha256sum"


@pytest.mark.slow
@pytest.mark.root
def test_push_a_64_mib_folder_to_three_servers_in_one_stream(sim_cluster, tmp_path):
    cluster = sim_cluster(nodes=3, docker=False)
    src = tmp_path / "folder"
    (src / "sub").mkdir(parents=True)
    for i in range(7):
        (src / f"part{i}.bin").write_bytes(os.urandom(8 << 20))
    (src / "sub" / "last.bin").write_bytes(os.urandom(8 << 20))
    size = 64 << 20
    before = cluster.bridge_bytes()["sent"]
    done = run_cli("push", "-f", str(cluster.deployment_file), "-o", "json", str(src), DEST)
    sent = cluster.bridge_bytes()["sent"] - before
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    expected = "".join(sorted(f"{report['sha256'][name]}  ./{name}\n" for name in report["sha256"]))
    for node in cluster.nodes():
        assert "".join(sorted(ssh(cluster, node, SUMS).stdout.splitlines(keepends=True))) == expected, node.name
    assert [s["bytes"] for s in report["servers"]] == [size] * 3 and all(s["seconds"] > 0 for s in report["servers"])
    print(f"push: 64 MiB to 3 servers; this machine sent {sent:,} bytes ({sent / size:.3f} x the folder); "
          f"per server {[s['seconds'] for s in report['servers']]} s")
    assert size <= sent < 1.2 * size, f"this machine sent {sent:,} bytes for a {size:,}-byte folder"
    assert relays_and_ports(cluster) == {}

    again = run_cli("push", "-f", str(cluster.deployment_file), "-o", "json", str(src), DEST)
    assert again.returncode == 0 and all(s["files_written"] == 0 and s["files_skipped"] == 8
                                         for s in json.loads(again.stdout)["servers"])
