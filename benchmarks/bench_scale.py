#!/usr/bin/env python3
"""Launch and supervision at scale: N simulated servers x 8 ranks (root; run from the repository root).

    python benchmarks/bench_scale.py                          # 2, 4, 8, 16, 32 servers, markdown out
    python benchmarks/bench_scale.py --sizes 2,8 --window 30
    python benchmarks/bench_scale.py --compare /work/main --compare-sizes 8,32  # and another checkout's cost

One simulated cluster of the largest size (real sshd and dockerd per server), the stand-in job of
`ascend_run/sim/standin.py` (8 bash workers per server writing MindFormers' step lines at `--rate` steps/s and
3 lines of INFO chatter per step; an msrun stand-in) under the kit's real `launch` and supervisor. Per size,
the job runs on the cluster's first N servers:

- launch: `launch --detach` with preflight and with --skip-preflight, from the command to the supervisor's
  `started` event (every server's `docker run` returned), phases from its events; against pdsh running the
  same `docker run` lines (from `launch --dry-run`, one script per server on the shared /tmp, `pdsh -R ssh`
  with OpenSSH's defaults); and `exec -- true` (the SSH handshakes alone);
- the supervisor's cost while every rank streams, over `--window` s of steady state: its threads, CPU
  seconds per minute and resident memory (/proc), the SSH channels it holds open (processes whose parent is
  an sshd session, on every server) and the bytes per minute it writes to its state directory;
- detection while all ranks stream (job.restarts 0): a crash of the last server's last rank (the `failure`
  event minus the moment the rank was told to crash; the worker looks every 1/rate s), a hang of the whole
  job (every rank stops, as behind a stuck collective: the `failure` minus the moment the last server was
  told, minus hang_timeout), and a lost server (its link set down:
  `failure` minus the cut; unreachable_timeout 5).

The per-server and per-rank costs are fitted (least squares over the sizes and one run at the largest size
with 2 ranks per server) and projected to 128 x 8 and 1,024 x 8.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from ascend_run.inputs.deployment import load_deployment  # noqa: E402
from ascend_run.sim import standin  # noqa: E402
from ascend_run.sim.cluster import SimCluster  # noqa: E402
from ascend_run.supervise.state import StateStore  # noqa: E402

CLK = os.sysconf("SC_CLK_TCK")
HANG_TIMEOUT_S = 10
UNREACHABLE_S = 5
LIMITS_128 = {"cpu": 0.10 * 60, "rss_mb": 1024, "channels_per_server": 2}


def cli(kit: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(kit)}
    return subprocess.run([sys.executable, "-m", "ascend_run", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=kit, env=env)


def store_of(job: Path) -> StateStore:
    return StateStore.for_deployment(load_deployment(job))


def wait_event(job: Path, kind: str, timeout: float = 300, attempt: int | None = None) -> dict:
    store, deadline = store_of(job), time.monotonic() + timeout
    while time.monotonic() < deadline:
        for e in store.events():
            if e["kind"] == kind and (attempt is None or e.get("attempt") == attempt):
                return e
        time.sleep(0.1)
    kinds = [(e["kind"], e["detail"][:200]) for e in store.events()]
    raise SystemExit(f"no {kind} event for {job.name} within {timeout:g} s: {kinds}")


def stop(kit: Path, job: Path) -> None:
    cli(kit, "stop", "-f", str(job), timeout=300)


# --- launch -----------------------------------------------------------------------------------------------

def launch_timed(kit: Path, job: Path, preflight: bool) -> dict:
    t0 = time.time()
    result = cli(kit, "launch", "-f", str(job), "--detach", *([] if preflight else ["--skip-preflight"]))
    if result.returncode != 0:
        raise SystemExit(f"launch of {job.name} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
    events = store_of(job).events()
    first = {}
    for e in events:
        first.setdefault(e["kind"], e["t"])
    row = {"total": first["started"] - t0, "cli": time.time() - t0, "to_supervisor": first["launch"] - t0}
    if "preflight" in first:
        row["preflight"] = first["preflight"] - first["launch"]  # connections + the checks
        row["start"] = first["started"] - first["preflight"]     # config, job.sync, docker run
    else:
        row["start"] = first["started"] - first["launch"]        # connections, config, job.sync, docker run
    return row


def docker_run_lines(kit: Path, job: Path) -> dict[str, str]:
    out = cli(kit, "launch", "-f", str(job), "--dry-run").stdout
    lines, address = {}, None
    for line in out.splitlines():
        header = re.match(r"# \S+ \(rank \d+\) via ssh \S+@([\d.]+):\d+", line)
        if header:
            address = header.group(1)
        elif address and line.startswith("docker run "):
            lines[address] = line
            address = None
    return lines


def pdsh_timed(cluster: SimCluster, kit: Path, job: Path, scratch: Path) -> float:
    lines = docker_run_lines(kit, job)
    for address, line in lines.items():
        (scratch / f"{address}.sh").write_text(line + "\n")
    config = scratch / "ssh_config"
    config.write_text(f"Host *\n  User root\n  IdentityFile {cluster.key_file}\n  IdentitiesOnly yes\n"
                      f"  UserKnownHostsFile {cluster.known_hosts}\n  GlobalKnownHostsFile /dev/null\n"
                      "  StrictHostKeyChecking yes\n  GSSAPIAuthentication no\n  BatchMode yes\n  LogLevel ERROR\n")
    env = {**os.environ, "PDSH_RCMD_TYPE": "ssh", "PDSH_SSH_ARGS": f"-F {config} -l %u %h"}
    started = time.perf_counter()
    proc = subprocess.run(["pdsh", "-R", "ssh", "-f", str(len(lines)), "-t", "60", "-w", ",".join(lines),
                           f"bash {scratch}/%h.sh"], capture_output=True, text=True, env=env, timeout=600)
    took = time.perf_counter() - started
    if "exited with exit code" in proc.stderr or len(proc.stdout.splitlines()) != len(lines):
        raise SystemExit(f"pdsh failed: {proc.stderr[-2000:]}")
    return took


def exec_timed(kit: Path, job: Path) -> float:
    started = time.perf_counter()
    result = cli(kit, "exec", "-f", str(job), "--", "true")
    if result.returncode != 0:
        raise SystemExit(f"exec failed: {result.stderr[-1000:]}")
    return time.perf_counter() - started


def remove_everywhere(cluster: SimCluster, name: str, count: int) -> None:
    for node in cluster.nodes()[:count]:
        subprocess.run(["docker", "-H", f"unix://{node.layout.docker_socket}", "rm", "-f", name],
                       capture_output=True)


# --- the supervisor's cost ----------------------------------------------------------------------------------

def proc_sample(pid: int) -> dict:
    stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in line)
    return {"cpu": (int(stat[11]) + int(stat[12])) / CLK, "rss_mb": int(status["VmRSS"].split()[0]) / 1024,
            "threads": int(status["Threads"])}


SEEN_COMMANDS: dict[str, int] = {}  # what the channels ran, by command name (for the report)


def channels(cluster: SimCluster, count: int) -> int:
    """Commands run for SSH sessions on the servers: processes whose parent is an sshd process (not sshd, and
    not the simulated server's dockerd, a child of its sshd listener). A sample: a short command (a probe, a
    listing) counts while it runs."""
    total = 0
    record = cluster.record()
    for node in record["nodes"][:count]:
        pids = subprocess.run(["ip", "netns", "pids", node["netns"]], capture_output=True, text=True).stdout.split()
        comm = {}
        parent = {}
        for pid in pids:
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)
                comm[pid] = fields[0].split("(", 1)[1]
                parent[pid] = fields[1].split()[1]
            except OSError:
                continue
        for pid in comm:
            if comm[pid] not in ("sshd", "dockerd") and comm.get(parent[pid]) == "sshd":
                total += 1
                SEEN_COMMANDS[comm[pid]] = SEEN_COMMANDS.get(comm[pid], 0) + 1
    return total


def state_bytes(store: StateStore) -> int:
    return sum(p.stat().st_size for p in store.dir.glob("*.jsonl*") if p.is_file())


def cost_run(cluster: SimCluster, kit: Path, name: str, n: int, ranks: int, window: float, rate: int) -> dict:
    job = standin.job_file(cluster.dir, name, nodes=n, local_workers=ranks, steps_per_s=rate, restarts=0)
    launch_timed(kit, job, preflight=False)
    wait_event(job, "first-step", 120)
    time.sleep(5)
    store = store_of(job)
    pid = json.loads(store.state_file.read_text())["pid"]
    before, bytes_before, t0 = proc_sample(pid), state_bytes(store), time.monotonic()
    samples, held = [], []
    while time.monotonic() - t0 < window:
        time.sleep(min(5.0, window / 4))
        samples.append(proc_sample(pid))
        held.append(channels(cluster, n))
    after, took = proc_sample(pid), time.monotonic() - t0
    state_size = store.state_file.stat().st_size
    appended = state_bytes(store) - bytes_before  # events.jsonl and output.jsonl: what a job keeps
    written = appended + state_size * took / 2.0  # state.json: rewritten every 2 s
    stop(kit, job)
    return {"servers": n, "ranks": ranks, "cpu_per_min": (after["cpu"] - before["cpu"]) / took * 60,
            "rss_mb": max(s["rss_mb"] for s in samples), "threads": max(s["threads"] for s in samples),
            "channels": statistics.median(held), "bytes_per_min": written / took * 60,
            "kept_per_min": appended / took * 60, "state_json": state_size}


# --- detection ------------------------------------------------------------------------------------------------

def detection_runs(cluster: SimCluster, kit: Path, n: int, rate: int) -> dict:
    last = n - 1
    rank = n * 8 - 1
    out = {}
    job = standin.job_file(cluster.dir, f"scale-crash-{n}", nodes=n, steps_per_s=rate, restarts=0)
    launch_timed(kit, job, preflight=False)
    wait_event(job, "first-step", 120)
    time.sleep(3)
    told = standin.inject(cluster, last, job.stem, "output/msrun_log", "crash", rank)
    out["crash"] = wait_event(job, "failure", 60)["t"] - told
    wait_event(job, "failed", 120)

    job = standin.job_file(cluster.dir, f"scale-hang-{n}", nodes=n, steps_per_s=rate, restarts=0,
                           hang_timeout=HANG_TIMEOUT_S)
    launch_timed(kit, job, preflight=False)
    wait_event(job, "first-step", 120)
    time.sleep(3)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:  # the whole job stops, as behind a stuck collective
        told = max(pool.map(lambda i: standin.inject(cluster, i, job.stem, "output/msrun_log", "hang", None),
                            range(n)))
    failure = wait_event(job, "failure", 120)
    out["hang"] = failure.get("decided", failure["t"]) - told - HANG_TIMEOUT_S  # the decision
    out["hang_event"] = failure["t"] - told - HANG_TIMEOUT_S  # after the stopped-process scan of every server
    wait_event(job, "failed", 120)

    job = standin.job_file(cluster.dir, f"scale-lost-{n}", nodes=n, steps_per_s=rate, restarts=0,
                           unreachable_timeout=UNREACHABLE_S)
    launch_timed(kit, job, preflight=False)
    wait_event(job, "first-step", 120)
    time.sleep(3)
    cut = time.time()
    cluster.partition(last)
    try:
        failure = wait_event(job, "failure", 120)
        out["lost"] = failure["t"] - cut
        stop_event = wait_event(job, "stop", 60)
        out["lost_stop"] = stop_event["seconds"]
        out["lost_stop_total"] = stop_event.get("total_seconds", stop_event["seconds"])
        wait_event(job, "failed", 120)
    finally:
        cluster.partition(last, cut=False)
    stop(kit, job)
    return out


# --- the fit ---------------------------------------------------------------------------------------------------

def fit(rows: list[dict], key: str) -> tuple[float, float, float]:
    """key = a + b * servers + c * ranks (least squares)."""
    import numpy as np

    a = np.array([[1.0, r["servers"], r["servers"] * r["ranks"]] for r in rows])
    y = np.array([r[key] for r in rows])
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(coef[0]), float(coef[1]), float(coef[2])


def line_fit(rows: list[dict], key: str) -> tuple[float, float]:
    xs, ys = [r["servers"] for r in rows], [r[key] for r in rows]
    slope = statistics.covariance(xs, ys) / statistics.variance(xs)
    return statistics.mean(ys) - slope * statistics.mean(xs), slope


def project(coef: tuple[float, float, float], servers: int, ranks: int = 8) -> float:
    return coef[0] + coef[1] * servers + coef[2] * servers * ranks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="2,4,8,16,32")
    parser.add_argument("--window", type=float, default=40.0)
    parser.add_argument("--rate", type=int, default=2, help="steps per second per rank")
    parser.add_argument("--compare", type=Path, help="another checkout: its supervisor's cost at each size too")
    parser.add_argument("--compare-sizes", default="", help="the sizes to measure --compare at (default: all)")
    parser.add_argument("--no-detection", action="store_true")
    args = parser.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the simulated cluster needs root")
    sizes = [int(s) for s in args.sizes.split(",")]
    os.environ.setdefault("ASCEND_RUN_STATE_DIR", tempfile.mkdtemp(prefix="bench-scale-state-"))
    scratch = Path(tempfile.mkdtemp(prefix="bench-scale-", dir="/tmp"))
    cluster = SimCluster(scratch / "c")
    t0 = time.monotonic()
    cluster.up(max(sizes), "atlas-800t-a2")
    up_s = time.monotonic() - t0
    results: dict = {"launch": [], "cost": [], "compare": [], "detection": {}}
    try:
        standin.import_image(cluster)
        for n in sizes:
            job = standin.job_file(cluster.dir, f"scale-{n}", nodes=n, steps_per_s=args.rate, restarts=0)
            row = {"servers": n, "exec": exec_timed(REPO, job)}
            row["with_preflight"] = launch_timed(REPO, job, preflight=True)
            stop(REPO, job)
            row["skip_preflight"] = launch_timed(REPO, job, preflight=False)
            stop(REPO, job)
            row["pdsh"] = pdsh_timed(cluster, REPO, job, scratch)
            remove_everywhere(cluster, job.stem, n)
            results["launch"].append(row)
            print(f"{n} servers: launch {json.dumps(row)}", file=sys.stderr, flush=True)
            cost = cost_run(cluster, REPO, f"scale-cost-{n}", n, 8, args.window, args.rate)
            results["cost"].append(cost)
            print(f"{n} servers: cost {json.dumps(cost)}; channel commands seen {SEEN_COMMANDS}", file=sys.stderr,
                  flush=True)
            SEEN_COMMANDS.clear()
            if args.compare and (not args.compare_sizes or str(n) in args.compare_sizes.split(",")):
                other = cost_run(cluster, args.compare, f"scale-old-{n}", n, 8, args.window, args.rate)
                results["compare"].append(other)
                print(f"{n} servers: cost of {args.compare} {json.dumps(other)}; channel commands seen "
                      f"{SEEN_COMMANDS}", file=sys.stderr, flush=True)
                SEEN_COMMANDS.clear()
            if not args.no_detection:
                results["detection"][n] = detection_runs(cluster, REPO, n, args.rate)
                print(f"{n} servers: detection {json.dumps(results['detection'][n])}", file=sys.stderr, flush=True)
        few = cost_run(cluster, REPO, "scale-cost-few", max(sizes), 2, args.window, args.rate)
        results["cost"].append(few)
    finally:
        cluster.down()
        shutil.rmtree(scratch, ignore_errors=True)
    (Path(os.environ["ASCEND_RUN_STATE_DIR"]) / "bench-scale.json").write_text(json.dumps(results, indent=1))
    report(results, args, up_s)


def report(results: dict, args, up_s: float) -> None:
    load = os.getloadavg()[0]
    print(f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} on {platform.node()} ({os.cpu_count()} "
          f"cores, load average {load:.1f} at the end); {max(r['servers'] for r in results['launch'])} simulated "
          f"servers up in {up_s:.0f} s; the stand-in job at {args.rate} steps/s per rank.\n")
    print("| servers | exec -- true | launch with preflight | of which preflight | launch --skip-preflight | "
          "pdsh, the same docker run lines | launch (skip) / pdsh |")
    print("|---|---|---|---|---|---|---|")
    for r in results["launch"]:
        w, s = r["with_preflight"], r["skip_preflight"]
        print(f"| {r['servers']} | {r['exec']:.2f} s | {w['total']:.2f} s | {w['preflight']:.2f} s | "
              f"{s['total']:.2f} s | {r['pdsh']:.2f} s | {s['total'] / r['pdsh']:.2f} |")
    print("\n| servers x ranks | supervisor CPU s/min | RSS MB | threads | SSH channels (per server) | "
          "state written KB/min | of which kept (events, output) KB/min |")
    print("|---|---|---|---|---|---|---|")
    for label, rows in (("", results["cost"]), (f" ({args.compare})", results["compare"])):
        for r in rows:
            print(f"| {r['servers']} x {r['ranks']}{label} | {r['cpu_per_min']:.2f} | {r['rss_mb']:.0f} | "
                  f"{r['threads']} | {r['channels']} ({r['channels'] / r['servers']:.2f}) | "
                  f"{r['bytes_per_min'] / 1024:.1f} | {r.get('kept_per_min', 0) / 1024:.2f} |")
    if results["detection"]:
        print("\n| servers x 8 ranks | crash: told to failure | hang: decided after hang_timeout | "
              "hang: failure event (after the stopped-process scan) | lost (link down): cut to failure "
              "(unreachable_timeout 5) | stop of the reachable servers |")
        print("|---|---|---|---|---|---|")
        for n, d in results["detection"].items():
            print(f"| {n} | {d['crash']:.2f} s | {d['hang']:.2f} s | {d.get('hang_event', d['hang']):.2f} s | "
                  f"{d['lost']:.2f} s | {d['lost_stop']:.2f} s |")
    rows = results["cost"]
    print("\nFit (least squares, a + b x servers + c x ranks) and projection:\n")
    print("| quantity | fixed | per server | per rank | 128 x 8 | 1,024 x 8 | limit at 128 x 8 |")
    print("|---|---|---|---|---|---|---|")
    for key, name, limit in (("cpu_per_min", "CPU s/min", f"{LIMITS_128['cpu']:.1f} (10% of a core)"),
                             ("rss_mb", "RSS MB", "1024"), ("threads", "threads", "-"),
                             ("channels", "SSH channels", "256 (2 per server)"),
                             ("bytes_per_min", "state bytes/min", "-")):
        coef = fit(rows, key)
        print(f"| {name} | {coef[0]:.3g} | {coef[1]:.3g} | {coef[2]:.3g} | {project(coef, 128):.4g} | "
              f"{project(coef, 1024):.4g} | {limit} |")
    if len(results["compare"]) >= 2:
        print(f"\n{args.compare}'s supervisor, fitted a + b x servers (8 ranks each) and projected:\n")
        for key in ("cpu_per_min", "rss_mb", "threads", "channels"):
            a, b = line_fit(results["compare"], key)
            print(f"- {key}: per server {b:.3g}; 128 x 8 -> {a + b * 128:.4g}, 1,024 x 8 -> {a + b * 1024:.4g}")


if __name__ == "__main__":
    main()
