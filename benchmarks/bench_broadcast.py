#!/usr/bin/env python3
"""One payload to 1, 2, 4, 8 servers over bandwidth-limited links: the pipelined broadcast against the star.

    python benchmarks/bench_broadcast.py                         # 256 MiB, 200mbit, 1/2/4/8 servers
    python benchmarks/bench_broadcast.py --mib 256 --rate 200mbit --counts 1,2,4,8 --repeat 5 --star-repeat 1

Root, from the repository root. Brings up a simulated cluster of sshd-only nodes whose links, and this
machine's, are shaped to RATE both ways (`sim up --link-rate`: tc tbf on every veth and on the bridge), so
the figures show the topology, not this machine's memory bandwidth or its busy CPU. Two scenarios, each
as the kit does it now and as it did before:

- from this machine (`image ship`): random bytes read here once. Pipelined: `transport.broadcast` with a
  `LocalStream`, every server staging the stream in a file, sha256-verified. Star: `benchmarks/star.py`,
  one SSH stream per server into `cat > file`.
- from node 0 (`weights fetch --from-node`): a file on node 0. Pipelined: a `FileSet` chain from node 0,
  nothing through this machine. Star: node 0's `cat` relayed through this machine to every server.

Times are wall-clock around the transfer alone (SSH connections are open, and have carried 32 MiB each,
before the clock starts), from starting the relays to every server verified and every relay gone.
"sent" is what left this machine, from the bridge interface's tx_bytes (`SimCluster.bridge_bytes`).

Every server stores the payload on its own /data (a tmpfs of its own, as the sim tests' weights), not on
this machine's disk: eight simulated servers writing 2 GB to one shared disk, which other jobs on this
machine also use, measured that disk (a write stalled by dirty-page throttling holds up every server
behind it in the chain), not the network. Other jobs' CPU load only ever adds time, so the table shows the
median and the minimum of the pipelined runs; the star, bound by one link, is run --star-repeat times.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

# each simulated server's own /data (tmpfs): count x payload of RAM at most, deleted after every run
STAGE = "/data/ascend-run-bench-{kind}-{node}.bin"
SOURCE_DIR = "/data/ascend-run-bench-source"


class Finishes:
    """When every relay listened and when each server had the whole payload (from the progress callbacks,
    ~0.2 s apart): the spread between the first and the last server is what the chain adds to one server."""

    def __init__(self) -> None:
        self.start = time.perf_counter()
        self.listening: float | None = None
        self.at: dict[str, float] = {}

    def __call__(self, progress) -> None:
        now = time.perf_counter()
        if self.listening is None and all(state.phase != "starting" for state in progress.nodes):
            self.listening = now
        for state in progress.nodes:
            if state.phase in ("verifying", "done") and state.name not in self.at:
                self.at[state.name] = now

    def text(self) -> str:
        if not self.at:
            return ""
        up = f"relays up {self.listening - self.start:.1f} s, " if self.listening else ""
        return (f", {up}first server complete at {min(self.at.values()) - self.start:.1f} s, the last "
                f"{max(self.at.values()) - min(self.at.values()):.2f} s later")


def pipelined_local(transports, nodes, payload: bytes, finishes: Finishes) -> None:
    from ascend_run.transport.broadcast import LocalStream, Member, StagedFile, broadcast, raise_unserved

    def chunks():
        for at in range(0, len(payload), 1 << 20):
            yield payload[at:at + (1 << 20)]

    members = [Member(n, transports[n.name], StagedFile(STAGE.format(kind="p", node=n.name))) for n in nodes]
    raise_unserved(broadcast(members, LocalStream(chunks, len(payload)), on_progress=finishes), "benchmark")


def star_local(transports, nodes, payload: bytes) -> None:
    from benchmarks.star import broadcast

    def produce(write) -> None:
        for at in range(0, len(payload), 1 << 20):
            write(payload[at:at + (1 << 20)])

    failed = broadcast(produce, {n.name: _sink(transports, n) for n in nodes})
    assert not failed, failed


def pipelined_node(transports, source, nodes, size: int, digest: str, finishes: Finishes) -> None:
    from ascend_run.transport.broadcast import FileEntry, FileSet, Member, broadcast, raise_unserved

    files = (FileEntry("payload.bin", size, digest),)
    members = [Member(n, transports[n.name], FileSet(STAGE.format(kind="d", node=n.name), files)) for n in nodes]
    origin = Member(source, transports[source.name], FileSet(SOURCE_DIR, files, source=True))
    raise_unserved(broadcast(members, origin, on_progress=finishes), "benchmark")


def star_node(transports, source, nodes) -> None:
    from benchmarks.star import broadcast

    def produce(write) -> None:
        transports[source.name].run(["cat", f"{SOURCE_DIR}/payload.bin"], on_stdout=write).check(source.name)

    failed = broadcast(produce, {n.name: _sink(transports, n) for n in nodes})
    assert not failed, failed


def _sink(transports, node):
    path = STAGE.format(kind="s", node=node.name)
    return lambda chunks: transports[node.name].run(["sh", "-c", 'cat > "$1"', "sh", path],
                                                    stdin=chunks).check(node.name)


def warm_up(transports, nodes) -> None:
    """32 MiB over every SSH connection first, one at a time: a fresh connection's first megabytes through
    the shaped link are slower (TCP's start-up), which would show as a slower first measurement."""
    for node in nodes:
        transports[node.name].run(["sh", "-c", "cat > /dev/null"], stdin=bytes(32 << 20)).check(node.name)


def clean(transports, nodes) -> None:
    for node in nodes:
        transports[node.name].run(["sh", "-c", f"rm -rf /data/ascend-run-bench-?-{node.name}.bin"], timeout=60)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=256, help="payload size")
    parser.add_argument("--rate", default="200mbit", help="every link's rate (tc), both ways")
    parser.add_argument("--counts", default="1,2,4,8", help="numbers of receiving servers")
    parser.add_argument("--repeat", type=int, default=1, help="pipelined runs per count")
    parser.add_argument("--star-repeat", type=int, default=1, help="star runs per count (link-bound: N x one)")
    parser.add_argument("--scenarios", default="local,node", help="local (image ship), node (weights spread)")
    args = parser.parse_args()
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.sim.cluster import SimCluster
    from ascend_run.transport.fanout import close_all, connect_all

    counts = [int(c) for c in args.counts.split(",")]
    scenarios = args.scenarios.split(",")
    payload = os.urandom(args.mib << 20)
    digest = hashlib.sha256(payload).hexdigest()
    rows: dict[tuple[str, str, int], list[tuple[float, int]]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-bc-", dir="/tmp") as tmp:
        cluster = SimCluster(Path(tmp) / "c")
        cluster.up(max(counts) + 1, "atlas-800t-a2", docker=False, link_rate=args.rate)
        try:
            dep = load_deployment(cluster.deployment_file)
            transports = connect_all(dep)
            source, *servers = dep.nodes
            if "node" in scenarios:
                transports[source.name].run(["sh", "-c", f"mkdir -p {SOURCE_DIR} && cat > {SOURCE_DIR}/payload.bin"],
                                            stdin=payload).check(source.name)
            try:
                warm_up(transports, servers)
                for repeat in range(args.repeat):
                    for count in counts:
                        nodes = servers[:count]
                        runs = []
                        finishes = Finishes()
                        if "local" in scenarios:
                            runs += [("from this machine", "pipelined",
                                      lambda: pipelined_local(transports, nodes, payload, finishes)),
                                     ("from this machine", "star", lambda: star_local(transports, nodes, payload))]
                        if "node" in scenarios:
                            runs += [("from node 0", "pipelined",
                                      lambda: pipelined_node(transports, source, nodes, len(payload), digest,
                                                             finishes)),
                                     ("from node 0", "star", lambda: star_node(transports, source, nodes))]
                        for scenario, how, run in runs:
                            if how == "star" and repeat >= args.star_repeat:
                                continue
                            finishes.__init__()
                            before = cluster.bridge_bytes()["sent"]
                            started = time.perf_counter()
                            run()
                            seconds = time.perf_counter() - started
                            sent = cluster.bridge_bytes()["sent"] - before
                            rows.setdefault((scenario, how, count), []).append((seconds, sent))
                            clean(transports, nodes)
                            tail = finishes.text() if how == "pipelined" else ""
                            print(f"{scenario:18} {how:9} {count} servers: {seconds:6.2f} s, sent "
                                  f"{sent / len(payload):.3f} x payload{tail} (load {os.getloadavg()[0]:.1f})",
                                  file=sys.stderr)
            finally:
                transports[source.name].run(["rm", "-rf", SOURCE_DIR], timeout=60)
                close_all(transports)
        finally:
            cluster.down()
    report(rows, counts, args)
    print(f"\nload average (1 min) at the end: {os.getloadavg()[0]:.1f}", file=sys.stderr)


def report(rows: dict, counts: list[int], args) -> None:
    """Pipelined: median (min) of the runs and both ratios to 1 server; star: median; bytes: the largest."""
    size = args.mib << 20
    print(f"| scenario ({args.mib} MiB, links {args.rate}) | servers | pipelined, median (min) of {args.repeat} | "
          "× 1 server, medians (mins) | star | × 1 server | sent by this machine, pipelined | star |")
    print("|---|---|---|---|---|---|---|---|")
    for scenario in dict.fromkeys(k[0] for k in rows):
        first = rows[(scenario, "pipelined", counts[0])]
        base_med, base_min = statistics.median(x for x, _ in first), min(x for x, _ in first)
        base_star = statistics.median(x for x, _ in rows[(scenario, "star", counts[0])])
        for count in counts:
            p, s = rows[(scenario, "pipelined", count)], rows[(scenario, "star", count)]
            pt, pm, st = statistics.median(x for x, _ in p), min(x for x, _ in p), statistics.median(x for x, _ in s)
            pb, sb = max(b for _, b in p), max(b for _, b in s)
            print(f"| {scenario} | {count} | {pt:.1f} s ({pm:.1f}) | {pt / base_med:.2f} ({pm / base_min:.2f}) | "
                  f"{st:.1f} s | {st / base_star:.2f} | {pb / size:.3f} × | {sb / size:.3f} × |")


if __name__ == "__main__":
    main()
