"""Rank tables: hccn_tool/hccn.conf parsing, collection with fallback (fake `run`), building, validation."""

from __future__ import annotations

import copy
import json
from types import SimpleNamespace

import pytest

from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.npu.ranktable import (
    DeviceAddressError,
    ExpectedServer,
    RankTableError,
    build_rank_table,
    collect_device_ips,
    load_rank_table,
    rank_table_json,
    require_device_ips,
    validate_rank_table,
)
from ascend_run.npu.tools import (
    parse_hccn_conf,
    parse_hccn_conf_netmasks,
    parse_hccn_ip_output,
    parse_hccn_netmask_output,
    parse_link_status,
)

HCCN_CONF = """\
# written by hccn_tool
address_0=192.98.10.10
netmask_0=255.255.255.0
netdetect_0=192.98.10.1
address_1=192.98.11.10
netmask_1=255.255.255.0
gateway_1=192.98.11.1
address_2 = 192.98.12.10
"""


def ips(server: int, n: int = 8) -> dict[int, str]:
    return {d: f"192.98.{10 + d}.{10 + server}" for d in range(n)}


def problems(exc: ConfigError) -> list[str]:
    return [str(e) for e in exc.errors] if isinstance(exc, ConfigErrors) else [str(exc)]


# --- parsing -------------------------------------------------------------------------------------

def test_hccn_conf_addresses_and_netmasks():
    assert parse_hccn_conf(HCCN_CONF) == {0: "192.98.10.10", 1: "192.98.11.10", 2: "192.98.12.10"}
    assert parse_hccn_conf_netmasks(HCCN_CONF) == {0: "255.255.255.0", 1: "255.255.255.0"}
    assert parse_hccn_conf("") == {}


def test_collect_reports_a_malformed_conf_address():
    node = FakeNode({}, conf="address_0=192.98.10.10\naddress_1=192.98.300.1\n")
    infos = collect_device_ips(node.run, [0, 1])
    assert infos[0].ip == "192.98.10.10" and infos[1].ip is None
    assert "address_1=192.98.300.1 in /etc/hccn.conf is not an IP" in infos[1].detail
    with pytest.raises(DeviceAddressError, match=r"(?s)node7: NPU 1.*hccn_tool -i 1 -ip -s address"):
        require_device_ips("node7", infos)


def test_hccn_ip_output():
    assert parse_hccn_ip_output("ipaddr:10.0.0.1\nnetmask:255.255.255.0\n") == "10.0.0.1"
    assert parse_hccn_ip_output("ipaddr: 10.0.0.1 \r\nnetmask: 255.255.255.0\r\n") == "10.0.0.1"
    assert parse_hccn_ip_output("Get device 3 failed, ret = -8005\n") is None
    assert parse_hccn_netmask_output("ipaddr:10.0.0.1\nnetmask:255.255.255.0\n") == "255.255.255.0"


@pytest.mark.parametrize("text,state", [("link status: UP\n", "UP"), ("link status: DOWN", "DOWN"),
                                        ("Link Status : up", "UP"), ("", None), ("error -8005", None)])
def test_link_status(text, state):
    assert parse_link_status(text) == state


# --- collection over a fake transport --------------------------------------------------------------

class FakeNode:
    """`run(argv)` answering like hccn_tool/cat on a server; records every command."""

    def __init__(self, tool_ips: dict[int, str], links: dict[int, str] | None = None, conf: str | None = None,
                 tool_installed: bool = True) -> None:
        self.tool_ips, self.links, self.conf, self.tool_installed = tool_ips, links or {}, conf, tool_installed
        self.calls: list[list[str]] = []

    def run(self, argv: list[str]):
        self.calls.append(list(argv))
        if argv[0] == "cat":
            if self.conf is None:
                return SimpleNamespace(rc=1, stdout="", stderr=f"cat: {argv[1]}: No such file or directory")
            return SimpleNamespace(rc=0, stdout=self.conf, stderr="")
        if not self.tool_installed:
            return SimpleNamespace(rc=127, stdout="", stderr=f"sh: 1: {argv[0]}: not found")
        device = int(argv[2])
        if argv[3] == "-ip":
            if device not in self.tool_ips:
                return SimpleNamespace(rc=255, stdout="", stderr=f"Get device {device} ip failed, ret = -8005")
            return SimpleNamespace(rc=0, stdout=f"ipaddr:{self.tool_ips[device]}\nnetmask:255.255.255.0\n", stderr="")
        return SimpleNamespace(rc=0, stdout=f"link status: {self.links.get(device, 'UP')}\n", stderr="")


