"""One simulated server: its files on disk and the script that becomes its namespaces' first process.

The script runs under `ip netns exec NS unshare --uts --mount --propagation private`, so its hostname
and every mount it makes belong to this node alone: a private /run, an overlay on /etc (hccn.conf,
ascend_install.info) and /usr/local (driver tree, npu-smi, hccn_tool), its own /dev with stand-in
davinci character devices, its own /var/log and /data disks, cgroup mounts for its dockerd. It starts
dockerd (with `--device` paths resolving against this /dev) and then becomes sshd.
"""

from __future__ import annotations

import posixpath
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ascend_run.inputs.profiles import HardwareProfile
from ascend_run.sim import tools
from ascend_run.sim.network import SimNet

DATA_DISK_SIZE = "2T"     # tmpfs limit: big enough for the 1.4 TB weights check, costs nothing until written
LOG_DISK_SIZE = "16G"
DISK_SIZES = {"/data": DATA_DISK_SIZE, "/var/log": LOG_DISK_SIZE}  # the node's own tmpfs disks


@dataclass(frozen=True)
class NodeLayout:
    """Where a node's files live in the cluster directory."""

    root: Path

    @property
    def state(self) -> Path:
        """The node's NPU state (devices, links, health), as the root namespace sees it."""
        return self.root / "npu-state" / "state.json"

    @property
    def docker_socket(self) -> Path:
        return self.root / "docker.sock"

    @property
    def host_key(self) -> Path:
        return self.root / "ssh_host_ed25519_key"

    @property
    def sshd_config(self) -> Path:
        return self.root / "sshd_config"

    @property
    def script(self) -> Path:
        return self.root / "start.sh"

    @property
    def log(self) -> Path:
        return self.root / "node.log"


def cgroup_mounts() -> list[tuple[str, str, str]]:
    """(fstype, options, mountpoint) of the host's cgroup hierarchies, to recreate inside the node."""
    out = []
    for line in Path("/proc/1/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if rest and rest[0] in ("cgroup", "cgroup2") and fields[4].startswith("/sys/fs/cgroup/"):
            opts = ",".join(o for o in rest[2].split(",") if o not in ("rw", "ro"))
            out.append((rest[0], opts, fields[4]))
    return out


def _file_target(profile: HardwareProfile, path: str, layout: NodeLayout) -> Path:
    """Where a file that the node shows at `path` is written before the overlays go up."""
    for prefix, upper in (("/usr/local/", "usrlocal-upper"), ("/etc/", "etc-upper")):
        if path.startswith(prefix):
            return layout.root / upper / path[len(prefix):]
    raise ValueError(f"the simulator cannot place {path} (only under /usr/local or /etc)")


def write_node_files(layout: NodeLayout, net: SimNet, index: int, name: str, profile: HardwareProfile,
                     authorized_keys: Path, docker: bool, storage_driver: str = "overlay2",
                     address: str | None = None) -> None:
    """Everything the node needs on disk, from the profile: tools, driver tree, hccn.conf, sshd config.
    `address` is where its sshd listens (default: its address on the cluster's bridge)."""
    root = layout.root
    for sub in ("etc-upper", "etc-work", "usrlocal-upper", "usrlocal-work", "dev", "docker", "scratch"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    state = tools.initial_state(net, index, profile)
    layout.state.parent.mkdir(parents=True, exist_ok=True)
    tools.write_state(layout.state, state)
    t = profile.tools
    # The stand-ins read the state where the node (and a container that mounts the driver) sees it.
    seen_at = Path(state_mountpoint(profile), layout.state.name)
    _file_target(profile, state_mountpoint(profile), layout).mkdir(parents=True, exist_ok=True)
    files = {
        t.npu_smi: tools.render_tool(tools.NPU_SMI, seen_at),
        t.hccn_tool: tools.render_tool(tools.HCCN_TOOL, seen_at),
        t.hccn_conf: tools.hccn_conf(state),
        t.driver_version_file: f"Version={profile.driver_version}\n",
        t.install_info: "UserName=HwHiAiUser\nUserGroup=HwHiAiUser\nDriver_Install_Type=full\n"
                        "Driver_Install_Path_Param=/usr/local/Ascend\n",
        "/etc/hostname": name + "\n",
        # firmware ships beside the driver (…/Ascend/firmware); the 800I profile mounts it
        f"{posixpath.dirname(posixpath.dirname(t.driver_version_file))}/firmware/version.info":
            f"Version={profile.driver_version}\n",
    }
    for path, text in files.items():
        target = _file_target(profile, path, layout)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        if path in (t.npu_smi, t.hccn_tool):
            target.chmod(0o755)
    for mount in profile.mounts:  # directories the profile mounts (firmware, /usr/local/sbin …)
        src = mount.source
        if src.startswith("/usr/local/") and not _file_target(profile, src, layout).exists():
            _file_target(profile, src, layout).mkdir(parents=True, exist_ok=True)
    (root / "etc-upper" / "docker").mkdir(exist_ok=True)
    env = "SHLVL=1" + (f" DOCKER_HOST=unix://{layout.docker_socket}" if docker else "")
    _write_sshd(layout, name, address or net.address(index), authorized_keys, env)
    layout.script.write_text(node_script(layout, name, profile, docker, storage_driver))


def _write_sshd(layout: NodeLayout, name: str, address: str, authorized_keys: Path, env: str) -> None:
    """The node's sshd_config and (once) its host key."""
    layout.sshd_config.write_text("\n".join([
        f"ListenAddress {address}", "Port 22", f"HostKey {layout.host_key}",
        f"PidFile {layout.root / 'sshd.pid'}", f"AuthorizedKeysFile {authorized_keys}",
        "PermitRootLogin prohibit-password", "PasswordAuthentication no", "KbdInteractiveAuthentication no",
        "UsePAM no", "StrictModes no", "UseDNS no", "MaxStartups 1000:30:1000", "MaxSessions 1000",
        "AllowTcpForwarding yes", f"SetEnv {env}", "Subsystem sftp internal-sftp", "LogLevel ERROR", ""]))
    if not layout.host_key.exists():
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{name}", "-f",
                        str(layout.host_key)], check=True)


