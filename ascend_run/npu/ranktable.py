"""HCCL rank tables (`hccl.json`, `RANK_TABLE_FILE`): device addresses in, a checked table out.

HCCL connects NPUs across servers by their device (RoCE) addresses, which live on the NPUs, not the hosts:
`hccn_tool -i N -ip -g` reads them, `/etc/hccn.conf` records them. A rank table that lists one address
twice, misses a device or numbers ranks out of order fails only when the job's first collective times
out, minutes after the launch and with no name in the message; so the table is built here from what the
servers report and checked before anything starts, and every error names the server and the device.

Everything here is pure: `collect_device_ips` takes the transport's `run(argv)` as a parameter, so it runs
over SSH, locally or against a fake in the tests.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.npu.tools import (
    parse_hccn_conf,
    parse_hccn_conf_netmasks,
    parse_hccn_ip_output,
    parse_hccn_netmask_output,
    parse_link_status,
)

VERSION = "1.0"
HCCN_TOOL = "hccn_tool"
HCCN_CONF = "/etc/hccn.conf"

_IP_FIX_HINT = "hccn_tool -i {d} -ip -s address <ip> netmask <mask>"


class RankTableError(ConfigError):
    """A rank table (built or read) that HCCL would fail on, or a device without a usable address."""


class DeviceAddressError(RankTableError):
    """An NPU whose device address cannot be read, or whose RoCE link is down."""


def _ip_or_none(text: str | None) -> str | None:
    if not text:
        return None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        return None


# --- collecting from a server --------------------------------------------------------------------

class RunResult(Protocol):
    rc: int
    stdout: str
    stderr: str


Run = Callable[[list[str]], RunResult]


@dataclass(frozen=True)
class DeviceInfo:
    """What one NPU reported: its address (and where it came from) and its RoCE link state."""

    device: int
    ip: str | None
    netmask: str | None = None
    source: str | None = None  # "hccn_tool" or the hccn.conf path
    link: str | None = None  # "UP", "DOWN", or None when not checked / unreadable
    detail: str = ""  # why the tool failed, for the error message


def collect_device_ips(run: Run, npus: Sequence[int], hccn_tool_path: str = HCCN_TOOL,
                       hccn_conf_path: str = HCCN_CONF, *, check_link: bool = True) -> dict[int, DeviceInfo]:
    """Device addresses of `npus` on one server, read with `run(argv) -> (rc, stdout, stderr)`.

    `hccn_tool -i N -ip -g` first (the NPU's live address); for devices where it fails, `hccn.conf`
    (read once). Links are read with `hccn_tool -i N -link -g`. Nothing raises here: the result says what
    is missing and `require_device_ips` turns that into an error naming the node.
    """
    tool_missing = False
    conf: tuple[dict[int, str], dict[int, str]] | None = None
    found: dict[int, DeviceInfo] = {}
    for device in npus:
        ip = netmask = None
        source, detail = None, ""
        if not tool_missing:
            result = run([hccn_tool_path, "-i", str(device), "-ip", "-g"])
            if result.rc == 0:
                printed = parse_hccn_ip_output(result.stdout)
                ip, netmask = _ip_or_none(printed), parse_hccn_netmask_output(result.stdout)
                source = "hccn_tool" if ip else None
                detail = "" if ip else f"{hccn_tool_path} printed {'ipaddr:' + printed if printed else 'no ipaddr'}"
            else:
                tool_missing = result.rc == 127
                detail = _last_line(result) or f"{hccn_tool_path} exited {result.rc}"
        if ip is None:
            if conf is None:
                conf = _read_conf(run, hccn_conf_path)
            written, netmask = conf[0].get(device), conf[1].get(device)
            ip = _ip_or_none(written)
            source = hccn_conf_path if ip else None
            if ip is None:
                why = f"address_{device}={written} in {hccn_conf_path} is not an IP" if written \
                    else f"no address_{device} in {hccn_conf_path}"
                detail = "; ".join(filter(None, [detail, why]))
        link = None
        if check_link and not tool_missing:
            link = parse_link_status(run([hccn_tool_path, "-i", str(device), "-link", "-g"]).stdout)
        found[device] = DeviceInfo(device, ip, netmask, source, link, "" if ip else detail)
    return found


def _last_line(result: RunResult) -> str:
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return lines[-1].strip() if lines else ""


def _read_conf(run: Run, path: str) -> tuple[dict[int, str], dict[int, str]]:
    result = run(["cat", path])
    if result.rc != 0:
        return {}, {}
    return parse_hccn_conf(result.stdout), parse_hccn_conf_netmasks(result.stdout)


def require_device_ips(node: str, infos: Mapping[int, DeviceInfo], *,
                       require_link_up: bool = True) -> dict[int, str]:
    """{device: ip} for a rank table, or every device problem of `node` at once."""
    problems: list[ConfigError] = []
    for device, info in sorted(infos.items()):
        if info.ip is None:
            problems.append(DeviceAddressError(
                f"NPU {device} has no device address ({info.detail or 'nothing found'})", key=f"{node}: NPU {device}",
                fix=f"configure it on {node}: `{_IP_FIX_HINT.format(d=device)}` (it is then kept in /etc/hccn.conf)"))
        elif require_link_up and info.link is not None and info.link != "UP":
            problems.append(DeviceAddressError(
                f"NPU {device} ({info.ip}) RoCE link is {info.link}", key=f"{node}: NPU {device}",
                fix=f"check the cable/switch port of NPU {device} on {node}; "
                    f"`hccn_tool -i {device} -link -g` must say UP"))
    _raise(problems)
    return {device: info.ip for device, info in sorted(infos.items())}  # type: ignore[misc]


# --- the table -----------------------------------------------------------------------------------

class ExpectedServer(NamedTuple):
    """A server as the deployment file has it: what the table must contain, in this order."""

    server_id: str
    devices: Sequence[int]
    name: str | None = None


def build_rank_table(servers: Sequence[tuple[str, Mapping[int, str]]]) -> dict[str, Any]:
    """`hccl.json` for `servers` = [(server_id, {device_id: device_ip})], in deployment order.

    Ranks are contiguous per server (server k holds ranks k*n … k*n+n-1 when all have n devices), which is
    how msrun numbers workers (`node_rank * local_worker_num + i`). All numbers are strings, as HCCL wants.
    The result is validated before it is returned.
    """
    server_list, rank = [], 0
    for server_id, devices in servers:
        entries = []
        for device_id, device_ip in sorted(devices.items(), key=lambda kv: int(kv[0])):
            entries.append({"device_id": str(device_id), "device_ip": device_ip, "rank_id": str(rank)})
            rank += 1
        server_list.append({"server_id": server_id, "device": entries, "host_nic_ip": "reserve"})
    table = {"version": VERSION, "server_count": str(len(server_list)), "server_list": server_list,
             "status": "completed"}
    validate_rank_table(table, [ExpectedServer(sid, [int(d) for d in devs]) for sid, devs in servers])
    return table


def expected_from_deployment(dep) -> list[ExpectedServer]:
    """The servers of a `Deployment`: cluster-facing address, NPU ids and node name."""
    return [ExpectedServer(node.cluster_address, list(node.npus), node.name) for node in dep.nodes]


def rank_table_json(table: Mapping[str, Any]) -> str:
    return json.dumps(table, indent=4) + "\n"


def load_rank_table(text: str, *, source: str = "hccl.json") -> dict[str, Any]:
    """Parse a rank table file's text; JSON errors name the file and line."""
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise RankTableError(f"not valid JSON: {exc.msg}", file=source, line=exc.lineno,
                             fix="regenerate it with ascend-run") from None
    if not isinstance(table, dict):
        raise RankTableError("must be a JSON object with server_list", file=source)
    return table


def validate_rank_table(table: Mapping[str, Any], expected: Sequence[ExpectedServer] | None = None, *,
                        source: str | None = None) -> None:
    """Refuse a table HCCL would fail on; every problem is reported at once, naming server and device.

    Checks: version/status/server_count, every device with a valid unique address, unique device ids
    per server, ranks 0…N-1 in order and contiguous per server, and (with `expected`) the same servers in
    the same order with exactly the expected devices.
    """
    problems: list[ConfigError] = []

    def bad(message: str, key: str | None = None, fix: str | None = None) -> None:
        problems.append(RankTableError(message, file=source, key=key, fix=fix))

    if table.get("version") != VERSION:
        bad(f"version is {table.get('version')!r}, HCCL expects {VERSION!r}", "version")
    if table.get("status") != "completed":
        bad(f"status is {table.get('status')!r}, HCCL waits for 'completed'", "status")
    servers = table.get("server_list")
    if not isinstance(servers, list) or not servers:
        bad("server_list is missing or empty", "server_list", "list every server with its devices")
        _raise(problems)
        return
    if table.get("server_count") != str(len(servers)):
        bad(f"server_count is {table.get('server_count')!r} but server_list has {len(servers)} servers",
            "server_count", f'set "server_count": "{len(servers)}"')
    names = {e.server_id: e.name for e in expected or ()}
    def where(sid):
        return f"server {sid}" + (f" (node {names[sid]})" if names.get(sid) else "")
    seen_servers: dict[str, int] = {}
    seen_ips: dict[str, str] = {}
    next_rank = 0
    for index, server in enumerate(servers):
        sid = server.get("server_id") if isinstance(server, dict) else None
        if not isinstance(sid, str) or not sid:
            bad("has no server_id", f"server_list[{index}]", "use the server's cluster-facing IP")
            continue
        if sid in seen_servers:
            bad(f"{where(sid)} is listed twice (also server_list[{seen_servers[sid]}])",
                f"server_list[{index}]", "list every server once")
            continue
        seen_servers[sid] = index
        devices = server.get("device")
        if not isinstance(devices, list) or not devices:
            bad(f"{where(sid)} has no devices", f"server_list[{index}].device")
            continue
        seen_ids: set[str] = set()
        for pos, dev in enumerate(devices):
            key = f"server_list[{index}].device[{pos}]"
            dev = dev if isinstance(dev, dict) else {}
            did, dip, rank = dev.get("device_id"), dev.get("device_ip"), dev.get("rank_id")
            label = f"{where(sid)} device {did}"
            if not isinstance(did, str) or not did.isdigit():
                bad(f"{where(sid)}: device_id {did!r} is not a number in a string", key)
            elif did in seen_ids:
                bad(f"{label} is listed twice", key, "list every NPU once")
            seen_ids.add(str(did))
            if not isinstance(dip, str) or _ip_or_none(dip) is None:
                bad(f"{label} has no valid device_ip ({dip!r})", key,
                    f"read it on the server with `hccn_tool -i {did} -ip -g`, or set address_{did} in "
                    f"/etc/hccn.conf")
            elif dip in seen_ips:
                bad(f"{label}: device_ip {dip} is also used by {seen_ips[dip]}", key,
                    f"give every NPU its own address (`{_IP_FIX_HINT.format(d=did)}` on {sid})")
            else:
                seen_ips[dip] = label
            if rank != str(next_rank):
                bad(f"{label} has rank_id {rank!r}, expected {str(next_rank)!r}: ranks must run 0…N-1, "
                    "contiguous per server, in server order", key, "regenerate the table with ascend-run")
            next_rank += 1
    if expected is not None:
        _compare_expected(servers, expected, where, bad)
    _raise(problems)


def _compare_expected(servers: list, expected: Sequence[ExpectedServer], where, bad) -> None:
    got = [s.get("server_id") for s in servers if isinstance(s, dict)]
    want = [e.server_id for e in expected]
    if got != want:
        missing = [sid for sid in want if sid not in got]
        extra = [sid for sid in got if sid not in want]
        detail = ((f"missing {', '.join(map(where, missing))}" if missing else "")
                  + ("; " if missing and extra else "")
                  + (f"not in the deployment: {', '.join(map(str, extra))}" if extra else ""))
        bad(f"servers differ from the deployment ({detail or 'order differs'})", "server_list",
            "servers must appear in deployment-file order (node k holds ranks k*n…): regenerate the table")
        return
    for index, (server, exp) in enumerate(zip(servers, expected)):
        have = {int(d["device_id"]) for d in server.get("device") or [] if isinstance(d, dict)
                and str(d.get("device_id", "")).isdigit()}
        for device in sorted(set(exp.devices) - have):
            bad(f"{where(exp.server_id)} device {device} is missing", f"server_list[{index}].device",
                f"the deployment uses NPU {device} there; read its address with `hccn_tool -i {device} -ip -g`")
        for device in sorted(have - set(exp.devices)):
            bad(f"{where(exp.server_id)} device {device} is not one of the node's NPUs {list(exp.devices)}",
                f"server_list[{index}].device", "drop it, or add it to the node's npus: in the deployment file")


def _raise(problems: list[ConfigError]) -> None:
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigErrors(problems)
