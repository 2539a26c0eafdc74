#!/usr/bin/env python3
"""Fan-out of one command to N loopback sshd servers: `ascend-run exec` against pdsh, parallel-ssh, asyncssh.

    python benchmarks/bench_exec.py                    # N = 32, 64, 128; 3 runs each; prints a table
    python benchmarks/bench_exec.py --sizes 128 --repeat 5 --command hostname

Root, from the repository root (scripts/install-bench-deps.sh installs what it needs). The servers are the
test fixture's (tests/conftest_sshd.py): `sshd -D` on 127.0.0.2… port 2222, each with its own ed25519 host
key, `SetEnv SHLVL=1` (so root's bash skips its slow ~/.bashrc), `MaxStartups 1000:30:1000`.
Every client verifies host keys against the same known_hosts, authenticates with the same ed25519 key and
has GSSAPI off. Contenders, all in one run with their order rotated between repeats:

- `ascend-run exec` as a subprocess (the installed console script, not the pyenv shim): the real CLI,
  interpreter start and imports included;
- ascend-run in-process: `transport.fanout.run_on_nodes` timed inside a worker process, the figure to
  hold against the other libraries (like theirs it includes loading the key and parsing known_hosts; the
  deployment file is loaded before the clock starts, ~0.08 s for 128 nodes);
- pdsh -R ssh -f N with OpenSSH's default key exchange (sntrup761x25519) and with curve25519-sha256;
- parallel-ssh (`ParallelSSHClient`, libssh2): timed in-process in its own worker; it does not check host keys;
- asyncssh: timed in-process in its own worker (`asyncio.gather` of connect + run).

Each Python library runs in a worker subprocess of its own (gevent and asyncio stay apart); the worker
prints the in-process time of the operation, and the parent also measures the whole process.
Client CPU is user+sys of the contender's process tree: on a shared 2-core machine it is steadier than
wall time and tells where the time goes (sshd's ~17 ms of CPU per connection is not in it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SIZES = (32, 64, 128)
CONTENDERS = ("ascend-run CLI", "ascend-run in-process", "pdsh", "pdsh curve25519", "parallel-ssh", "asyncssh")


# --- workers: one library, timed in-process -------------------------------------------------------

def worker(kind: str, spec: dict) -> dict:
    """Run one fan-out with a library in this process; return its in-process wall time."""
    hosts, command = spec["hosts"], spec["command"]
    if kind == "ascend-run":
        from ascend_run.inputs.deployment import load_deployment
        from ascend_run.transport.fanout import run_on_nodes

        nodes = load_deployment(spec["deployment"]).nodes  # parsing the file is not transport work
        started = time.perf_counter()
        outcomes = run_on_nodes(nodes, [command])
        seconds = time.perf_counter() - started
        bad = [str(o.error or o.value.stderr) for o in outcomes if not (o.ok and o.value.ok)]
    elif kind == "parallel-ssh":
        from pssh.clients import ParallelSSHClient

        started = time.perf_counter()
        client = ParallelSSHClient(hosts, user="root", pkey=spec["key"], port=spec["port"], pool_size=len(hosts),
                                   num_retries=1, timeout=30)
        output = client.run_command(command)
        client.join(output)
        seconds = time.perf_counter() - started
        bad = [f"{o.host}: {o.exception or o.exit_code}" for o in output if o.exception or o.exit_code != 0]
    elif kind == "asyncssh":
        import asyncio

        import asyncssh

        async def all_hosts() -> list:
            key = asyncssh.read_private_key(spec["key"])
            known = asyncssh.read_known_hosts(spec["known_hosts"])

            async def one(host: str):
                async with asyncssh.connect(host, port=spec["port"], username="root", client_keys=[key],
                                            known_hosts=known, gss_auth=False, agent_path=None,
                                            config=[]) as conn:
                    return await conn.run(command)

            return await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)

        started = time.perf_counter()
        results = asyncio.run(all_hosts())
        seconds = time.perf_counter() - started
        bad = [repr(r) for r in results if isinstance(r, BaseException) or r.exit_status != 0]
    else:
        raise SystemExit(f"unknown worker {kind}")
    return {"seconds": seconds, "failures": bad[:3], "failed": len(bad)}


# --- the parent: servers, contenders, table -------------------------------------------------------

def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_timed(argv: list[str], env: dict | None = None) -> tuple[float, float, subprocess.CompletedProcess]:
    cpu = children_cpu()
    started = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=600, check=False)
    return time.perf_counter() - started, children_cpu() - cpu, proc


def ssh_config(fleet, path: Path, kex: str | None) -> Path:
    lines = ["Host *", "  User root", "  Port 2222", f"  IdentityFile {fleet.key_file}", "  IdentitiesOnly yes",
             f"  UserKnownHostsFile {fleet.known_hosts}", "  GlobalKnownHostsFile /dev/null",
             "  StrictHostKeyChecking yes", "  GSSAPIAuthentication no", "  BatchMode yes", "  LogLevel ERROR",
             "  ConnectTimeout 30"]
    if kex:
        lines.append(f"  KexAlgorithms {kex}")
    path.write_text("\n".join(lines) + "\n")
    return path


def contender_argv(name: str, ctx: dict) -> tuple[list[str], dict | None]:
    spec_file = ctx["spec_file"]
    me = [sys.executable, str(Path(__file__).resolve())]
    if name == "ascend-run CLI":
        return [ctx["cli"], "exec", "-f", ctx["deployment"], "--", ctx["command"]], None
    if name == "ascend-run in-process":
        return [*me, "--worker", "ascend-run", spec_file], None
    if name in ("pdsh", "pdsh curve25519"):
        config = ctx["ssh_config_curve" if name.endswith("curve25519") else "ssh_config"]
        env = {**os.environ, "PDSH_RCMD_TYPE": "ssh", "PDSH_SSH_ARGS": f"-F {config} -l %u %h"}
        return ["pdsh", "-R", "ssh", "-f", str(ctx["n"]), "-t", "30", "-w", ",".join(ctx["hosts"]),
                ctx["command"]], env
    if name == "parallel-ssh":
        return [*me, "--worker", "parallel-ssh", spec_file], None
    if name == "asyncssh":
        return [*me, "--worker", "asyncssh", spec_file], None
    raise ValueError(name)


def measure(name: str, ctx: dict) -> dict:
    argv, env = contender_argv(name, ctx)
    wall, cpu, proc = run_timed(argv, env)
    row = {"total": wall, "cpu": cpu, "ok": proc.returncode == 0}
    if "--worker" in argv:
        try:
            data = json.loads(proc.stdout.strip().splitlines()[-1])
        except (IndexError, ValueError):
            data = {"failed": -1, "failures": [proc.stderr[-500:]]}
        row["op"] = data.get("seconds")
        row["ok"] = row["ok"] and data.get("failed") == 0
        if not row["ok"]:
            row["error"] = data.get("failures")
    else:
        row["op"] = wall
        if name.startswith("pdsh"):  # pdsh exits 0 even when a host fails: read its complaints
            lines = [line for line in proc.stdout.splitlines() if line.strip()]
            row["ok"] = (row["ok"] and "exited with exit code" not in proc.stderr
                         and (ctx["command"] != "hostname" or len(lines) == ctx["n"]))
        if not row["ok"]:
            row["error"] = proc.stderr[-500:]
    return row


def bench(sizes: tuple[int, ...], repeat: int, command: str) -> tuple[dict, dict]:
    from tests.conftest_sshd import SshdFleet

    fleet = SshdFleet.start(max(sizes), first_octet=2)
    results: dict = {}
    work = Path(tempfile.mkdtemp(prefix="bench-exec-"))
    loads = [os.getloadavg()[0]]
    try:
        cli = str(Path(sys.executable).parent / "ascend-run")
        if not Path(cli).exists():
            cli = shutil.which("ascend-run") or cli
        base = {"cli": cli, "command": command,
                "ssh_config": str(ssh_config(fleet, work / "ssh_config", None)),
                "ssh_config_curve": str(ssh_config(fleet, work / "ssh_config_curve", "curve25519-sha256"))}
        for n in sizes:
            servers = fleet.servers[:n]
            deployment = work / f"deploy-{n}.yaml"
            deployment.write_text(fleet.deployment_yaml(servers))
            spec = {"hosts": [s.address for s in servers], "port": 2222, "key": str(fleet.key_file),
                    "known_hosts": str(fleet.known_hosts), "deployment": str(deployment), "command": command}
            spec_file = work / f"spec-{n}.json"
            spec_file.write_text(json.dumps(spec))
            ctx = {**base, **spec, "n": n, "spec_file": str(spec_file)}
            runs: dict[str, list[dict]] = {c: [] for c in CONTENDERS}
            for r in range(repeat):
                order = CONTENDERS[r % len(CONTENDERS):] + CONTENDERS[:r % len(CONTENDERS)]
                for name in order:
                    row = measure(name, ctx)
                    runs[name].append(row)
                    status = "" if row["ok"] else f"  FAILED {row.get('error')}"
                    print(f"N={n:<4} {name:<22} total {row['total']:6.2f} s  op {row['op']:6.2f} s  "
                          f"cpu {row['cpu']:5.2f} s{status}", file=sys.stderr, flush=True)
            results[n] = runs
            loads.append(os.getloadavg()[0])
    finally:
        fleet.stop()
        shutil.rmtree(work, ignore_errors=True)
    machine = {"cpus": os.cpu_count(), "kernel": platform.release(), "python": platform.python_version(),
               "load_min": min(loads), "load_max": max(loads),
               "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    return results, machine


def med(rows: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in rows)


def table(results: dict) -> str:
    out = ["| N | contender | wall, median of runs | in-process op | client CPU | all nodes ok |",
           "|---|---|---|---|---|---|"]
    for n, runs in results.items():
        for name, rows in runs.items():
            op = "" if name in ("ascend-run CLI", "pdsh", "pdsh curve25519") else f"{med(rows, 'op'):.2f} s"
            out.append(f"| {n} | {name} | {med(rows, 'total'):.2f} s (min {min(r['total'] for r in rows):.2f}) "
                       f"| {op} | {med(rows, 'cpu'):.2f} s | {'yes' if all(r['ok'] for r in rows) else 'NO'} |")
    return "\n".join(out)


def ratios(results: dict) -> str:
    out = ["| N | CLI / pdsh | CLI / pdsh curve25519 | in-process / asyncssh in-process | CLI / asyncssh process |"
           " in-process / parallel-ssh in-process |", "|---|---|---|---|---|---|"]
    for n, runs in results.items():
        cli, lib = med(runs["ascend-run CLI"], "total"), med(runs["ascend-run in-process"], "op")
        out.append(f"| {n} | {cli / med(runs['pdsh'], 'total'):.2f} "
                   f"| {cli / med(runs['pdsh curve25519'], 'total'):.2f} "
                   f"| {lib / med(runs['asyncssh'], 'op'):.2f} | {cli / med(runs['asyncssh'], 'total'):.2f} "
                   f"| {lib / med(runs['parallel-ssh'], 'op'):.2f} |")
    return "\n".join(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", type=lambda s: tuple(int(x) for x in s.split(",")), default=SIZES)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--command", default="true", choices=["true", "hostname"])
    parser.add_argument("--worker", nargs=2, metavar=("KIND", "SPEC"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        kind, spec_file = args.worker
        print(json.dumps(worker(kind, json.loads(Path(spec_file).read_text()))))
        return
    if os.geteuid() != 0:
        raise SystemExit("bench_exec.py: run as root (it starts sshd servers on 127.0.0.2…)")
    results, machine = bench(args.sizes, args.repeat, args.command)
    report = (f"Measured {machine['when']}: {machine['cpus']} cores, kernel {machine['kernel']}, Python "
              f"{machine['python']}, load average {machine['load_min']:.1f}–{machine['load_max']:.1f} during the run; "
              f"command `{args.command}`, {args.repeat} runs per contender.\n\n"
              f"{table(results)}\n\nRatios (medians; goal at 128: CLI / pdsh ≤ 0.3, in-process / asyncssh ≤ 1.1):\n\n"
              f"{ratios(results)}\n")
    print(report)


if __name__ == "__main__":
    main()
