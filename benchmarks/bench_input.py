#!/usr/bin/env python3
"""How long `validate` and `launch --dry-run` take on a 51,200-node deployment file (issue 13: each < 3 s).

    python benchmarks/bench_input.py                      # the three range shapes, 3 repeats, a table
    python benchmarks/bench_input.py --shapes listed --repeat 1 --timeout 300
    python benchmarks/bench_input.py --nodes 16384 --repeat 1 --timeout 120
    python benchmarks/bench_input.py --tree /tmp/main-snapshot --tree .   # compare with another version

Shapes of the same cluster:
- `ranges`: one `nodes:` entry, `10.[0-199].[0-255].1` zipped with `node[00000-51199]`, no ssh config;
- `ranges+ssh`: the same file with a user ssh config as clusters have one (a `Host 10.*` block with User,
  IdentityFile and a ProxyJump through a login node, a few other hosts, `Host *` defaults): every server
  is looked up in it and reached through the jump host;
- `aliases+ssh`: the servers written as `Host` aliases (`node[00000-51199]`) of an ssh config with one
  block per server (HostName, User), the way a generated cluster config looks: 51,200 blocks;
- `listed`: one entry per node, the file a generator would write (~2.5 MB; its time is the YAML parser's).
Each command runs as a user runs it, `python -m ascend_run …` in a fresh process, output to /dev/null,
with ASCEND_RUN_SSH_CONFIG naming the shape's ssh config (or `none`). The peer is that same fresh Python
reading the inputs and nothing else: ruamel parsing the file (round-trip, as the kit does) and paramiko
parsing the ssh config, so the ratio says what the kit adds to reading them. Timed out runs show as `> T s`.
"""

from __future__ import annotations

import argparse
import os
import resource
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
    """No ssh config (returns None)."""
    per = 256
    rows = nodes // per
    assert rows * per == nodes, "--nodes must be a multiple of 256"
    path.write_text(HEAD + f"nodes:\n  - {{address: '10.[0-{rows - 1}].[0-255].1', "
                           f"name: 'node[{0:05d}-{nodes - 1:05d}]'}}\n")


def write_listed(path: Path, nodes: int) -> None:
    entries = (f"  - {{address: 10.{i >> 16}.{(i >> 8) & 255}.{i & 255}, name: node{i:05d}}}\n"
               for i in range(nodes))
    path.write_text(HEAD.replace("ssh: {user: root, port: 22, known_hosts: /tmp/known_hosts}",
                                 "ssh: {known_hosts: /tmp/known_hosts}") + "nodes:\n" + "".join(entries))


CLUSTER_CONFIG = """\
Host login
  HostName 192.168.100.1
  User admin
  IdentityFile ~/.ssh/login_key
Host 10.*
  User ops
  IdentityFile ~/.ssh/cluster_key
  ProxyJump login
  ConnectTimeout 15
Host github.com gitee.com
  User git
Host dev-box
  HostName 172.16.0.9
Host *
  ServerAliveInterval 30
  UserKnownHostsFile ~/.ssh/known_hosts
"""


def write_ranges_ssh(path: Path, nodes: int) -> Path:
    write_ranges(path, nodes)
    path.write_text(path.read_text().replace("ssh: {user: root, port: 22, known_hosts: /tmp/known_hosts}",
                                             "ssh: {known_hosts: /tmp/known_hosts}"))
    config = path.with_suffix(".ssh_config")
    config.write_text(CLUSTER_CONFIG)
    return config


def write_aliases_ssh(path: Path, nodes: int) -> Path:
    path.write_text(HEAD.replace("ssh: {user: root, port: 22, known_hosts: /tmp/known_hosts}",
                                 "ssh: {known_hosts: /tmp/known_hosts}")
                    + f"nodes:\n  - {{address: 'node[{0:05d}-{nodes - 1:05d}]'}}\n")
    config = path.with_suffix(".ssh_config")
    config.write_text(CLUSTER_CONFIG + "".join(
        f"Host node{i:05d}\n  HostName 10.{i >> 16}.{(i >> 8) & 255}.{i & 255}\n  User u{i % 4}\n"
        for i in range(nodes)))
    return config


SHAPES = {"ranges": write_ranges, "ranges+ssh": write_ranges_ssh, "aliases+ssh": write_aliases_ssh,
          "listed": write_listed}


