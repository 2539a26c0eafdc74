"""Stand-ins for the hardware tools that cannot exist without NPUs: `npu-smi` and `hccn_tool`.

They are small Python scripts, installed at the real tools' paths inside a simulated server, that print
the real tools' output formats from the node's state file (`state.json`). Tests change the state file to
take a link down, mark an NPU unhealthy or make it vanish, and every reader of the real formats (preflight,
rank tables) sees it as it would on a server.
"""

from __future__ import annotations

import json
from pathlib import Path

from ascend_run.inputs.profiles import HardwareProfile
from ascend_run.sim.network import SimNet


def initial_state(net: SimNet, index: int, profile: HardwareProfile) -> dict:
    return {
        "driver_version": profile.driver_version,
        "devices": {str(i): {"present": True, "health": "OK", "link": "UP", "ip": net.device_ip(index, i),
                             "netmask": "255.255.255.0", "chip": "910B3", "hbm_used_mb": 3161,
                             "hbm_total_mb": profile.npu_memory_gb * 1024, "processes": []}
                    for i in range(profile.npu_count)},
    }


def hccn_conf(state: dict) -> str:
    lines = []
    for npu, dev in sorted(state["devices"].items(), key=lambda kv: int(kv[0])):
        lines += [f"address_{npu}={dev['ip']}", f"netmask_{npu}={dev['netmask']}"]
    return "\n".join(lines) + "\n"


def write_state(path: Path, state: dict) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.replace(path)  # readers never see half a file


# -S: no site module (the stand-ins need only json and sys). Preflight runs hccn_tool twice per NPU on every
# server: 16 starts of a C tool on a real server, 16 Python starts here, a third of the time each without site.
_COMMON = '''#!/usr/bin/python3 -S
# Simulated by ascend-run sim: reads {state} and prints what the real tool prints.
import json, sys
try:
    with open({state!r}) as fh:
        STATE = json.load(fh)
except OSError:  # what the real tools print when the driver is not there (not mounted, not loaded)
    sys.exit("dcmi module initialize failed. ret is -8005")
DEVICES = STATE["devices"]
'''

NPU_SMI = _COMMON + r'''
def info():
    ver = STATE["driver_version"].lower()
    print("+------------------------------------------------------------------------------------------------+")
    print("| npu-smi %-24s Version: %-53s|" % (ver, ver))
    print("+---------------------------+---------------+----------------------------------------------------+")
    print("| NPU   Name                | Health        | Power(W)    Temp(C)           Hugepages-Usage(page)|")
    print("| Chip                      | Bus-Id        | AICore(%)   Memory-Usage(MB)  HBM-Usage(MB)        |")
    print("+===========================+===============+====================================================+")
    for npu in sorted(DEVICES, key=int):
        d = DEVICES[npu]
        if not d["present"]:
            continue
        print("| %-5s %-19s | %-13s | %-11s %-17s %-21s|" % (npu, d["chip"], d["health"], "93.5", "41", "0    / 0"))
        hbm = "%-4s / %s" % (d.get("hbm_used_mb", 3161), d.get("hbm_total_mb", 65536))
        print("| %-25s | %-13s | %-11s %-17s %-21s|" % ("0", "0000:%02X:00.0" % (0xC1 + int(npu)), "0",
                                                         "0    / 0", hbm))
        print("+===========================+===============+====================================================+")
    print("+---------------------------+---------------+----------------------------------------------------+")
    print("| NPU     Chip              | Process id    | Process name             | Process memory(MB)      |")
    print("+===========================+===============+====================================================+")
    for npu in sorted(DEVICES, key=int):
        if not DEVICES[npu]["present"]:
            continue
        procs = DEVICES[npu].get("processes") or []
        for p in procs:
            print("| %-7s %-17s | %-13s | %-24s | %-24s|" % (npu, "0", p["pid"], p["name"], p["memory_mb"]))
        if not procs:
            print("| No running processes found in NPU %-61s|" % npu)
        print("+===========================+===============+====================================================+")

args = sys.argv[1:]
if args[:1] == ["info"] and len(args) == 1:
    info()
elif args[:1] == ["-v"] or args[:1] == ["--version"]:
    print("npu-smi version: " + STATE["driver_version"].lower())
else:
    sys.exit("Usage: npu-smi info  (ascend-run sim stand-in: only 'info' is simulated)")
'''

HCCN_TOOL = _COMMON + r'''
args = sys.argv[1:]
if len(args) < 4 or args[0] != "-i":
    sys.exit("Usage: hccn_tool -i <device_id> -ip|-link|-net_health -g")
npu, what = args[1], args[2]
dev = DEVICES.get(npu)
if dev is None or not dev["present"]:
    print("Get device %s failed, ret = -8005" % npu, file=sys.stderr)
    sys.exit(1)
if what == "-ip":
    print("ipaddr:%s" % dev["ip"])
    print("netmask:%s" % dev["netmask"])
elif what == "-link":
    print("link status: %s" % dev["link"])
elif what == "-net_health":
    print("net health status: %s" % ("Success" if dev["link"] == "UP" else "Fault"))
else:
    sys.exit("hccn_tool: %s is not simulated" % what)
'''


def render_tool(template: str, state_path: Path) -> str:
    return template.replace("{state}", str(state_path)).replace("{state!r}", repr(str(state_path)))
