"""Preflight: everything that makes a multi-node job fail late, checked on every node in parallel first.

Facts are gathered per node (a few commands each, over the node's one SSH connection); the checks are a
pure function of the facts, so cross-node rules (same image id everywhere, distinct hostnames, clock
skew) and the tests need no node.
"""

from __future__ import annotations

import posixpath
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from ascend_run.inputs.deployment import Deployment, Node, parse_size
from ascend_run.inputs.images import all_images
from ascend_run.launch import nodeops
from ascend_run.npu.tools import (
    parse_driver_version,
    parse_hccn_ip_output,
    parse_link_status,
    parse_npu_smi_info,
    version_family,
)
from ascend_run.transport.base import Transport
from ascend_run.transport.cluster import Cluster
from ascend_run.transport.relay import MIN_PYTHON, RC_NO_PYTHON, python_probe_argv

MAX_CLOCK_SKEW_S = 5.0
DEFAULT_LOG_FREE = "1G"

_HCCN_SCRIPT = ('tool=$1; shift; for i in "$@"; do echo "@@ $i link"; "$tool" -i "$i" -link -g 2>&1; '
                'echo "@@ $i ip"; "$tool" -i "$i" -ip -g 2>&1; done')
_DF_SCRIPT = ('for p in "$@"; do q=$p; while [ ! -e "$q" ]; do q=$(dirname "$q"); done; '
              'echo "@@ $p"; df -Pk "$q" | tail -n 1; done')


@dataclass
class NodeFacts:
    hostname: str = ""
    clock_offset_s: float = 0.0
    docker_version: str | None = None
    image_id: str | None = None
    device_types: dict[str, str] = field(default_factory=dict)
    npu_smi: str = ""
    npu_smi_rc: int = 0
    hccn: dict[int, dict[str, str]] = field(default_factory=dict)
    driver_version: str | None = None
    free_bytes: dict[str, int] = field(default_factory=dict)
    listening_ports: set[int] = field(default_factory=set)
    host_python: str | None = None  # "3.11", or what went wrong
    host_python_ok: bool = False


@dataclass(frozen=True)
class Check:
    node: str
    check: str
    ok: bool
    detail: str = ""


def disk_requirements(dep: Deployment) -> dict[str, int]:
    """Paths on the servers that need free space: the log dir, declared needs (weights: ~1.4 TB)."""
    needs = {posixpath.dirname(dep.host_log_dir.rstrip("/")) or "/": parse_size(DEFAULT_LOG_FREE)}
    if dep.job:
        needs.update({path: parse_size(size) for path, size in dep.job.require_free.items()})
    return needs


def _split_sections(text: str) -> dict[str, str]:
    sections: dict[str, str] = {}
    key = None
    for line in text.splitlines():
        if line.startswith("@@ "):
            key = line[3:].strip()
            sections[key] = ""
        elif key is not None:
            sections[key] += line + "\n"
    return sections


def gather(dep: Deployment, node: Node, t: Transport) -> NodeFacts:
    """Run the read-only commands of the checks on one node."""
    profile, facts = dep.profile, NodeFacts()
    before = time.time()
    result = t.run(["sh", "-c", "hostname; date +%s.%N"], timeout=30)
    after = time.time()
    lines = result.stdout.split()
    if len(lines) >= 2:
        facts.hostname = lines[0]
        facts.clock_offset_s = float(lines[1]) - (before + after) / 2
    version = t.run(["docker", "version", "--format", "{{.Server.Version}}"], timeout=30)
    facts.docker_version = version.stdout.strip() if version.rc == 0 else None
    if facts.docker_version:
        facts.image_id = nodeops.image_id(t, dep.image)
    paths = profile.device_paths(node.npus)
    stat = t.run(["stat", "-L", "-c", "%n|%F", *paths], timeout=30)
    facts.device_types = {p: "missing" for p in paths}
    for line in stat.stdout.splitlines():
        name, _, kind = line.partition("|")
        facts.device_types[name] = kind
    smi = t.run([profile.tools.npu_smi, "info"], timeout=60)
    facts.npu_smi, facts.npu_smi_rc = smi.stdout, smi.rc
    hccn = t.run(["sh", "-c", _HCCN_SCRIPT, "sh", profile.tools.hccn_tool, *map(str, node.npus)], timeout=120)
    for key, text in _split_sections(hccn.stdout).items():
        npu, what = key.split()
        facts.hccn.setdefault(int(npu), {})[what] = text
    driver = t.run(["cat", profile.tools.driver_version_file], timeout=30)
    facts.driver_version = parse_driver_version(driver.stdout) if driver.rc == 0 else None
    df = t.run(["sh", "-c", _DF_SCRIPT, "sh", *disk_requirements(dep)], timeout=30)
    for key, text in _split_sections(df.stdout).items():
        fields = text.split()
        if len(fields) >= 4 and fields[3].isdigit():
            facts.free_bytes[key] = int(fields[3]) * 1024
    python = t.run(python_probe_argv(), timeout=30)
    facts.host_python_ok = python.rc == 0
    facts.host_python = python.stdout.strip() or ("not installed" if python.rc == RC_NO_PYTHON else None)
    if node.rank == 0:
        ss = t.run(["ss", "-Hltn"], timeout=30)
        for line in ss.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 4 and parts[3].rsplit(":", 1)[-1].isdigit():
                facts.listening_ports.add(int(parts[3].rsplit(":", 1)[-1]))
    return facts


