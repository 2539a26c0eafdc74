"""The deployment file: one YAML describing a cluster of Ascend servers and the job to run on it.

`load_deployment(path)` reads it, applies `extends:`, expands pdsh-style node ranges, validates
everything against the hardware profile and returns a frozen `Deployment`. Every error names the file,
the line, the key path and what to do, e.g.

    examples/bad.yaml:12: nodes[3].npus[0]: NPU index 8 is out of range for atlas-800t-a2 (0-7)
"""

from __future__ import annotations

import ipaddress
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from ascend_run.inputs import hostrange
from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.inputs.common import Mount, Strict
from ascend_run.inputs.profiles import HardwareProfile, get_profile
from ascend_run.inputs.yamlio import format_loc, line_of, load_yaml

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
JOB_NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,50}[a-z0-9])?$")
CONTAINER_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.-]{0,127}$")
HOSTNAME = re.compile(r"^(?=.{1,253}$)[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?)*$")
NODE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$")
USER_NAME = r"^[a-z_][a-z0-9_-]*\$?$"  # a POSIX login name
SIZE = re.compile(r"^[0-9]+[bkmgBKMG]?$")


_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40, "p": 1 << 50}


def parse_size(text: str | int) -> int:
    """'1.4T', '500g', '64Gi', 1024 -> bytes (binary units; a trailing 'i' or 'b' is accepted)."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([kmgtpKMGTP]?)(?:i?[bB]?)\s*", str(text))
    if not match:
        raise ValueError(f"{text!r} is not a size like 500G, 1.4T or 64Gi")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _env_mapping(value: Any) -> Any:
    """YAML numbers become strings; booleans are refused because `off` vs `false` matters to MindSpore."""
    if not isinstance(value, dict):
        return value
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME.match(name):
            raise ValueError(f"{name!r} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if isinstance(item, bool):
            raise ValueError(f"{name}: write the value in quotes (\"true\"/\"off\"), YAML booleans are ambiguous")
        if isinstance(item, (int, float)):
            item = str(item)
        out[name] = item
    return out


def check_address(value: str) -> str:
    """An IPv4/IPv6 address or a DNS name. Dotted numbers that are not an IP are refused."""
    try:
        return str(ipaddress.ip_address(value))
    except ValueError:
        pass
    if re.fullmatch(r"[0-9.]+", value) or not HOSTNAME.match(value):
        raise ValueError(f"{value!r} is neither an IP address nor a valid host name")
    return value


class SSHSettings(Strict):
    """How to reach the servers. Host keys are always verified against `known_hosts`."""

    user: str = Field(default="root", pattern=USER_NAME)
    port: int = Field(default=22, ge=1, le=65535)
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout: float = Field(default=10, gt=0, le=600)


class SSHOverride(Strict):
    user: str | None = Field(default=None, pattern=USER_NAME)
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = None


class NodeEntry(Strict):
    """One line of `nodes:` as the user writes it; `address`/`name` may be pdsh-style ranges."""

    address: str
    name: str | None = None
    npus: tuple[int, ...] | None = None
    cluster_address: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ssh: SSHOverride | None = None

    _env = field_validator("env", mode="before")(lambda cls, v: _env_mapping(v))

    @field_validator("npus")
    @classmethod
    def _npus_unique(cls, value: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if value is not None:
            if not value:
                raise ValueError("must list at least one NPU index (or be left out for all)")
            dupes = sorted({i for i in value if value.count(i) > 1})
            if dupes:
                raise ValueError(f"NPU index {dupes[0]} is listed twice")
            if any(i < 0 for i in value):
                raise ValueError("NPU indices are 0 or more")
        return value

    @field_validator("cluster_address")
    @classmethod
    def _cluster_address(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)


class ContainerSettings(Strict):
    name: str | None = None
    privileged: bool = False
    user: str | None = None
    shm_size: str | None = None
    workdir: str | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not CONTAINER_NAME.match(value):
            raise ValueError(f"{value!r} is not a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
        return value

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, value: str | None) -> str | None:
        if value is not None and not SIZE.match(value):
            raise ValueError(f"{value!r} is not a size like 500g or 64m")
        return value


def server_path(value: str | None) -> str | None:
    """A path on the servers (None allowed): it must be absolute, as there is no working directory there."""
    if value is not None and not value.startswith("/"):
        raise ValueError(f"{value!r}: paths on the servers must be absolute")
    return value


class SyncDir(Strict):
    """A local directory copied to every node before the launch and mounted read-only in the container."""

    source: str
    target: str

    @field_validator("target")
    @classmethod
    def _absolute_target(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError(f"must be an absolute path in the container, got {value!r}")
        return value


class JobSettings(Strict):
    """The job: MindFormers' `msrun_launcher.sh` form or plain `msrun`, with the same values."""

    launcher: Literal["msrun_launcher", "msrun"] = "msrun_launcher"
    command: str = Field(min_length=1)
    workdir: str = "/home/work/mindformers"
    launcher_script: str = "scripts/msrun_launcher.sh"
    master_port: int = Field(default=8118, ge=1024, le=65535)
    master_address: str | None = None
    local_workers: int | None = Field(default=None, gt=0)
    log_dir: str = "output/msrun_log"
    cluster_timeout: int = Field(default=7200, gt=0)
    config: str | None = None
    host_log_dir: str = "/var/log/ascend-run/{name}"
    sync: list[SyncDir] = Field(default_factory=list)
    serve_port: int | None = Field(default=None, ge=1, le=65535)
    require_free: dict[str, str] = Field(default_factory=dict)
    rank_table: str | None = None  # hccl.json on every server: mounted read-only, RANK_TABLE_FILE points at it
    # Keeping the job alive (docs/supervisor.md). restarts: 0 = stop everything on the first failure, as
    # before; N = up to N relaunches from the newest checkpoint every rank has, spares taking failed servers.
    restarts: int = Field(default=0, ge=0)
    hang_timeout: float = Field(default=600, gt=0)         # s without a new step line on any rank, after the first
    start_timeout: float = Field(default=1800, gt=0)       # s until the first step line (init, compile, loading)
    unreachable_timeout: float = Field(default=60, gt=0)   # s a server may stay unreachable before it is a failure
    restart_gap: float = Field(default=10, ge=0)           # s between stop and relaunch (HCCL: EJ0001 within ~10 s)
    output_dir: str | None = None  # MindFormers' output_dir in the container; default: job.config's output_dir

    @field_validator("require_free")
    @classmethod
    def _sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for path, size in value.items():
            server_path(path)
            parse_size(size)
        return value

    _server_paths = field_validator("rank_table", "host_log_dir")(lambda cls, v: server_path(v))

    @field_validator("output_dir")
    @classmethod
    def _container_path(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("/"):
            raise ValueError(f"{value!r}: write output_dir as the container sees it, an absolute path")
        return value

    @field_validator("master_address")
    @classmethod
    def _master(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)


HUB_REPO = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


class WeightsSettings(Strict):
    """Where the model weights come from and where they go (`ascend-run weights fetch`)."""

    repo: str = "MindSpore-Lab/DeepSeek-V3"
    revision: str = Field(default="main", pattern=r"^[A-Za-z0-9][A-Za-z0-9_./-]*$")
    dir: str | None = None           # on the download node, or on storage every node mounts
    node: str | None = None          # which node downloads (name, address or rank); the first by default
    image: str | None = None         # an image with openmind_hub (the infer image pins it); the file's by default
    endpoint: str | None = None      # the hub; openmind_hub's default (https://modelers.cn) when unset
    https_proxy: str | None = None   # the servers' way out, e.g. http://proxy.example:3128
    ca_bundle: str | None = None     # PEM on the download node for a TLS-intercepting proxy

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        if not HUB_REPO.match(value):
            raise ValueError(f"{value!r} is not a hub repository like MindSpore-Lab/DeepSeek-V3")
        return value

    _server_paths = field_validator("dir", "ca_bundle")(lambda cls, v: server_path(v))

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith("https://"):
            raise ValueError(f"{value!r}: openmind_hub only talks HTTPS (https://…)")
        return value


class DeploymentFile(Strict):
    """The whole file as written (after `extends:` is merged)."""

    name: str
    profile: str
    image: str = Field(min_length=1)
    ssh: SSHSettings = Field(default_factory=SSHSettings)
    nodes: list[NodeEntry] = Field(min_length=1)
    container: ContainerSettings = Field(default_factory=ContainerSettings)
    mounts: list[Mount] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    job: JobSettings | None = None
    spares: list[NodeEntry] = Field(default_factory=list)  # standby servers, written like nodes:
    weights: WeightsSettings = Field(default_factory=WeightsSettings)

    _env = field_validator("env", mode="before")(lambda cls, v: _env_mapping(v))

    @field_validator("name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        if not JOB_NAME.match(value):
            raise ValueError(f"{value!r} must be lower-case letters, digits and '-', at most 52 characters "
                             "(it names containers, labels and Kubernetes objects)")
        return value

    @field_validator("mounts", mode="before")
    @classmethod
    def _short_mounts(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [Mount.split_short(item) if isinstance(item, str) else item for item in value]
        return value

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        if any(c.isspace() for c in value) or value.startswith("-"):
            raise ValueError(f"{value!r} is not an image reference (e.g. registry/repo/name:tag)")
        return value


@dataclass(frozen=True)
class Node:
    """One server, resolved: its rank is its position in the file."""

    rank: int
    name: str
    address: str
    npus: tuple[int, ...]
    cluster_address: str
    ssh: SSHSettings
    env: dict[str, str] = field(default_factory=dict)

    @property
    def hostname(self) -> str:
        """The container's hostname: distinct per node, as MindFormers requires."""
        return self.name


@dataclass(frozen=True)
class Deployment:
    """A validated deployment: settings, the hardware profile and the expanded node list."""

    path: Path
    spec: DeploymentFile
    profile: HardwareProfile
    nodes: tuple[Node, ...]
    spares: tuple[Node, ...] = ()  # standby servers (rank -1 until one takes a node's place)

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def image(self) -> str:
        return self.spec.image

    @property
    def mounts(self) -> list[Mount]:
        return self.spec.mounts

    @property
    def job(self) -> JobSettings | None:
        return self.spec.job

    @property
    def container_name(self) -> str:
        return self.spec.container.name or self.spec.name

    @property
    def total_npus(self) -> int:
        return sum(len(n.npus) for n in self.nodes)

    @property
    def master(self) -> Node:
        return self.nodes[0]

    @property
    def master_address(self) -> str:
        """`master_ip` of the article: node 0's cluster-facing address unless the job overrides it."""
        job = self.spec.job
        return (job.master_address if job and job.master_address else None) or self.nodes[0].cluster_address

    @property
    def host_log_dir(self) -> str:
        """Where each server keeps the job's msrun logs (mounted over the container's log_dir)."""
        template = self.spec.job.host_log_dir if self.spec.job else "/var/log/ascend-run/{name}"
        return template.format(name=self.name)

    def with_nodes(self, nodes: list[Node] | tuple[Node, ...]) -> Deployment:
        """The same deployment on other servers (a spare in a failed node's place, with its rank)."""
        from dataclasses import replace

        return replace(self, nodes=tuple(nodes))

    def sync_source(self, index: int) -> Path:
        """Local path of `job.sync[index].source`, relative to the deployment file."""
        return (self.path.parent / os.path.expanduser(self.spec.job.sync[index].source)).resolve()

    def node_env(self, node: Node) -> dict[str, str]:
        """Environment for the node's container: file-wide env, then the node's overrides."""
        return {**self.spec.env, **node.env}

    def select(self, names: list[str] | None) -> list[Node]:
        """Nodes by name, address or rank (as given to --nodes); all nodes when `names` is empty."""
        if not names:
            return list(self.nodes)
        wanted: list[Node] = []
        for token in names:
            for pattern in hostrange.expand(token):
                match = [n for n in self.nodes if pattern in (n.name, n.address, str(n.rank))]
                if not match:
                    raise ConfigError(f"no node named {pattern!r}", file=str(self.path), key="nodes",
                                      fix="use a node name, address or rank from the deployment file")
                wanted.extend(m for m in match if m not in wanted)
        return wanted


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _deep_merge(base[key], value) if key in base else value
        return merged
    return over


def _read_with_extends(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError("the file must be a mapping (name:, profile:, nodes:, …)", file=str(path),
                          fix="start from one of the files in examples/")
    base_ref = data.get("extends")
    if base_ref is None:
        return data
    if not isinstance(base_ref, str):
        raise ConfigError("must be a path to another deployment file", file=str(path), key="extends")
    base_path = (path.parent / os.path.expanduser(base_ref)).resolve()
    if base_path in seen:
        raise ConfigError(f"{base_ref!r} extends itself in a loop", file=str(path), key="extends")
    if not base_path.is_file():
        raise ConfigError(f"base file {base_ref!r} not found (looked at {base_path})", file=str(path),
                          key="extends", fix="the path is relative to the file that names it")
    base = _read_with_extends(base_path, seen + (base_path,))
    own = {k: v for k, v in data.items() if k != "extends"}
    merged = _deep_merge(base, own)
    return merged


def _expand_entry(entry: NodeEntry, index: int, section: str = "nodes") -> list[tuple[str, str]]:
    """(name, address) pairs of one `nodes:` (or `spares:`) entry; ranges in name and address zip together."""
    try:
        addresses = hostrange.expand(entry.address)
    except ValueError as exc:
        raise _err(f"{exc}", (section, index, "address"))
    names: list[str | None]
    if entry.name is None:
        names = [None] * len(addresses)
    else:
        try:
            names = list(hostrange.expand(entry.name))
        except ValueError as exc:
            raise _err(f"{exc}", (section, index, "name"))
        if len(names) != len(addresses):
            raise _err(f"names expand to {len(names)} entries but the address to {len(addresses)}",
                       (section, index, "name"), fix="give the name and the address ranges the same length")
    return [(name or _default_name(addr), addr) for name, addr in zip(names, addresses)]


def _default_name(address: str) -> str:
    try:
        ipaddress.ip_address(address)
    except ValueError:
        return address.split(".")[0]
    return "node-" + re.sub(r"[^0-9A-Za-z]+", "-", address).strip("-")


class _LocError(Exception):
    def __init__(self, message: str, loc: tuple, fix: str | None = None) -> None:
        self.message, self.loc, self.fix = message, loc, fix


def _err(message: str, loc: tuple, fix: str | None = None) -> _LocError:
    return _LocError(message, loc, fix)


def _resolve_nodes(spec: DeploymentFile, profile: HardwareProfile) -> tuple[list[Node], list[Node], list[_LocError]]:
    """The nodes and the spares; a spare is a server like any node, so names and addresses are unique across both."""
    nodes: list[Node] = []
    spares: list[Node] = []
    problems: list[_LocError] = []
    seen_names: dict[str, str] = {}
    seen_endpoints: dict[tuple[str, int], str] = {}
    for section, entries, out in (("nodes", spec.nodes, nodes), ("spares", spec.spares, spares)):
        for index, entry in enumerate(entries):
            try:
                pairs = _expand_entry(entry, index, section)
            except _LocError as exc:
                problems.append(exc)
                continue
            npus = entry.npus if entry.npus is not None else tuple(range(profile.npu_count))
            for pos, npu in enumerate(npus):
                if npu >= profile.npu_count:
                    problems.append(_err(f"NPU index {npu} is out of range for {profile.name} "
                                         f"(0-{profile.npu_count - 1})", (section, index, "npus", pos)))
            ssh = spec.ssh.model_copy(update={k: v for k, v in (entry.ssh.model_dump() if entry.ssh else {}).items()
                                              if v is not None})
            for name, address in pairs:
                try:
                    address = check_address(address)
                except ValueError as exc:
                    problems.append(_err(str(exc), (section, index, "address")))
                    continue
                if not NODE_NAME.match(name):
                    problems.append(_err(f"{name!r} is not a valid node name (letters, digits, '-'; it becomes "
                                         "the container hostname)", (section, index, "name")))
                    continue
                if name in seen_names:
                    problems.append(_err(f"duplicate node name {name!r} (also {seen_names[name]})",
                                         (section, index, "name"), fix="every server needs a distinct name"))
                    continue
                endpoint = (address, ssh.port)
                if endpoint in seen_endpoints:
                    problems.append(_err(f"duplicate node {address}:{ssh.port} (also {seen_endpoints[endpoint]})",
                                         (section, index, "address"),
                                         fix="list every server once: a spare is not also a node"))
                    continue
                seen_names[name] = seen_endpoints[endpoint] = f"{section}[{index}]"
                out.append(Node(rank=len(out) if section == "nodes" else -1, name=name, address=address,
                                npus=tuple(npus), cluster_address=entry.cluster_address or address, ssh=ssh,
                                env=dict(entry.env)))
    return nodes, spares, problems


def _check_spares(spec: DeploymentFile, nodes: list[Node], spares: list[Node]) -> list[_LocError]:
    """A spare must be able to take any node's place: as many NPUs as the job runs workers on a node."""
    problems: list[_LocError] = []
    if not nodes:
        return problems
    job = spec.job
    need = job.local_workers if job and job.local_workers else len(nodes[0].npus)
    exact = not (job and job.local_workers)
    index_of = _entry_index(spec.spares)
    for spare in spares:
        count = len(spare.npus)
        if (exact and count != need) or count < need:
            problems.append(_err(f"spare {spare.name} has {count} NPUs but every node runs {need} workers",
                                 ("spares", index_of.get(spare.name, 0), "npus"),
                                 fix=f"give the spare {need} NPUs (npus: [...]), like the nodes it would replace"))
    return problems


def _entry_index(entries: list[NodeEntry]) -> dict[str, int]:
    """Which entry each expanded name came from (for error locations)."""
    found: dict[str, int] = {}
    for index, entry in enumerate(entries):
        try:
            for name, _ in _expand_entry(entry, index, "spares"):
                found.setdefault(name, index)
        except _LocError:
            pass
    return found


def _check_job(spec: DeploymentFile, nodes: list[Node]) -> list[_LocError]:
    problems: list[_LocError] = []
    job = spec.job
    if job is None or not nodes:
        return problems
    sizes = {len(n.npus) for n in nodes}
    if job.local_workers is not None:
        too_many = [n.name for n in nodes if job.local_workers > len(n.npus)]
        if too_many:
            problems.append(_err(f"{job.local_workers} workers per node but {too_many[0]} has only "
                                 f"{len(nodes[[n.name for n in nodes].index(too_many[0])].npus)} NPUs",
                                 ("job", "local_workers")))
    elif len(sizes) > 1:
        problems.append(_err("nodes have different NPU counts; msrun needs the same number of workers on "
                             "every node", ("nodes",), fix="give every node the same number of npus, or set "
                             "job.local_workers"))
    return problems


def load_deployment(path: str | Path) -> Deployment:
    """Read, merge, validate and resolve a deployment file. Raises ConfigError(s) naming file and key."""
    path = Path(path)
    return deployment_from_data(_read_with_extends(path), path)


def deployment_from_data(raw: dict, path: str | Path = "<memory>") -> Deployment:
    """Validate and resolve already-parsed deployment data (line numbers when `raw` is ruamel data)."""
    path = Path(path)
    file = str(path)
    try:
        spec = DeploymentFile.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for item in exc.errors():
            loc = tuple(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            if item["type"] == "extra_forbidden":
                message = "unknown key (typo?)"
            elif item["type"] == "missing":
                message = "required key is missing"
            errors.append(ConfigError(message, file=file, key=format_loc(loc), line=line_of(raw, loc)))
        raise (errors[0] if len(errors) == 1 else ConfigErrors(errors)) from None
    try:
        profile = get_profile(spec.profile)
    except ConfigError as exc:
        raise ConfigError(exc.message, file=file, key="profile", line=line_of(raw, ("profile",)),
                          fix=exc.fix) from None
    nodes, spares, problems = _resolve_nodes(spec, profile)
    problems += _check_job(spec, nodes)
    problems += _check_spares(spec, nodes, spares)
    if problems:
        errors = [ConfigError(p.message, file=file, key=format_loc(p.loc), line=line_of(raw, p.loc), fix=p.fix)
                  for p in problems]
        raise errors[0] if len(errors) == 1 else ConfigErrors(errors)
    return Deployment(path=path, spec=spec, profile=profile, nodes=tuple(nodes), spares=tuple(spares))
