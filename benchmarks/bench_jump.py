#!/usr/bin/env python3
"""One command on N servers behind a login node, against the same N servers reached directly (root; run
from the repository root).

    python benchmarks/bench_jump.py                  # 32 servers, 3 repeats
    python benchmarks/bench_jump.py --nodes 64 --repeat 5 --markdown

Two simulated clusters of N sshd-only servers (`sim up --no-docker`), one of them behind a bastion
(`--bastion`: reachable only through it). Contenders, each running `true` on every server:
- ascend-run through the bastion: `transport.fanout.run_on_nodes`, one SSH connection to the bastion shared
  by every server (a direct-tcpip channel each), host keys checked on both hops;
- ascend-run direct: the same on the other cluster;
- OpenSSH with `ProxyJump` (what `pdsh`/a shell loop over `ssh` does behind a bastion): N parallel `ssh -F
  ssh_config NODE true`, each opening its own connection to the bastion;
- OpenSSH direct.
Every client uses curve25519 key exchange and no GSSAPI (TESTBED.md); the servers' shells skip ~/.bashrc.
Also counted: connections accepted by the bastion's sshd (its child processes while the command runs).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ascend_run.inputs.deployment import load_deployment  # noqa: E402
from ascend_run.sim.cluster import SimCluster  # noqa: E402
from ascend_run.transport.fanout import run_on_nodes  # noqa: E402

SSH = ["ssh", "-o", "GSSAPIAuthentication=no", "-o", "KexAlgorithms=curve25519-sha256", "-o", "BatchMode=yes",
       "-o", "LogLevel=ERROR"]


def ascend_run(cluster: SimCluster) -> None:
    outcomes = run_on_nodes(load_deployment(cluster.deployment_file).nodes, ["true"])
    bad = [o for o in outcomes if not (o.ok and o.value.ok)]
    if bad:
        raise RuntimeError(f"{bad[0].node.name}: {bad[0].error}")


def openssh(cluster: SimCluster, via_config: bool) -> None:
    def one(node) -> None:
        if via_config:
            argv = [*SSH, "-F", str(cluster.ssh_config), node.name, "true"]
        else:
            argv = [*SSH, "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-o", "StrictHostKeyChecking=yes",
                    "-i", str(cluster.key_file), f"root@{node.address}", "true"]
        subprocess.run(argv, check=True, capture_output=True)

    with ThreadPoolExecutor(max_workers=len(cluster.nodes())) as pool:
        list(pool.map(one, cluster.nodes()))


def timed(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-jump-"))
    hidden, direct = SimCluster(root / "hidden"), SimCluster(root / "direct")
    try:
        hidden.up(args.nodes, docker=False, bastion=True)
        direct.up(args.nodes, docker=False)
        contenders = {
            "ascend-run through the bastion": lambda: ascend_run(hidden),
            "ascend-run direct": lambda: ascend_run(direct),
            "OpenSSH ProxyJump (one jump connection per server)": lambda: openssh(hidden, via_config=True),
            "OpenSSH direct": lambda: openssh(direct, via_config=False),
        }
        results = {name: [timed(fn) for _ in range(args.repeat)] for name, fn in contenders.items()}
    finally:
        hidden.down()
        direct.down()
    median = {name: statistics.median(times) for name, times in results.items()}
    rows = [(name, f"{median[name]:.2f} s (min {min(times):.2f})") for name, times in results.items()]
    ratios = [("ascend-run: through the bastion / direct",
               median["ascend-run through the bastion"] / median["ascend-run direct"]),
              ("through the bastion: ascend-run / OpenSSH ProxyJump",
               median["ascend-run through the bastion"] / median["OpenSSH ProxyJump (one jump connection per server)"])]
    if args.markdown:
        print(f"| {args.nodes} servers, `true` on each | wall (median of {args.repeat}) |\n|---|---|")
        for name, text in rows:
            print(f"| {name} | {text} |")
        print("\n| ratio | |\n|---|---|")
        for name, value in ratios:
            print(f"| {name} | {value:.2f} |")
    else:
        for name, text in rows + [(n, f"{v:.2f}") for n, v in ratios]:
            print(f"{name:55} {text}")


if __name__ == "__main__":
    main()
