"""Names, addresses and `ip` commands of a simulated cluster's private network (pure argv builders).

Every simulated cluster lives in 10.233.0.0/16: one /24 per cluster directory, chosen from a hash of the
directory and skipped past /24s already used on this machine, so two clusters never collide and the kit
never touches an address outside its own range.

With a bastion (`sim up --bastion`), the servers sit on a second bridge, with no address on this machine, in
10.232.<same octet>.0/24; the host routes that /24 to `unreachable`, so nothing leaves the machine and a direct
connect fails at once. One more namespace, the bastion, has a leg on each bridge (10.233.X.2 and 10.232.X.1)
and forwards nothing: the servers are reachable only through SSH on it, as behind a real login node.
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import dataclass

SIM_RANGE = ipaddress.ip_network("10.233.0.0/16")
HIDDEN_RANGE = ipaddress.ip_network("10.232.0.0/16")  # servers behind the bastion
FIRST_HOST = 10
BASTION_HOST = 2
MAX_NODES = 254 - FIRST_HOST + 1  # .10 … .254


@dataclass(frozen=True)
class SimNet:
    tag: str            # 6 hex chars from the directory: part of every name
    third_octet: int    # 10.233.<third_octet>.0/24

    @property
    def bridge(self) -> str:
        return f"arb-{self.tag}"

    @property
    def gateway(self) -> str:
        return f"10.233.{self.third_octet}.1"

    def netns(self, index: int) -> str:
        return f"ar-{self.tag}-n{index}"

    def veth_host(self, index: int) -> str:
        return f"ar{self.tag}h{index}"[:15]

    def veth_node(self, index: int) -> str:
        return f"ar{self.tag}p{index}"[:15]

    def address(self, index: int) -> str:
        if index + FIRST_HOST > 254:
            raise ValueError(f"at most {MAX_NODES} simulated nodes per cluster")
        return f"10.233.{self.third_octet}.{index + FIRST_HOST}"

    # --- behind a bastion ---

    @property
    def hidden_bridge(self) -> str:
        return f"arh-{self.tag}"

    @property
    def hidden_net(self) -> str:
        return f"10.232.{self.third_octet}.0/24"

    def hidden_address(self, index: int) -> str:
        return "10.232." + self.address(index).split(".", 2)[2]  # 10.233.X.N -> 10.232.X.N

    @property
    def bastion_netns(self) -> str:
        return f"ar-{self.tag}-b"

    @property
    def bastion_address(self) -> str:
        return f"10.233.{self.third_octet}.{BASTION_HOST}"

    @property
    def bastion_inner_address(self) -> str:
        return f"10.232.{self.third_octet}.1"

    def bastion_veths(self) -> tuple[str, str, str, str]:
        """(host side on the bridge, bastion side, host side on the hidden bridge, bastion side)."""
        return f"ar{self.tag}hb", f"ar{self.tag}pb", f"ar{self.tag}hc", f"ar{self.tag}pc"

    def device_ip(self, index: int, npu: int) -> str:
        """An NPU's RoCE address for hccn.conf: 10.(234+index//32).<octet>.<8*(index%32)+npu+1> (never routed)."""
        return f"10.{234 + index // 32}.{self.third_octet}.{8 * (index % 32) + npu + 1}"


def tag_for(directory: str) -> str:
    return hashlib.sha256(directory.encode()).hexdigest()[:6]


def pick_net(directory: str, used_third_octets: set[int]) -> SimNet:
    """The /24 for `directory`: its hash, or the next one not in use."""
    tag = tag_for(directory)
    start = int(tag, 16) % 250 + 2
    for step in range(250):
        octet = (start - 2 + step) % 250 + 2
        if octet not in used_third_octets:
            return SimNet(tag, octet)
    raise ValueError("no free /24 left in 10.233.0.0/16")


def in_sim_range(address: str) -> bool:
    return ipaddress.ip_address(address) in SIM_RANGE or ipaddress.ip_address(address) in HIDDEN_RANGE


def owned_names_problem(record: dict) -> str | None:
    """Why `record` (a sim.json) names something this kit would not have made, or None.

    `down` deletes links and namespaces by the names in sim.json; a hand-edited or foreign file must
    never make it delete the machine's own interfaces or touch addresses outside 10.233.0.0/16.
    """
    try:
        net = SimNet(str(record["tag"]), int(record["third_octet"]))
        if not re.fullmatch(r"[0-9a-f]{6}", net.tag) or not 2 <= net.third_octet <= 254:
            return f"tag {net.tag!r} / third octet {net.third_octet} are not the kit's"
        if record["bridge"] != net.bridge:
            return f"bridge {record['bridge']!r} is not {net.bridge!r}"
        bastion = record.get("bastion")
        for node in record["nodes"]:
            i = int(node["index"])
            if (node["netns"], node["veth"]) != (net.netns(i), net.veth_host(i)):
                return f"node {i}: netns/veth {node['netns']!r}/{node['veth']!r} are not the kit's names"
            expected = net.hidden_address(i) if bastion else net.address(i)
            if not in_sim_range(node["address"]) or node["address"] != expected:
                return f"node {i}: address {node['address']} is outside {expected.rsplit('.', 1)[0]}.0/24"
        if bastion:
            host_veth, _, inner_veth, _ = net.bastion_veths()
            if (bastion["netns"], bastion["veths"], record.get("hidden_bridge"), record.get("hidden_net")) != (
                    net.bastion_netns, [host_veth, inner_veth], net.hidden_bridge, net.hidden_net):
                return "the bastion's netns/veths/bridge/route are not the kit's names"
    except (KeyError, TypeError, ValueError) as exc:
        return f"malformed record ({exc!r})"
    return None


