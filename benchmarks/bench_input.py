#!/usr/bin/env python3
"""How long `validate` and `launch --dry-run` take on a 51,200-node deployment file (issue 13: each < 3 s).

    python benchmarks/bench_input.py                      # both shapes, 3 repeats, a table
    python benchmarks/bench_input.py --nodes 16384 --repeat 1 --timeout 120

Two shapes of the same cluster: `ranges` (one `nodes:` entry, `10.[0-199].[0-255].1` zipped with
`node[00000-51199]`) and `listed` (one entry per node, the file a generator would write, ~2.5 MB).
Each command runs as a user runs it, `python -m ascend_run …` in a fresh process, output to /dev/null;
the peer is that same fresh Python parsing the file with ruamel (round-trip, as the kit does) and
nothing else, so the ratio says what the kit adds to reading the YAML. Timed out runs show as `> T s`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAD = """name: bench
profile: atlas-800t-a2
image: registry.local/ds3-train:1
ssh: {user: root, port: 22, known_hosts: /tmp/known_hosts}
mounts: ["/data:/home/work/dataset"]
env: {HCCL_OP_EXPANSION_MODE: AIV}
job: {command: "run_mindformer.py --config x.yaml", master_port: 8118}
"""


def write_ranges(path: Path, nodes: int) -> None:
    per = 256
    rows = nodes // per
    assert rows * per == nodes, "--nodes must be a multiple of 256"
    path.write_text(HEAD + f"nodes:\n  - {{address: '10.[0-{rows - 1}].[0-255].1', "
                           f"name: 'node[{0:05d}-{nodes - 1:05d}]'}}\n")


def write_listed(path: Path, nodes: int) -> None:
    entries = (f"  - {{address: 10.{i >> 16}.{(i >> 8) & 255}.{i & 255}, name: node{i:05d}}}\n"
               for i in range(nodes))
    path.write_text(HEAD + "nodes:\n" + "".join(entries))


def run(argv: list[str], timeout: float, env: dict) -> float | None:
    started = time.perf_counter()
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=timeout,
                       cwd=ROOT, env=env)
    except subprocess.TimeoutExpired:
        return None
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=51200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--tree", type=Path, default=ROOT, help="checkout whose ascend_run to time")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(args.tree.resolve())}
    peer = [sys.executable, "-c", "import sys; from ruamel.yaml import YAML; "
            "YAML(typ='rt').load(open(sys.argv[1], encoding='utf-8').read())"]
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{args.nodes} nodes, tree {args.tree}, median (min) of {args.repeat}\n")
        print("| file | size | ruamel load (peer) | validate | ratio | launch --dry-run | ratio |")
        print("|---|---|---|---|---|---|---|")
        for shape, writer in (("ranges", write_ranges), ("listed", write_listed)):
            path = Path(tmp) / f"{shape}.yaml"
            writer(path, args.nodes)
            row = {}
            for label, argv in (("peer", [*peer, str(path)]),
                                ("validate", [sys.executable, "-m", "ascend_run", "validate", "-f", str(path)]),
                                ("dry", [sys.executable, "-m", "ascend_run", "launch", "-f", str(path),
                                         "--dry-run"])):
                times = [run(argv, args.timeout, env) for _ in range(args.repeat)]
                row[label] = None if None in times else (statistics.median(times), min(times))
            print(f"| {shape} | {path.stat().st_size / 1e6:.1f} MB | {_cell(row['peer'], args.timeout)} | "
                  f"{_cell(row['validate'], args.timeout)} | {_ratio(row['validate'], row['peer'])} | "
                  f"{_cell(row['dry'], args.timeout)} | {_ratio(row['dry'], row['peer'])} |")


def _cell(value, timeout: float) -> str:
    return f"> {timeout:.0f} s" if value is None else f"{value[0]:.2f} s (min {value[1]:.2f})"


def _ratio(value, peer) -> str:
    return "-" if value is None or peer is None else f"{value[0] / peer[0]:.1f}×"


if __name__ == "__main__":
    main()
