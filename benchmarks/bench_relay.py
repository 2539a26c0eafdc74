#!/usr/bin/env python3
"""The broadcast relay under a flood of idle strangers, and what `--encrypt` costs on shaped links.

    python benchmarks/bench_relay.py flood  --mib 256 --strangers 1000 --repeat 5
    python benchmarks/bench_relay.py encrypt --mib 128 --rates 200mbit,1gbit --repeat 3     # root (sim)

flood: two real relay agents on this machine (127.0.0.1), started as the kit starts them: a source fed the
payload over its stdin (staged in /dev/shm), and a puller that proves the transfer's secret and pulls it
all. Quiet and flooded runs alternate; before a flooded run this process opens STRANGERS TCP connections
to the source's port that never send a byte (what stalled a broadcast before issue 22) and keeps them open
until the pull is done. The ratio is the flooded pull's speed over the quiet pull's speed, medians of the
same run (target >= 0.9).

encrypt: a simulated cluster of sshd-only servers whose links, and this machine's, are shaped to RATE both
ways (`sim up --link-rate`, tc tbf on every veth and on the bridge), as bench_broadcast.py does. A file on
node 0 goes down a chain node 0 -> n1 -> n2 (`weights fetch --from-node`: every hop server to server),
with and without `--encrypt` (TLS with the transfer's pinned ephemeral certificate), alternating; times run
from starting the relays to every server verified.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


# --- flood ------------------------------------------------------------------------------------------------------

def agent(name: str, store: str, source: Path | None = None) -> tuple[subprocess.Popen, int]:
    from ascend_run.transport import relay

    text = source.read_bytes() if source is not None else relay.agent_source()
    config = {"transfer": "bench", "secret": "cd" * 32, "node": name, "listen": "127.0.0.1", "tls": None,
              "store": {"kind": "file", "path": store}}
    proc = subprocess.Popen([sys.executable, *relay.relay_argv(text)[1:]], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    proc.stdin.write(text + json.dumps(config).encode() + b"\n")
    proc.stdin.flush()
    event = json.loads(proc.stdout.readline())
    assert event["event"] == "listening", event
    return proc, event["port"]


def until(proc: subprocess.Popen, *kinds: str) -> dict:
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("relay ended")
        event = json.loads(line)
        if event["event"] in kinds:
            return event


def pull_once(port: int, store: str) -> float:
    puller, _ = agent("puller", store)
    try:
        started = time.perf_counter()
        puller.stdin.write(json.dumps({"op": "pull", "host": "127.0.0.1", "port": port, "name": "source"}).encode()
                           + b"\n")
        puller.stdin.flush()
        event = until(puller, "complete", "failed", "error")
        seconds = time.perf_counter() - started
        assert event["event"] == "complete", event
        puller.stdin.write(b'{"op": "exit", "keep": false}\n')
        puller.stdin.flush()
        puller.wait(30)
        return seconds
    finally:
        puller.kill()
        puller.wait()


def flood(args) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, args.strangers + 256)), hard))
    payload = os.urandom(args.mib << 20)
    with tempfile.TemporaryDirectory(prefix="bench-relay-", dir="/dev/shm") as tmp:
        source, port = agent("source", f"{tmp}/source", args.agent)
        try:
            source.stdin.write(b'{"op": "feed"}\n' + json.dumps({"op": "data", "offset": 0, "n": len(payload)}).encode()
                               + b"\n" + payload + json.dumps({"op": "end", "total": len(payload)}).encode() + b"\n")
            source.stdin.flush()
            until(source, "complete")
            # its later events are read and dropped, as the kit reads them: a relay writing to a full pipe stalls
            import threading

            threading.Thread(target=lambda: [None for _ in source.stdout], daemon=True).start()
            pull_once(port, f"{tmp}/warm")  # page cache and TCP warmed before anything is timed
            quiet, flooded, opened = [], [], []
            for repeat in range(args.repeat):
                quiet.append(pull_once(port, f"{tmp}/q{repeat}"))
                strangers = []
                try:
                    for _ in range(args.strangers):
                        strangers.append(socket.create_connection(("127.0.0.1", port), timeout=10))
                    opened.append(len(strangers))
                    time.sleep(0.5)
                    threads = _threads(source.pid)
                    flooded.append(pull_once(port, f"{tmp}/f{repeat}"))
                finally:
                    for sock in strangers:
                        sock.close()
                print(f"run {repeat + 1}: quiet {quiet[-1]:.3f} s, with {opened[-1]} idle strangers "
                      f"{flooded[-1]:.3f} s (source relay threads {threads}; load {os.getloadavg()[0]:.1f})",
                      file=sys.stderr)
        finally:
            source.kill()
            source.wait()
    mib = args.mib
    q, f = statistics.median(quiet), statistics.median(flooded)
    print(f"\n| pull of {mib} MiB over loopback | median (min) of {args.repeat} | speed |\n|---|---|---|")
    print(f"| quiet | {q:.3f} s ({min(quiet):.3f}) | {mib / q:.0f} MiB/s |")
    print(f"| {args.strangers} idle connections open | {f:.3f} s ({min(flooded):.3f}) | {mib / f:.0f} MiB/s |")
    print(f"\nflooded / quiet speed: {q / f:.2f} (medians), {min(quiet) / min(flooded):.2f} (mins)")


def _threads(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("Threads:"):
            return int(line.split()[1])
    return -1


# --- encrypt ----------------------------------------------------------------------------------------------------

def encrypt(args) -> None:
    from ascend_run.inputs.deployment import load_deployment
    from ascend_run.sim.cluster import SimCluster
    from ascend_run.transport.broadcast import FileEntry, FileSet, Member, broadcast, raise_unserved
    from ascend_run.transport.fanout import close_all, connect_all

    payload = os.urandom(args.mib << 20)
    digest = hashlib.sha256(payload).hexdigest()
    files = (FileEntry("payload.bin", len(payload), digest),)
    results: dict[tuple[str, bool], list[float]] = {}
    for rate in args.rates.split(","):
        with tempfile.TemporaryDirectory(prefix="bench-enc-", dir="/tmp") as tmp:
            cluster = SimCluster(Path(tmp) / "c")
            cluster.up(3, "atlas-800t-a2", docker=False, link_rate=rate)
            try:
                dep = load_deployment(cluster.deployment_file)
                transports = connect_all(dep)
                source, *servers = dep.nodes
                src_dir = "/data/ascend-run-bench-enc-source"
                transports[source.name].run(["sh", "-c", f'mkdir -p {src_dir} && cat > {src_dir}/payload.bin'],
                                            stdin=payload).check(source.name)
                try:
                    for repeat in range(args.repeat):
                        for tls in (False, True):
                            members = [Member(n, transports[n.name],
                                              FileSet(f"/data/ascend-run-bench-enc-{n.name}", files)) for n in servers]
                            origin = Member(source, transports[source.name], FileSet(src_dir, files, source=True))
                            started = time.perf_counter()
                            raise_unserved(broadcast(members, origin, encrypt=tls), "benchmark")
                            seconds = time.perf_counter() - started
                            results.setdefault((rate, tls), []).append(seconds)
                            for n in servers:
                                stage = f"/data/ascend-run-bench-enc-{n.name}"
                                transports[n.name].run(["rm", "-rf", stage], timeout=60)
                            print(f"{rate:8} {'--encrypt' if tls else 'plain':9} run {repeat + 1}: {seconds:6.2f} s "
                                  f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr)
                finally:
                    transports[source.name].run(["rm", "-rf", src_dir], timeout=60)
                    close_all(transports)
            finally:
                cluster.down()
    print(f"\n| {args.mib} MiB, node 0 -> n1 -> n2, links | plain, median (min) | --encrypt, median (min) | "
          "--encrypt / plain |\n|---|---|---|---|")
    for rate in args.rates.split(","):
        plain, tls = results[(rate, False)], results[(rate, True)]
        print(f"| {rate} | {statistics.median(plain):.2f} s ({min(plain):.2f}) | {statistics.median(tls):.2f} s "
              f"({min(tls):.2f}) | {statistics.median(tls) / statistics.median(plain):.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("flood")
    one.add_argument("--mib", type=int, default=256)
    one.add_argument("--strangers", type=int, default=1000)
    one.add_argument("--repeat", type=int, default=5)
    one.add_argument("--agent", type=Path, help="the source's relay_agent.py (default: this checkout's)")
    two = sub.add_parser("encrypt")
    two.add_argument("--mib", type=int, default=128)
    two.add_argument("--rates", default="200mbit,1gbit")
    two.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    flood(args) if args.what == "flood" else encrypt(args)


if __name__ == "__main__":
    main()
