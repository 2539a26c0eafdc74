"""Reading the Ascend tools' text output: `npu-smi info`, `hccn_tool`, `hccn.conf`, driver `version.info`."""

from __future__ import annotations

import re
from dataclasses import dataclass

# | 0     910B3               | OK            | 93.5        41                0    / 0             |
_NPU_ROW = re.compile(r"^\|\s*(\d+)\s+([A-Za-z0-9][\w.-]*)\s*\|\s*([A-Za-z]+)\s*\|")
_VERSION = re.compile(r"^\s*(?:Version|version)\s*=\s*(\S+)", re.M)


@dataclass(frozen=True)
class NpuStatus:
    npu: int
    name: str
    health: str

    @property
    def healthy(self) -> bool:
        return self.health.upper() == "OK"


def parse_npu_smi_info(text: str) -> dict[int, NpuStatus]:
    """NPUs listed by `npu-smi info`, by id. The chip rows (second line of each NPU) are skipped."""
    out: dict[int, NpuStatus] = {}
    for line in text.splitlines():
        match = _NPU_ROW.match(line)
        if match and match.group(3).lower() not in ("bus",):
            npu = int(match.group(1))
            out.setdefault(npu, NpuStatus(npu, match.group(2), match.group(3)))
    return out


def parse_driver_version(text: str) -> str | None:
    """`Version=24.1.rc3` from the driver's version.info."""
    match = _VERSION.search(text)
    return match.group(1) if match else None


def version_family(version: str) -> tuple[int, ...]:
    """'24.1.RC3' -> (24, 1): releases of one family share an ABI with the CANN built for it."""
    return tuple(int(x) for x in re.findall(r"\d+", version)[:2])


_IPADDR = re.compile(r"^\s*ipaddr\s*:\s*(\S+)", re.M)
_LINK = re.compile(r"link status\s*:\s*(\w+)", re.I)
_HCCN_CONF = re.compile(r"^\s*address_(\d+)\s*=\s*(\S+)\s*$", re.M)


def parse_hccn_ip_output(text: str) -> str | None:
    """`hccn_tool -i N -ip -g` prints `ipaddr:10.0.0.1` and `netmask:…`; the address, or None."""
    match = _IPADDR.search(text)
    return match.group(1) if match else None


def parse_link_status(text: str) -> str | None:
    """`hccn_tool -i N -link -g` prints `link status: UP`; 'UP', 'DOWN', or None when unreadable."""
    match = _LINK.search(text)
    return match.group(1).upper() if match else None


def parse_hccn_conf(text: str) -> dict[int, str]:
    """`/etc/hccn.conf` lines `address_N=IP`, by device id."""
    return {int(n): ip for n, ip in _HCCN_CONF.findall(text)}


_NETMASK = re.compile(r"^\s*netmask\s*:\s*(\S+)", re.M)
_CONF_NETMASK = re.compile(r"^\s*netmask_(\d+)\s*=\s*(\S+)\s*$", re.M)


def parse_hccn_netmask_output(text: str) -> str | None:
    """The `netmask:` line of `hccn_tool -i N -ip -g`, or None."""
    match = _NETMASK.search(text)
    return match.group(1) if match else None


def parse_hccn_conf_netmasks(text: str) -> dict[int, str]:
    """`/etc/hccn.conf` lines `netmask_N=MASK`, by device id."""
    return {int(n): mask for n, mask in _CONF_NETMASK.findall(text)}