def bridge_up(net: SimNet) -> list[list[str]]:
    return [["ip", "link", "add", net.bridge, "type", "bridge"],
            ["ip", "addr", "add", f"{net.gateway}/24", "dev", net.bridge],
            ["ip", "link", "set", net.bridge, "up"]]


def hidden_bridge_up(net: SimNet) -> list[list[str]]:
    """The servers' bridge behind the bastion: no address here, and their /24 unreachable from here."""
    return [["ip", "link", "add", net.hidden_bridge, "type", "bridge"],
            ["ip", "link", "set", net.hidden_bridge, "up"],
            ["ip", "route", "add", "unreachable", net.hidden_net]]


def hidden_down(net: SimNet) -> list[list[str]]:
    return [["ip", "route", "del", "unreachable", net.hidden_net], ["ip", "link", "del", net.hidden_bridge]]


def _veth_into(ns: str, host: str, peer: str, bridge: str, name: str, address: str) -> list[list[str]]:
    """A veth pair: `host` on `bridge` here, `peer` in `ns` as `name` with `address`/24."""
    return [["ip", "link", "add", host, "type", "veth", "peer", "name", peer],
            ["ip", "link", "set", peer, "netns", ns],
            ["ip", "link", "set", host, "master", bridge],
            ["ip", "link", "set", host, "up"],
            ["ip", "-n", ns, "link", "set", peer, "name", name],
            ["ip", "-n", ns, "addr", "add", f"{address}/24", "dev", name],
            ["ip", "-n", ns, "link", "set", name, "up"]]


def node_link_up(net: SimNet, index: int, hidden: bool = False) -> list[list[str]]:
    """A server's namespace and its eth0: on the bridge (default route to this machine), or, behind a
    bastion, on the hidden bridge with no route anywhere else."""
    ns, host, peer = net.netns(index), net.veth_host(index), net.veth_node(index)
    if hidden:
        return [["ip", "netns", "add", ns],
                *_veth_into(ns, host, peer, net.hidden_bridge, "eth0", net.hidden_address(index)),
                ["ip", "-n", ns, "link", "set", "lo", "up"]]
    return [["ip", "netns", "add", ns],
            *_veth_into(ns, host, peer, net.bridge, "eth0", net.address(index)),
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", net.gateway]]


def bastion_link_up(net: SimNet) -> list[list[str]]:
    """The bastion's namespace: eth0 on the bridge, eth1 on the hidden bridge (it forwards nothing:
    net.ipv4.ip_forward stays 0 in a new namespace)."""
    ns = net.bastion_netns
    host, peer, inner_host, inner_peer = net.bastion_veths()
    return [["ip", "netns", "add", ns],
            *_veth_into(ns, host, peer, net.bridge, "eth0", net.bastion_address),
            *_veth_into(ns, inner_host, inner_peer, net.hidden_bridge, "eth1", net.bastion_inner_address),
            ["ip", "-n", ns, "link", "set", "lo", "up"],
            ["ip", "-n", ns, "route", "add", "default", "via", net.gateway]]


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmg]?)(?:bit|bps|b)(?:/s)?\s*$", re.IGNORECASE)
_RATE_UNITS = {"": 1, "k": 1000, "m": 1000 ** 2, "g": 1000 ** 3}


def parse_rate(text: str | int) -> int:
    """A link rate in bits per second, from `200mbit`, `200Mbit/s`, `1gbit`, `1.5Gbps` or a number of bits."""
    if isinstance(text, int):
        bits = text
    else:
        match = _RATE.match(text)
        if not match:
            raise ValueError(f"link rate {text!r}: expected e.g. 200mbit, 1gbit, 100Mbit/s")
        bits = int(float(match.group(1)) * _RATE_UNITS[match.group(2).lower()])
    if not 8_000 <= bits <= 100 * 1000 ** 3:
        raise ValueError(f"link rate {text!r}: between 8kbit and 100gbit")
    return bits


def shape(bits: int) -> list[str]:
    """`tc qdisc … root tbf …` arguments for a NIC of `bits` per second. The bucket holds at least one
    timer tick's worth of bytes (HZ can be 100), or the rate is never reached."""
    burst = max(256 << 10, bits // 8 // 100)
    return ["root", "tbf", "rate", f"{bits}bit", "burst", str(burst), "latency", "50ms"]


def link_rate_up(net: SimNet, indices: list[int], bits: int) -> list[list[str]]:
    """Every server gets a NIC of `bits`/s both ways (its veth's host side shapes what it receives, the side
    in its namespace what it sends), and so does this machine (the bridge's own interface shapes what the
    control machine sends; what it receives is shaped by the sending server's link)."""
    cmds = [["tc", "qdisc", "replace", "dev", net.bridge, *shape(bits)]]
    for i in indices:
        cmds.append(["tc", "qdisc", "replace", "dev", net.veth_host(i), *shape(bits)])
        cmds.append(["ip", "netns", "exec", net.netns(i), "tc", "qdisc", "replace", "dev", "eth0", *shape(bits)])
    return cmds
