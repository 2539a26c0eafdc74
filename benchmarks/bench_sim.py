#!/usr/bin/env python3
"""Bring-up and teardown times of `ascend-run sim` (root; run from the repository root).

    python benchmarks/bench_sim.py                 # the default scenarios, 3 repeats each
    python benchmarks/bench_sim.py --repeat 5 --markdown

Scenarios: 2 nodes with Docker (daemons only), 2 nodes with Docker and the base image loaded into every
daemon, 32 nodes sshd-only (`--no-docker`), and 32 parallel `ssh node hostname` against those 32 nodes
with the system client (clean shells: the nodes' sshd sets SHLVL=1, so bash skips ~/.bashrc).
The base image is built and imported into the kit's local engine before timing (cached per machine).
Targets from issue 3: 2 nodes with Docker < 20 s after the first image build; 32 nodes --no-docker < 10 s.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascend_run.sim.base_image import TAG, ensure_base_image
from ascend_run.sim.cluster import SimCluster

SSH = ["ssh", "-o", "GSSAPIAuthentication=no", "-o", "KexAlgorithms=curve25519-sha256",
       "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-o", "GlobalKnownHostsFile=/dev/null",
       "-o", "LogLevel=ERROR"]


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def ssh_all(cluster: SimCluster) -> None:
    def one(node) -> None:
        subprocess.run([*SSH, "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-i", str(cluster.key_file),
                        f"root@{node.address}", "hostname"], check=True, capture_output=True)

    nodes = cluster.nodes()
    with ThreadPoolExecutor(max_workers=len(nodes)) as pool:
        list(pool.map(one, nodes))


def scenario(root: Path, name: str, nodes: int, docker: bool, image: str | None, fan_out: bool) -> dict:
    cluster = SimCluster(root / name)
    row = {"scenario": name, "nodes": nodes}
    try:
        row["up"] = timed(lambda: cluster.up(nodes, docker=docker, image=image))
        if fan_out:
            row["ssh"] = timed(lambda: ssh_all(cluster))
    finally:
        row["down"] = timed(cluster.down)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true", help="print a Markdown table for docs/benchmarks.md")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_sim: needs root (network namespaces)", file=sys.stderr)
        return 1

    from ascend_run.engine.build import connect
    from ascend_run.engine.local import ensure_engine

    engine = ensure_engine()
    ensure_base_image(connect(engine.base_url))
    scenarios = [("docker-2", 2, True, None, False), ("docker-2+image", 2, True, TAG, False),
                 ("no-docker-32", 32, False, None, True)]
    results: dict[str, list[dict]] = {}
    with tempfile.TemporaryDirectory(prefix="bsim-", dir="/tmp") as tmp:
        for i in range(args.repeat):
            for name, nodes, docker, image, fan_out in scenarios:
                row = scenario(Path(tmp) / str(i), name, nodes, docker, image, fan_out)
                results.setdefault(name, []).append(row)
                print(" ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                      file=sys.stderr)

    def med(rows, key):
        values = [r[key] for r in rows if key in r]
        return f"{statistics.median(values):.2f} s (min {min(values):.2f})" if values else "-"

    load = os.getloadavg()[0]
    print(f"\n{platform.node()}: {os.cpu_count()} cores, kernel {platform.release()}, load average {load:.1f}, "
          f"{args.repeat} runs each, median (min)\n")
    if args.markdown:
        print("| scenario | nodes | up | 32 × ssh hostname | down |\n|---|---|---|---|---|")
        for name, rows in results.items():
            print(f"| {name} | {rows[0]['nodes']} | {med(rows, 'up')} | {med(rows, 'ssh')} | {med(rows, 'down')} |")
    else:
        for name, rows in results.items():
            print(f"{name:16} nodes={rows[0]['nodes']:3} up {med(rows, 'up')}  ssh {med(rows, 'ssh')}  "
                  f"down {med(rows, 'down')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
