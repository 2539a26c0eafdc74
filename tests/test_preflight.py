"""Preflight rules as a pure function of the facts gathered on each node (no node needed)."""

from __future__ import annotations

from ascend_run.errors import TransportError
from ascend_run.inputs.deployment import deployment_from_data
from ascend_run.launch.preflight import NodeFacts, evaluate

SMI_ROW = "| {i}     910B3               | {h:<13} | 93.5        41                0    / 0             |\n"


def dep(nodes: int = 2):
    return deployment_from_data({"name": "x", "profile": "atlas-800t-a2", "image": "img:1",
                                 "nodes": [{"address": f"10.0.0.[1-{nodes}]"}],
                                 "job": {"command": "python x.py", "master_port": 8118}})


def healthy(name: str, **changes) -> NodeFacts:
    d = dep()
    facts = NodeFacts(hostname=name, docker_version="20.10.24", image_id="sha256:aaa",
                      device_types={p: "character special file" for p in d.profile.device_paths()},
                      npu_smi="".join(SMI_ROW.format(i=i, h="OK") for i in range(8)),
                      hccn={i: {"link": "link status: UP", "ip": f"ipaddr:10.9.0.{i}\nnetmask:255.255.255.0"}
                            for i in range(8)},
                      driver_version="24.1.rc3", free_bytes={"/var/log/ascend-run": 100 << 30},
                      host_python="3.11", host_python_ok=True)
    for key, value in changes.items():
        setattr(facts, key, value)
    return facts


def failed(checks):
    return {(c.node, c.check) for c in checks if not c.ok}


def test_all_healthy_passes():
    d = dep()
    checks = evaluate(d, {n.name: healthy(n.name) for n in d.nodes})
    assert not failed(checks)
    assert {c.check for c in checks} >= {"ssh", "docker", "image", "devices", "npu-health", "hccn-link", "hccn-ip",
                                         "driver", "disk", "master-port", "python3"}


def test_each_fault_names_node_and_check():
    d = dep()
    a, b = (n.name for n in d.nodes)
    bad = healthy(b, image_id="sha256:bbb", driver_version="23.0.1", listening_ports=set())
    bad.hccn[3]["link"] = "link status: DOWN"
    bad.hccn[5]["ip"] = "Get device 5 failed"
    bad.device_types["/dev/davinci6"] = "missing"
    bad.npu_smi = "".join(SMI_ROW.format(i=i, h="Critical" if i == 2 else "OK") for i in range(8) if i != 7)
    bad.free_bytes = {"/var/log/ascend-run": 10 << 20}
    master = healthy(a, listening_ports={8118})
    assert failed(evaluate(d, {a: master, b: bad})) == {
        (a, "master-port"), (b, "image-same"), (a, "image-same"), (b, "driver"), (b, "hccn-link"), (b, "hccn-ip"),
        (b, "devices"), (b, "npu-health"), (b, "disk")}


def test_unreachable_node_shared_hostname_and_clock_skew():
    d = dep(3)
    a, b, c = (n.name for n in d.nodes)
    checks = evaluate(d, {a: healthy("same"), b: healthy("same", clock_offset_s=30.0),
                          c: TransportError("cannot connect", host=c)})
    assert failed(checks) == {(a, "hostname"), (b, "hostname"), (b, "clock"), (c, "ssh")}


def test_a_host_without_a_recent_python3_fails_the_relay_check():
    d = dep()
    a, b = (n.name for n in d.nodes)
    checks = evaluate(d, {a: healthy(a, host_python="not installed", host_python_ok=False),
                          b: healthy(b, host_python="3.5", host_python_ok=False)})
    assert failed(checks) == {(a, "python3"), (b, "python3")}
    detail = next(c.detail for c in checks if c.node == a and c.check == "python3")
    assert "not installed" in detail and ">= 3.6" in detail and "image ship" in detail
