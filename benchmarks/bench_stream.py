#!/usr/bin/env python3
"""Bulk streams over SSH, the two the kit does: one local stream to N nodes (`image ship`) and one node's
stream relayed to N nodes (`weights fetch --from-node`). ascend-run's paramiko transport against OpenSSH.

    python benchmarks/bench_stream.py                    # 3 targets, 1 GiB, 3 runs; prints a table
    python benchmarks/bench_stream.py --targets 3 --mib 512 --repeat 3 --markdown

Root, from the repository root. Brings up a simulated cluster of sshd-only nodes (`--no-docker`). The
payload is zeros (`head -c`, no compression anywhere) and the nodes discard it (`cat > /dev/null`), so the
numbers are the transport's, not a disk's or `docker load`'s. Contenders, order rotated between repeats:

- ascend-run: the star (`benchmarks/star.py`, what ship/spread did before the pipelined broadcast) +
  `SSHTransport.run(stdin=…)` / `run(on_stdout=…)`;
- ascend-run with paramiko's defaults (32 KiB packets, aes128-ctr first): the code before the tuning;
- OpenSSH: `tee` into N `ssh` processes (fan-out), `ssh node0 … | tee … | ssh` (relay): what a person
  would type, C all the way.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SSH = ["ssh", "-o", "GSSAPIAuthentication=no", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
       "-o", "GlobalKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
CONTENDERS = ("ascend-run", "ascend-run, paramiko defaults", "OpenSSH")
SINK = ["sh", "-c", "cat > /dev/null"]


def ascend_run(dep, size: int, relay: bool, defaults: bool) -> float:
    """Time one fan-out (or relay) with the kit's own code."""
    import paramiko

    from ascend_run.transport import ssh as ssh_module
    from ascend_run.transport.fanout import close_all, connect_all
    from benchmarks.star import broadcast

    tuned = ssh_module._bulk_transport
    if defaults:
        ssh_module._bulk_transport = lambda sock, **kw: _default_transport(paramiko, ssh_module, sock, **kw)
    try:
        transports = connect_all(dep)
    finally:
        ssh_module._bulk_transport = tuned
    source, *targets = dep.nodes
    chunk = bytes(1 << 20)
    try:
        started = time.perf_counter()
        if relay:
            def produce(write) -> None:
                transports[source.name].run(["head", "-c", str(size), "/dev/zero"], on_stdout=write).check(source.name)
        else:
            def produce(write) -> None:
                for _ in range(size >> 20):
                    write(chunk)
        receivers = targets if relay else list(dep.nodes)
        failed = broadcast(produce, {n.name: (lambda n: lambda chunks: transports[n.name].run(
            SINK, stdin=chunks).check(n.name))(n) for n in receivers})
        assert not failed, failed
        return time.perf_counter() - started
    finally:
        close_all(transports)


def _default_transport(paramiko, ssh_module, sock, **kwargs):
    transport = paramiko.Transport(sock, **kwargs)
    transport.default_window_size = ssh_module.WINDOW_BYTES  # the window was already tuned before
    return transport


def openssh(cluster, dep, size: int, relay: bool) -> float:
    """The same with OpenSSH clients and `tee`, as a shell one-liner."""
    base = [*SSH, "-o", f"UserKnownHostsFile={cluster.known_hosts}", "-i", str(cluster.key_file)]

    def ssh(node, command: str) -> str:
        return shlex.join([*base, "-p", str(node.ssh.port), f"{node.ssh.user}@{node.address}", command])

    source, *targets = dep.nodes
    receivers = targets if relay else list(dep.nodes)
    sinks = [ssh(n, "cat > /dev/null") for n in receivers]
    head = ssh(source, f"head -c {size} /dev/zero") if relay else f"head -c {size} /dev/zero"
    # named pipes rather than >(…): `wait` then covers every ssh, not just the last one
    fifos = " ".join(f'"$d/{i}"' for i in range(len(sinks) - 1))
    line = ('set -e -o pipefail; d=$(mktemp -d); '
            + "".join(f'mkfifo "$d/{i}"; {sink} < "$d/{i}" & ' for i, sink in enumerate(sinks[:-1]))
            + f'{head} | tee {fifos} | {sinks[-1]}; wait; rm -r "$d"')
    started = time.perf_counter()
    subprocess.run(["bash", "-c", line], check=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--targets", type=int, default=3, help="nodes receiving the stream")
    parser.add_argument("--mib", type=int, default=1024, help="stream size")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.sim.cluster import SimCluster

    size = args.mib << 20
    with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
        cluster = SimCluster(Path(tmp) / "c")
        cluster.up(args.targets + 1, "atlas-800t-a2", docker=False)
        try:
            dep = load_deployment(cluster.deployment_file)
            fan_dep = _first(dep, args.targets)
            results: dict[tuple[str, str], list[float]] = {}
            for repeat in range(args.repeat):
                order = CONTENDERS[repeat % 3:] + CONTENDERS[:repeat % 3]
                for scenario, relay in (("fan-out (image ship)", False), ("relay (weights spread)", True)):
                    scenario_dep = dep if relay else fan_dep
                    for name in order:
                        if name == "OpenSSH":
                            seconds = openssh(cluster, scenario_dep, size, relay)
                        else:
                            seconds = ascend_run(scenario_dep, size, relay, defaults=name != "ascend-run")
                        results.setdefault((scenario, name), []).append(seconds)
        finally:
            cluster.down()
    report(results, args)


def _first(dep, count: int):
    """The deployment's first `count` nodes: the fan-out sends from here, so node 0 is not a source."""
    import dataclasses

    return dataclasses.replace(dep, nodes=dep.nodes[:count])


def report(results: dict, args) -> None:
    mib = args.mib
    rows = []
    for scenario in ("fan-out (image ship)", "relay (weights spread)"):
        peer = statistics.median(results[(scenario, "OpenSSH")])
        for name in CONTENDERS:
            times = results[(scenario, name)]
            med = statistics.median(times)
            rows.append((scenario, name, med, min(times), mib * args.targets / med, med / peer))
    if args.markdown:
        print(f"| stream ({mib} MiB to {args.targets} nodes) | contender | median | min | MiB/s delivered | "
              "× OpenSSH |\n|---|---|---|---|---|---|")
        for scenario, name, med, low, rate, ratio in rows:
            print(f"| {scenario} | {name} | {med:.2f} s | {low:.2f} s | {rate:.0f} | {ratio:.2f} |")
    else:
        for scenario, name, med, low, rate, ratio in rows:
            print(f"{scenario:24} {name:32} {med:6.2f} s (min {low:.2f})  {rate:5.0f} MiB/s  {ratio:.2f}x OpenSSH")


if __name__ == "__main__":
    main()