def test_collect_prefers_hccn_tool():
    node = FakeNode(ips(0, 2), conf=HCCN_CONF)
    infos = collect_device_ips(node.run, [0, 1], "/usr/local/bin/hccn_tool")
    assert {d: (i.ip, i.source, i.link, i.netmask) for d, i in infos.items()} == {
        0: ("192.98.10.10", "hccn_tool", "UP", "255.255.255.0"),
        1: ("192.98.11.10", "hccn_tool", "UP", "255.255.255.0")}
    assert ["cat", "/etc/hccn.conf"] not in node.calls
    assert node.calls[0] == ["/usr/local/bin/hccn_tool", "-i", "0", "-ip", "-g"]
    assert ["/usr/local/bin/hccn_tool", "-i", "1", "-link", "-g"] in node.calls


def test_collect_falls_back_to_hccn_conf_per_device():
    node = FakeNode({0: "192.98.10.99"}, conf=HCCN_CONF)
    infos = collect_device_ips(node.run, [0, 1, 2])
    assert (infos[0].ip, infos[0].source) == ("192.98.10.99", "hccn_tool")
    assert (infos[1].ip, infos[1].source, infos[1].netmask) == ("192.98.11.10", "/etc/hccn.conf", "255.255.255.0")
    assert (infos[2].ip, infos[2].source) == ("192.98.12.10", "/etc/hccn.conf")
    assert node.calls.count(["cat", "/etc/hccn.conf"]) == 1
    blank = collect_device_ips(FakeNode({0: ""}, conf=HCCN_CONF).run, [0])  # `ipaddr:` with nothing after it
    assert (blank[0].ip, blank[0].source) == ("192.98.10.10", "/etc/hccn.conf")


def test_collect_without_hccn_tool_reads_conf_once_and_skips_links():
    node = FakeNode({}, conf=HCCN_CONF, tool_installed=False)
    infos = collect_device_ips(node.run, [0, 1], "hccn_tool", "/etc/hccn.conf")
    assert [i.ip for i in infos.values()] == ["192.98.10.10", "192.98.11.10"]
    assert all(i.link is None for i in infos.values())
    assert len(node.calls) == 2  # one hccn_tool attempt (127), then the conf once


def test_require_device_ips_names_node_device_and_fix():
    node = FakeNode({0: "192.98.10.10", 1: "192.98.11.10"}, links={1: "DOWN"}, conf="")
    infos = collect_device_ips(node.run, [0, 1, 3])
    with pytest.raises(ConfigErrors) as err:
        require_device_ips("train-2", infos)
    found = problems(err.value)
    assert all(isinstance(e, DeviceAddressError) for e in err.value.errors)
    assert "train-2: NPU 1" in found[0] and "link is DOWN" in found[0] and "hccn_tool -i 1 -link -g" in found[0]
    assert "train-2: NPU 3" in found[1] and "no device address" in found[1] and "-8005" in found[1]
    assert "hccn_tool -i 3 -ip -s address" in found[1]
    good = collect_device_ips(FakeNode(ips(0, 2)).run, [0, 1])
    assert require_device_ips("train-0", good) == {0: "192.98.10.10", 1: "192.98.11.10"}
    with pytest.raises(DeviceAddressError, match="NPU 3"):  # only the missing address is left
        require_device_ips("train-2", infos, require_link_up=False)


# --- building --------------------------------------------------------------------------------------

def test_build_two_servers_matches_hccl_json_format():
    table = build_rank_table([("10.0.0.1", ips(0)), ("10.0.0.2", ips(1))])
    assert table["version"] == "1.0" and table["status"] == "completed" and table["server_count"] == "2"
    first, second = table["server_list"]
    assert first["server_id"] == "10.0.0.1" and first["host_nic_ip"] == "reserve"
    assert first["device"][0] == {"device_id": "0", "device_ip": "192.98.10.10", "rank_id": "0"}
    assert [d["rank_id"] for d in second["device"]] == [str(r) for r in range(8, 16)]
    assert all(isinstance(v, str) for s in table["server_list"] for d in s["device"] for v in d.values())
    assert json.loads(rank_table_json(table)) == table


def test_build_sorts_devices_and_keeps_server_order():
    table = build_rank_table([("10.0.0.9", {3: "1.1.1.3", 1: "1.1.1.1"}), ("10.0.0.2", {0: "1.1.2.0"})])
    assert [s["server_id"] for s in table["server_list"]] == ["10.0.0.9", "10.0.0.2"]
    assert [(d["device_id"], d["rank_id"]) for d in table["server_list"][0]["device"]] == [("1", "0"), ("3", "1")]
    assert table["server_list"][1]["device"][0]["rank_id"] == "2"