def write_bastion_files(layout: NodeLayout, name: str, address: str, authorized_keys: Path) -> None:
    """A login node: its own hostname and sshd, nothing else (no NPUs, no Docker)."""
    layout.root.mkdir(parents=True, exist_ok=True)
    _write_sshd(layout, name, address, authorized_keys, "SHLVL=1")
    layout.script.write_text("\n".join([
        "set -eu", f"hostname {shlex.quote(name)}", "mount -t tmpfs -o mode=755 tmpfs /run", "mkdir -p /run/sshd",
        f"exec /usr/sbin/sshd -D -e -f {shlex.quote(str(layout.sshd_config))}", ""]))


def node_script(layout: NodeLayout, name: str, profile: HardwareProfile, docker: bool,
                storage_driver: str = "overlay2") -> str:
    """The shell script that sets up the node's mount namespace and ends as its sshd."""
    root = layout.root
    q = shlex.quote
    lines = ["set -eu", f"hostname {q(name)}",
             "mount -t tmpfs -o mode=755 tmpfs /run", "mkdir -p /run/sshd"]
    upper = q(str(root))
    if storage_driver != "overlay2":
        # The cluster directory cannot hold overlay upper dirs (it is itself on overlayfs, e.g. inside a
        # container): give the node's /etc and /usr/local layers a private tmpfs, seeded from the directory.
        upper = '"$scratch"'
        lines += [f"scratch={q(str(root / 'scratch'))}", 'mount -t tmpfs -o mode=755 nodescratch "$scratch"',
                  f'cp -a {q(str(root / "etc-upper"))} {q(str(root / "usrlocal-upper"))} "$scratch"/',
                  'mkdir "$scratch/etc-work" "$scratch/usrlocal-work"']
    lines += [f"mount -t overlay overlay -o lowerdir=/etc,upperdir={upper}/etc-upper,workdir={upper}/etc-work /etc",
              "rm -f /etc/docker/key.json",
              (f"mount -t overlay overlay -o lowerdir=/usr/local,upperdir={upper}/usrlocal-upper,"
               f"workdir={upper}/usrlocal-work /usr/local")]
    lines += [f"mount -t tmpfs -o size={LOG_DISK_SIZE},mode=755 varlog /var/log", "mkdir -p /var/log/npu",
              "mkdir -p /data", f"mount -t tmpfs -o size={DATA_DISK_SIZE},mode=755 data /data",
              "mount -t tmpfs -o mode=755 varlib /var/lib/ascend-run",
              # a private /dev: the host's device nodes, plus this server's NPUs
              f"dev={q(str(root / 'dev'))}", 'mount -t tmpfs -o mode=755 nodedev "$dev"',
              'cp -a -x /dev/. "$dev"/', 'mkdir -p "$dev/pts" "$dev/shm" "$dev/mqueue"',
              'mount --bind /dev/pts "$dev/pts"', 'mount -t tmpfs -o mode=1777 shm "$dev/shm"']
    for path in profile.device_paths():
        name = path.removeprefix("/dev/")
        lines.append(f'rm -f "$dev/{name}"; mknod -m 666 "$dev/{name}" c 1 3')
    lines += ['mount --rbind "$dev" /dev',
              # the NPU state inside the driver tree: containers that mount the driver see it too
              f"mount --bind {q(str(layout.state.parent))} {q(state_mountpoint(profile))}"]
    if docker:
        lines.append("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup")
        for fstype, opts, mountpoint in cgroup_mounts():
            options = f"-o {q(opts)} " if opts else ""
            lines.append(f"mkdir -p {q(mountpoint)} && mount -t {fstype} {options}{fstype} {q(mountpoint)}")
        lines.append(
            f"dockerd --data-root={q(str(root / 'docker'))} --exec-root=/run/docker-exec "
            f"--pidfile=/run/dockerd.pid -H unix://{q(str(layout.docker_socket))} --iptables=false "
            f"--bridge=none --storage-driver={storage_driver} --log-level=error "
            f"> {q(str(root / 'dockerd.log'))} 2>&1 &")
    lines.append(f"exec /usr/sbin/sshd -D -e -f {q(str(layout.sshd_config))}")
    return "\n".join(lines) + "\n"


def state_mountpoint(profile: HardwareProfile) -> str:
    """Where a node shows its state directory: inside the driver tree, which every profile mounts
    into its containers, so `npu-smi` and `hccn_tool` work in a job container as on the server."""
    return posixpath.join(posixpath.dirname(profile.tools.driver_version_file), ".ascend-run-sim")


def start_command(netns: str, layout: NodeLayout) -> list[str]:
    return ["ip", "netns", "exec", netns, "unshare", "--uts", "--mount", "--propagation", "private",
            "sh", str(layout.script)]


def public_host_key(layout: NodeLayout) -> str:
    kind, key = Path(f"{layout.host_key}.pub").read_text().split()[:2]
    return f"{kind} {key}"