def _node_checks(dep: Deployment, node: Node, f: NodeFacts) -> list[Check]:
    checks = [Check(node.name, "ssh", True, node.ssh.describe())]
    add = lambda name, ok, detail="": checks.append(Check(node.name, name, ok, detail))  # noqa: E731
    add("docker", f.docker_version is not None,
        f"engine {f.docker_version}" if f.docker_version else "no Docker engine answers (start dockerd)")
    if f.docker_version:
        add("image", f.image_id is not None,
            f.image_id[:19] if f.image_id else
            f"{dep.image} is not on the node (ascend-run image ship train -f FILE, or infer)")
    bad = [p for p, kind in f.device_types.items() if kind != "character special file"]
    add("devices", not bad, f"{len(f.device_types)} character devices" if not bad
        else ", ".join(f"{p}: {f.device_types[p]}" for p in bad))
    listed = parse_npu_smi_info(f.npu_smi) if f.npu_smi_rc == 0 else {}
    unhealthy = [f"NPU {i}: {'absent' if i not in listed else listed[i].health}"
                 for i in node.npus if i not in listed or not listed[i].healthy]
    add("npu-health", f.npu_smi_rc == 0 and not unhealthy,
        "npu-smi info failed" if f.npu_smi_rc else ("; ".join(unhealthy) or f"{len(node.npus)} NPUs OK"))
    down, no_ip = [], []
    for npu in node.npus:
        out = f.hccn.get(npu, {})
        if parse_link_status(out.get("link", "")) != "UP":
            down.append(str(npu))
        if not parse_hccn_ip_output(out.get("ip", "")):
            no_ip.append(str(npu))
    add("hccn-link", not down, f"link DOWN on NPU {', '.join(down)}" if down else "all links UP")
    add("hccn-ip", not no_ip, f"no address on NPU {', '.join(no_ip)}" if no_ip else "every NPU has an address")
    wanted = next((i.driver_version for i in all_images().values() if i.profile == dep.profile.name),
                  dep.profile.driver_version)
    if f.driver_version is None:
        add("driver", False, f"cannot read {dep.profile.tools.driver_version_file}")
    else:
        same = version_family(f.driver_version) == version_family(wanted)
        add("driver", same, f"driver {f.driver_version}" + ("" if same else f", the image's CANN wants {wanted}"))
    short = []
    for path, need in disk_requirements(dep).items():
        free = f.free_bytes.get(path)
        if free is None or free < need:
            short.append(f"{path}: {_gib(free)} free, needs {_gib(need)}")
    add("disk", not short, "; ".join(short) or "enough free space")
    wanted_python = ".".join(map(str, MIN_PYTHON))
    add("python3", f.host_python_ok,
        f"python3 {f.host_python}" if f.host_python_ok else
        f"python3 {f.host_python or '?'} on the host; image ship and weights/data spreading run a relay "
        f"that needs python3 >= {wanted_python}")
    if node.rank == 0 and dep.job:
        port = dep.job.master_port
        add("master-port", port not in f.listening_ports,
            f"port {port} free" if port not in f.listening_ports else f"port {port} is already in use on the master")
    return checks


def _gib(value: int | None) -> str:
    return "?" if value is None else f"{value / (1 << 30):.1f} GiB"


def evaluate(dep: Deployment, facts: Mapping[str, NodeFacts | BaseException]) -> list[Check]:
    """All checks, per node and across nodes, from the gathered facts."""
    checks: list[Check] = []
    reached = {n.name: facts[n.name] for n in dep.nodes if isinstance(facts.get(n.name), NodeFacts)}
    for node in dep.nodes:
        fact = facts.get(node.name)
        if isinstance(fact, NodeFacts):
            checks += _node_checks(dep, node, fact)
        else:
            checks.append(Check(node.name, "ssh", False, str(fact)))
    ids = {f.image_id for f in reached.values() if f.image_id}
    if len(ids) > 1:
        for name, f in reached.items():
            checks.append(Check(name, "image-same", False, f"image id {str(f.image_id)[:19]} differs across nodes"))
    owners: dict[str, list[str]] = {}
    for name, f in reached.items():
        owners.setdefault(f.hostname, []).append(name)
    for hostname, names in owners.items():
        if len(names) > 1:
            for name in names:
                checks.append(Check(name, "hostname", False, f"hostname {hostname!r} shared by {', '.join(names)}"))
    if reached:
        # the launcher's own clock votes too (offset 0), so two nodes that disagree still have a majority
        offsets = sorted([0.0, *(f.clock_offset_s for f in reached.values())])
        median = offsets[len(offsets) // 2]
        for name, f in reached.items():
            skew = f.clock_offset_s - median
            if abs(skew) > MAX_CLOCK_SKEW_S:
                checks.append(Check(name, "clock", False, f"clock {skew:+.1f} s off the others (sync NTP)"))
    return checks


def run_preflight(cluster: Cluster) -> list[Check]:
    """Gather facts on every node at once, then evaluate; a node that fails to answer fails its `ssh` check."""
    outcomes = cluster.each(lambda n, t: gather(cluster.dep, n, t))
    return evaluate(cluster.dep, {o.node.name: o.value if o.ok else o.error for o in outcomes})


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