def test_build_refuses_an_address_on_two_servers():
    with pytest.raises(RankTableError) as err:
        build_rank_table([("10.0.0.1", ips(0, 2)), ("10.0.0.2", {0: "192.98.10.10", 1: "192.98.11.11"})])
    assert "server 10.0.0.2 device 0" in str(err.value) and "server 10.0.0.1 device 0" in str(err.value)


def test_build_refuses_a_server_without_devices():
    with pytest.raises(RankTableError, match="server 10.0.0.2 has no devices"):
        build_rank_table([("10.0.0.1", ips(0, 2)), ("10.0.0.2", {})])


# --- validation ------------------------------------------------------------------------------------

@pytest.fixture
def table():
    return build_rank_table([("10.0.0.1", ips(0, 4)), ("10.0.0.2", ips(1, 4))])


def expect(n: int = 4):
    return [ExpectedServer("10.0.0.1", range(n), "train0"), ExpectedServer("10.0.0.2", range(n), "train1")]


def test_valid_table_passes_with_expected(table):
    validate_rank_table(table, expect())


def test_wrong_server_count(table):
    table["server_count"] = "3"
    with pytest.raises(RankTableError, match="server_count is '3' but server_list has 2 servers"):
        validate_rank_table(table)


def test_duplicate_device_address_names_both(table):
    table["server_list"][1]["device"][2]["device_ip"] = table["server_list"][0]["device"][1]["device_ip"]
    with pytest.raises(RankTableError) as err:
        validate_rank_table(table, expect())
    assert "server 10.0.0.2 (node train1) device 2" in str(err.value)
    assert "server 10.0.0.1 (node train0) device 1" in str(err.value)
    assert "fix:" in str(err.value)


def test_missing_device_address(table):
    del table["server_list"][0]["device"][3]["device_ip"]
    with pytest.raises(RankTableError, match=r"server 10.0.0.1 device 3 has no valid device_ip.*\n.*hccn_tool -i 3"):
        validate_rank_table(table)


def test_non_contiguous_ranks(table):
    table["server_list"][1]["device"][0]["rank_id"] = "5"
    table["server_list"][1]["device"][1]["rank_id"] = "4"
    with pytest.raises(ConfigErrors) as err:
        validate_rank_table(table)
    assert "device 0 has rank_id '5', expected '4'" in problems(err.value)[0]
    assert "device 1 has rank_id '4', expected '5'" in problems(err.value)[1]


def test_numbers_must_be_strings(table):
    table["server_list"][0]["device"][0]["rank_id"] = 0
    with pytest.raises(RankTableError, match="rank_id 0, expected '0'"):
        validate_rank_table(table)


def test_missing_device_against_deployment(table):
    del table["server_list"][1]["device"][3]
    with pytest.raises(RankTableError) as err:
        validate_rank_table(table, expect())
    assert "server 10.0.0.2 (node train1) device 3 is missing" in str(err.value)


def test_extra_device_and_server_order_against_deployment(table):
    with pytest.raises(ConfigError, match="device 3 is not one of the node.s NPUs"):
        validate_rank_table(table, expect(3))
    swapped = copy.deepcopy(table)
    swapped["server_list"].reverse()
    with pytest.raises(ConfigError, match="servers differ from the deployment"):
        validate_rank_table(swapped, expect())
    with pytest.raises(RankTableError, match=r"missing server 10.0.0.3 \(node train2\)"):
        validate_rank_table(table, expect() + [ExpectedServer("10.0.0.3", range(4), "train2")])


def test_duplicate_server_and_device_id(table):
    bad = copy.deepcopy(table)
    bad["server_list"][0]["device"][1]["device_id"] = "0"
    with pytest.raises(RankTableError, match="server 10.0.0.1 device 0 is listed twice"):
        validate_rank_table(bad)
    bad = copy.deepcopy(table)
    bad["server_list"][1]["server_id"] = "10.0.0.1"
    with pytest.raises(ConfigError, match=r"server 10.0.0.1 is listed twice \(also server_list\[0\]\)"):
        validate_rank_table(bad)


def test_status_version_and_empty(table):
    table["status"] = "initializing"
    with pytest.raises(RankTableError, match="status"):
        validate_rank_table(table)
    with pytest.raises(RankTableError, match="server_list is missing"):
        validate_rank_table({"version": "1.0", "status": "completed", "server_count": "0", "server_list": []})


def test_load_rank_table_errors_name_the_file():
    with pytest.raises(RankTableError, match=r"hccl_8p.json:2: not valid JSON"):
        load_rank_table('{"version": "1.0",\n oops}', source="hccl_8p.json")
    with pytest.raises(RankTableError, match="must be a JSON object"):
        load_rank_table("[]")
    table = build_rank_table([("10.0.0.1", ips(0, 1))])
    assert load_rank_table(rank_table_json(table)) == table