def run(argv: list[str], timeout: float, env: dict, cwd: str) -> tuple[float, float] | None:
    """(wall, CPU) seconds of one fresh process; None when it timed out. The CPU time (user + system) is
    what the run costs on a machine shared with other work, where the wall time is inflated by waiting."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    try:
        subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=True, timeout=timeout,
                       cwd=cwd, env=env)
    except subprocess.TimeoutExpired:
        return None
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=51200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("--shapes", default="ranges,ranges+ssh,aliases+ssh", help=f"of {', '.join(SHAPES)}")
    parser.add_argument("--tree", type=Path, action="append",
                        help="a directory holding the ascend_run to time (repeat to compare; default: this checkout)")
    args = parser.parse_args()
    trees = [t.resolve() for t in args.tree or [ROOT]]
    peer = [sys.executable, "-c", ("import sys; from ruamel.yaml import YAML; "
                                   "YAML(typ='rt').load(open(sys.argv[1], encoding='utf-8').read()); "
                                   "sys.argv[2:] and __import__('paramiko').SSHConfig.from_path(sys.argv[2])")]
    reference = run([sys.executable, "-c", "sum(range(10**8))"], 600, dict(os.environ), "/")
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{args.nodes} nodes, median wall (median CPU) of {args.repeat}, the trees' runs interleaved; "
              f"this machine's speed: `python -c 'sum(range(10**8))'` {reference[0]:.2f} s (CPU {reference[1]:.2f})\n")
        print("| file | ssh config | tree | peer: ruamel (+ paramiko) | validate | ratio | launch --dry-run | ratio |")
        print("|---|---|---|---|---|---|---|---|")
        for shape in args.shapes.split(","):
            path = Path(tmp) / f"{shape.replace('+', '-')}.yaml"
            config = SHAPES[shape](path, args.nodes)
            rows = _measure(args, trees, peer, path, config, tmp)
            blocks = config.read_text().count("\nHost ") + 1 if config else 0
            for tree, row in rows.items():
                print(f"| {shape} ({path.stat().st_size / 1e6:.2f} MB) | {f'{blocks:,} blocks' if config else '-'} | "
                      f"{tree.name} | {_cell(row['peer'], args.timeout)} | "
                      f"{_cell(row['validate'], args.timeout)} | {_ratio(row['validate'], row['peer'])} | "
                      f"{_cell(row['dry'], args.timeout)} | {_ratio(row['dry'], row['peer'])} |", flush=True)


def _measure(args, trees: list[Path], peer: list[str], path: Path, config: Path | None, cwd: str) -> dict:
    """The peer, validate and the dry run with each tree's ascend_run, `--repeat` rounds of all of them (so
    the trees share the machine's ups and downs). Run from a directory without an ascend_run, so that
    PYTHONPATH (not the working directory) decides which one is imported."""
    argvs = {"peer": [*peer, str(path), *([str(config)] if config else [])],
             "validate": [sys.executable, "-m", "ascend_run", "validate", "-f", str(path)],
             "dry": [sys.executable, "-m", "ascend_run", "launch", "-f", str(path), "--dry-run"]}
    runs: dict[tuple[Path, str], list] = {(tree, label): [] for tree in trees for label in argvs}
    for _ in range(args.repeat):
        for tree in trees:
            env = {**os.environ, "PYTHONPATH": str(tree), "ASCEND_RUN_SSH_CONFIG": str(config) if config else "none"}
            for label, argv in argvs.items():
                runs[tree, label].append(run(argv, args.timeout, env, cwd))
    return {tree: {label: _medians(runs[tree, label]) for label in argvs} for tree in trees}


def _medians(runs: list) -> tuple[float, float] | None:
    """(median wall, median CPU), None when a run timed out."""
    if None in runs:
        return None
    return statistics.median(w for w, _ in runs), statistics.median(c for _, c in runs)


def _cell(value, timeout: float) -> str:
    return f"> {timeout:.0f} s" if value is None else f"{value[0]:.2f} s (CPU {value[1]:.2f})"


def _ratio(value, peer) -> str:
    return "-" if value is None or peer is None else f"{value[0] / peer[0]:.1f}×"


if __name__ == "__main__":
    main()
