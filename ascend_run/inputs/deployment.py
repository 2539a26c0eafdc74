"""The deployment file: one YAML describing a cluster of Ascend servers and the job to run on it.

`load_deployment(path)` reads it, applies `extends:`, expands pdsh-style node ranges, validates
everything against the hardware profile and returns a frozen `Deployment`. Every error names the file,
the line, the key path and what to do, e.g.

    examples/bad.yaml:12: nodes[3].npus[0]: NPU index 8 is out of range for atlas-800t-a2 (0-7)

Every string is checked where it is read for what it may be (`inputs.text`: one line, a grammar, never
an option where a program reads options), so the renderers and the launcher quote values they can trust
to be what the file says. The work done for any file is bounded: its size, its YAML aliases and nesting
(`inputs.yamlio`), the `extends:` chain, and the node count, which is known before a name is built.
"""

from __future__ import annotations

import ipaddress
import os
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, ValidationError, ValidationInfo, field_validator, model_validator

from ascend_run.errors import ConfigError, ConfigErrors
from ascend_run.inputs import hostrange, sshconfig, text
from ascend_run.inputs.common import Mount, Strict, no_cycle_collection, seconds
from ascend_run.inputs.profiles import HardwareProfile, get_profile
from ascend_run.inputs.text import (
    CONTAINER_NAME,
    CONTAINER_USER,
    ENV_NAME,
    HOSTNAME,
    HUB_REPO,
    IMAGE_REF,
    JOB_NAME,
    NODE_NAME,
    PLAIN_PATH,
    REVISION,
    SIZE,
    URL,
    USER_NAME,
    Invalid,
    shown,
)
from ascend_run.inputs.yamlio import MAX_VALUES, check_bounds, format_loc, line_of, load_yaml_sized

DEFAULT_HOST_LOG_DIR = "/var/log/ascend-run/{name}"  # {name}: the deployment's name
MAX_EXTENDS = 16       # files in one `extends:` chain
MAX_NODES = 100_000    # servers in one file, all entries together
MAX_ERRORS = 20        # problems listed in one report (the rest are counted)
MAX_RESTARTS = 1000    # job.restarts
MAX_CONNECT_TIMEOUT = 600  # s, ssh.connect_timeout (and -- timeout of a connection)
WEEK = 7 * 86400
# job.* durations in seconds: (lowest, highest); 0 as the lowest means "more than 0" except for restart_gap
_DURATIONS = {"cluster_timeout": (0, WEEK), "hang_timeout": (0, WEEK), "start_timeout": (0, WEEK),
              "unreachable_timeout": (0, 86400), "restart_gap": (0, 86400)}


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
    """YAML numbers become strings; booleans are refused because `off` vs `false` matters to MindSpore.
    Values are data (quoted wherever they land) and may hold tabs and newlines, never NUL: bash drops
    it, so docker would receive another value than the one checked here."""
    if not isinstance(value, dict):
        return value
    out = {}
    for name, item in value.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            raise Invalid(f"{shown(name)} is not a valid environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        if isinstance(item, bool):
            raise ValueError(f"{name}: write the value in quotes (\"true\"/\"off\"), YAML booleans are ambiguous")
        if isinstance(item, (int, float)):
            item = str(item)
        out[name] = item
    return out


_SCOPE_ID = re.compile(r"\A[A-Za-z0-9_.-]{1,64}\Z")  # fe80::1%eth0; the address reaches an `eval`
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(rf"\A{_OCTET}(?:\.{_OCTET}){{3}}\Z")  # canonical dotted quads: ipaddress's answer, faster
_MAYBE_IP = re.compile(r"[0-9.]+|.*:.*", re.DOTALL)  # what ipaddress may take: digits and dots, or IPv6's colons


def check_address(value: str) -> str:
    """An IPv4/IPv6 address or a DNS name. Dotted numbers that are not an IP are refused."""
    if isinstance(value, str) and _IPV4.match(value):
        return value
    if not isinstance(value, str) or not value.isascii():
        raise Invalid(f"{shown(value)} is neither an IP address nor a valid host name")
    if not _MAYBE_IP.fullmatch(value):  # letters, no colon: a name (ipaddress would refuse it, slowly)
        if HOSTNAME.fullmatch(value):
            return value
        raise Invalid(f"{shown(value)} is neither an IP address nor a valid host name")
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        pass
    else:
        scope = getattr(address, "scope_id", None)
        if scope is not None and not _SCOPE_ID.fullmatch(scope):
            raise Invalid(f"{shown(value)} has a bad IPv6 zone (after %)", fix="write e.g. fe80::1%eth0")
        return str(address)
    if re.fullmatch(r"[0-9.]+", value) or not HOSTNAME.fullmatch(value):
        raise Invalid(f"{shown(value)} is neither an IP address nor a valid host name")
    return value


def server_path(value: str | None) -> str | None:
    """A path on the servers (None allowed): absolute, as there is no working directory there; one line."""
    return None if value is None else text.absolute_path(value)


def container_path(value: str | None) -> str | None:
    """A path in the container (None allowed): absolute, one line."""
    return None if value is None else text.absolute_path(value, "in the container")


def _login(value: str | None) -> str | None:
    return None if value is None else text.matching(USER_NAME, value, "a login name (letters, digits, _ . -)")


class SSHSettings(Strict):
    """How to reach the servers. Host keys are always verified against `known_hosts`.

    The user's ssh config (`config_file`, default ~/.ssh/config) fills in what this section does not set:
    only the keys written here win over it (see inputs/sshconfig.py), so the defaults below apply last."""

    user: str = "root"
    port: int = Field(default=22, ge=1, le=65535)
    identity_file: str | None = None
    known_hosts: str = "~/.ssh/known_hosts"
    connect_timeout: float = 10
    proxy_jump: str | None = None      # ssh's ProxyJump: [user@]host[:port][,…]; `none` ignores the ssh config's
    config_file: str | None = "~/.ssh/config"  # `none`: read no ssh config; relative to this file

    _timeout = field_validator("connect_timeout")(
        lambda cls, v: seconds(v, "ssh.connect_timeout", 0, MAX_CONNECT_TIMEOUT, low_open=True))

    _jump = field_validator("proxy_jump")(lambda cls, v: _proxy_jump(v))

    _user = field_validator("user")(lambda cls, v: _login(v))


class SSHOverride(Strict):
    user: str | None = None
    port: int | None = Field(default=None, ge=1, le=65535)
    identity_file: str | None = None
    proxy_jump: str | None = None

    _jump = field_validator("proxy_jump")(lambda cls, v: _proxy_jump(v))


def _proxy_jump(value: str | None) -> str | None:
    from ascend_run.inputs.sshconfig import parse_jump

    if value is not None and value.strip().lower() != "none":
        for item in value.split(","):
            try:
                parse_jump(item.strip())
            except ConfigError as exc:
                raise ValueError(exc.message) from None
    return value

    _user = field_validator("user")(lambda cls, v: _login(v))


class NodeEntry(Strict):
    """One line of `nodes:` as the user writes it; `address`/`name` may be pdsh-style ranges."""

    address: str
    name: str | None = None
    npus: tuple[int, ...] | None = None
    cluster_address: str | None = None
    env: dict[str, str] = Field(default_factory=dict)
    ssh: SSHOverride | None = None

    data_fields = frozenset({"env"})
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
    user: str | None = None      # docker's --user: name|uid[:group|gid]
    shm_size: str | None = None
    workdir: str | None = None   # absolute, in the container

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None:
            text.matching(CONTAINER_NAME, value, "a valid container name ([a-zA-Z0-9][a-zA-Z0-9_.-]*)")
        return value

    @field_validator("user")
    @classmethod
    def _user(cls, value: str | None) -> str | None:
        if value is not None:
            text.matching(CONTAINER_USER, value, "a user as docker --user takes it (name|uid[:group|gid])",
                          fix="write e.g. root, 1000, HwHiAiUser or 1000:1000")
        return value

    @field_validator("shm_size")
    @classmethod
    def _shm(cls, value: str | None) -> str | None:
        if value is not None:
            text.matching(SIZE, value, "a size like 500g or 64m")
        return value

    _workdir = field_validator("workdir")(lambda cls, v: container_path(v))


class SyncDir(Strict):
    """A local directory copied to every node before the launch and mounted read-only in the container."""

    source: str
    target: str

    _target = field_validator("target")(lambda cls, v: container_path(v))


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
    cluster_timeout: int = 7200
    config: str | None = None
    host_log_dir: str = DEFAULT_HOST_LOG_DIR
    sync: list[SyncDir] = Field(default_factory=list)
    serve_port: int | None = Field(default=None, ge=1, le=65535)
    require_free: dict[str, str] = Field(default_factory=dict)
    rank_table: str | None = None  # hccl.json on every server: mounted read-only, RANK_TABLE_FILE points at it
    # Keeping the job alive (docs/supervisor.md). restarts: 0 = stop everything on the first failure, as
    # before; N = up to N relaunches from the newest checkpoint every rank has, spares taking failed servers.
    restarts: int = Field(default=0, ge=0, le=MAX_RESTARTS)
    hang_timeout: float = 600         # s without a new step line on any rank, after the first
    start_timeout: float = 1800       # s until the first step line (init, compile, loading)
    unreachable_timeout: float = 60   # s a server may stay unreachable before it is a failure
    restart_gap: float = 10           # s between stop and relaunch (HCCL: EJ0001 within ~10 s)
    output_dir: str | None = None  # MindFormers' output_dir in the container; default: job.config's output_dir

    @field_validator("cluster_timeout", "hang_timeout", "start_timeout", "unreachable_timeout", "restart_gap",
                     mode="before")
    @classmethod
    def _durations(cls, value: Any, info: ValidationInfo) -> Any:
        """Finite and in a range a job can use: `inf`, `nan` and 1e308 would never fire, or wait forever."""
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return value  # a boolean is refused as such, a string is pydantic's to convert or refuse
        low, high = _DURATIONS[info.field_name]
        return seconds(value, f"job.{info.field_name}", low, high, low_open=low == 0 and
                       info.field_name != "restart_gap")

    @field_validator("command")
    @classmethod
    def _command(cls, value: str, info: ValidationInfo) -> str:
        """The script and its arguments, after msrun's own options: never an option itself (it would
        override the rank or the master), and in the msrun form split the way a shell would."""
        try:
            words = shlex.split(value)
        except ValueError as exc:
            if info.data.get("launcher") == "msrun":
                raise Invalid(f"{shown(value)} cannot be split into arguments ({exc})",
                              fix="close the quote, or escape it with a backslash") from None
            words = value.split()
        if not words:
            raise Invalid("is empty", fix="write the script to run and its arguments, e.g. run_mindformer.py …")
        text.not_option(words[0], "msrun", fix="start with the script to run; the kit sets msrun's options")
        return value

    @field_validator("launcher_script")
    @classmethod
    def _script(cls, value: str) -> str:
        return text.not_option(value, "bash")

    @field_validator("log_dir")
    @classmethod
    def _log_dir(cls, value: str) -> str:
        return text.matching(PLAIN_PATH, value, "a plain path (letters, digits, _ . + / -; msrun_launcher.sh "
                             "evaluates it in a shell)", fix="write e.g. output/msrun_log")

    @field_validator("host_log_dir")
    @classmethod
    def _host_log_dir(cls, value: str) -> str:
        text.placeholders(value, {"name"})
        return server_path(value)

    @field_validator("require_free")
    @classmethod
    def _sizes(cls, value: dict[str, str]) -> dict[str, str]:
        for path, size in value.items():
            server_path(path)
            parse_size(size)
        return value

    _workdir = field_validator("workdir", "output_dir")(lambda cls, v: container_path(v))
    _server_paths = field_validator("rank_table")(lambda cls, v: server_path(v))

    @field_validator("master_address")
    @classmethod
    def _master(cls, value: str | None) -> str | None:
        return None if value is None else check_address(value)


class WeightsSettings(Strict):
    """Where the model weights come from and where they go (`ascend-run weights fetch`)."""

    repo: str = "MindSpore-Lab/DeepSeek-V3"
    revision: str = "main"
    dir: str | None = None           # on the download node, or on storage every node mounts
    node: str | None = None          # which node downloads (name, address or rank); the first by default
    image: str | None = None         # an image with openmind_hub (the infer image pins it); the file's by default
    endpoint: str | None = None      # the hub; openmind_hub's default (https://modelers.cn) when unset
    https_proxy: str | None = None   # the servers' way out, e.g. http://proxy.example:3128
    ca_bundle: str | None = None     # PEM on the download node for a TLS-intercepting proxy

    @field_validator("repo")
    @classmethod
    def _repo(cls, value: str) -> str:
        return text.matching(HUB_REPO, value, "a hub repository like MindSpore-Lab/DeepSeek-V3")

    @field_validator("revision")
    @classmethod
    def _revision(cls, value: str) -> str:
        return text.matching(REVISION, value, "a branch, tag or commit (letters, digits, _ . / -)")

    _server_paths = field_validator("dir", "ca_bundle")(lambda cls, v: server_path(v))
    _image = field_validator("image")(lambda cls, v: None if v is None else check_image(v))

    @field_validator("endpoint")
    @classmethod
    def _https(cls, value: str | None) -> str | None:
        if value is not None and not (value.startswith("https://") and URL.fullmatch(value)):
            raise Invalid(f"{shown(value)}: openmind_hub only talks HTTPS (https://…, no spaces)")
        return value

    @field_validator("https_proxy")
    @classmethod
    def _proxy(cls, value: str | None) -> str | None:
        if value is not None:
            text.matching(URL, value, "a proxy URL like http://proxy.example:3128")
        return value


class SecretSource(Strict):
    """Where a secret's value is read on the launching machine (ascend_run/secrets.py): `env` (a variable's
    name) and/or `file` (a path, relative to the deployment file); with both, the variable when it is set."""

    env: str | None = None
    file: str | None = None

    @field_validator("env")
    @classmethod
    def _env_name(cls, value: str | None) -> str | None:
        if value is not None:
            text.matching(ENV_NAME, value, "an environment variable name ([A-Za-z_][A-Za-z0-9_]*)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SecretSource:
        if self.file is None and self.env is None:
            raise Invalid("give env:, file: or both", fix="write {env: VARIABLE} or {file: path/to/file}")
        return self


def check_image(value: str) -> str:
    """An image reference as docker takes it: never an option, no spaces or shell syntax."""
    text.not_option(value, "docker run", fix="write the image reference, e.g. registry/repo/name:tag")
    return text.matching(IMAGE_REF, value, "an image reference (e.g. registry/repo/name:tag)")


def check_option(option: str, value: str | None, check: Callable[[str], object]) -> None:
    """A command-line value (None: not given) checked like the file's own values, so it may be what the
    file's may be; a ConfigError naming the option otherwise."""
    if value is not None:
        try:
            check(value)
        except ValueError as exc:
            raise ConfigError(str(exc), key=option, fix=getattr(exc, "fix", None)) from None


def check_profile(value: str) -> str:
    """A built-in profile name, or a path to a profile file (.yaml)."""
    if value.endswith((".yaml", ".yml")):
        return value
    return text.matching(text.PROFILE_NAME, value, "a hardware profile name or a path to a profile .yaml",
                         fix="use a built-in profile such as atlas-800t-a2, or a path ending in .yaml")


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
    secrets: dict[str, SecretSource] = Field(default_factory=dict)  # values from the launching machine

    data_fields = frozenset({"env"})

    @field_validator("secrets", mode="before")
    @classmethod
    def _secret_names(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name, source in value.items():
                if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
                    raise Invalid(f"{shown(name)} is not a valid environment variable name")
                if isinstance(source, str):
                    raise Invalid(f"{name}: a secret's value is never written here",
                                  fix=f"write {name}: {{env: VARIABLE}} or {name}: {{file: path}}, and keep the value "
                                  "in that variable or file")
        return value

    @field_validator("secrets")
    @classmethod
    def _not_also_env(cls, value: dict, info: ValidationInfo) -> dict:
        both = sorted(set(value) & set(info.data.get("env") or {}))
        if both:
            raise Invalid(f"{both[0]} is both in env: and in secrets:", fix="keep it in secrets: only")
        return value
    _env = field_validator("env", mode="before")(lambda cls, v: _env_mapping(v))
    _profile = field_validator("profile")(lambda cls, v: check_profile(v))

    @field_validator("name")
    @classmethod
    def _job_name(cls, value: str) -> str:
        if not isinstance(value, str) or not JOB_NAME.fullmatch(value):
            raise Invalid(f"{shown(value)} must be lower-case letters, digits and '-', at most 52 characters "
                          "(it names containers, labels and Kubernetes objects)")
        return value

    @field_validator("mounts", mode="before")
    @classmethod
    def _short_mounts(cls, value: Any) -> Any:
        if isinstance(value, list):
            return [Mount.split_short(item) if isinstance(item, str) else item for item in value]
        return value

    _image = field_validator("image")(lambda cls, v: check_image(v))


@dataclass(frozen=True)
class Node:
    """One server, resolved: its rank is its position in the file."""

    rank: int
    name: str
    address: str
    npus: tuple[int, ...]
    cluster_address: str
    ssh: sshconfig.SSHHop  # resolved: the deployment file's ssh settings over the user's ssh config
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

    def require_job(self) -> JobSettings:
        """The `job:` section, for the commands that run a job; a ConfigError naming the file without one."""
        if self.spec.job is None:
            raise ConfigError("the deployment file has no job: section", file=str(self.path), key="job",
                              fix="add job: {command: ...} (see examples/)")
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
        template = self.spec.job.host_log_dir if self.spec.job else DEFAULT_HOST_LOG_DIR
        return template.format(name=self.name)

    def with_master_address(self, address: str, option: str = "--master-addr") -> Deployment:
        """This deployment with `job.master_address` overridden from the command line, checked like the
        file's own value (it reaches msrun_launcher.sh's `eval`)."""
        from dataclasses import replace

        if self.spec.job is None:
            raise ConfigError("the deployment file has no job: section", file=str(self.path), key="job",
                              fix="add job: {command: ...} (see examples/)")
        check_option(option, address, check_address)
        job = self.spec.job.model_copy(update={"master_address": check_address(address)})
        return replace(self, spec=self.spec.model_copy(update={"job": job}))

    def with_nodes(self, nodes: list[Node] | tuple[Node, ...]) -> Deployment:
        """The same deployment on other servers (a spare in a failed node's place, with its rank)."""
        from dataclasses import replace

        return replace(self, nodes=tuple(nodes))

    def sync_source(self, index: int) -> Path:
        """Local path of `job.sync[index].source`, relative to the deployment file: a directory that exists
        (ConfigError naming the key otherwise, so a dry run fails as the launch would)."""
        source = self.spec.job.sync[index].source
        path = (self.path.parent / os.path.expanduser(source)).resolve()
        if not path.is_dir():
            what = "is not a directory" if path.exists() else "does not exist"
            raise ConfigError(f"{shown(source)} {what} (looked at {text.printable(str(path))})", file=str(self.path),
                              key=f"job.sync[{index}].source", fix="name a local directory; the path is relative "
                              "to the deployment file")
        return path

    def check_sync_sources(self) -> None:
        """Every `job.sync` source is a local directory (`sync_source`) whose walk stays inside it and within
        the bounds (launch.sync: no link out of it, at most so many files, levels and bytes)."""
        from ascend_run.launch.sync import check_tree

        for index in range(len(self.spec.job.sync) if self.spec.job else 0):
            check_tree(self.sync_source(index))

    def node_env(self, node: Node) -> dict[str, str]:
        """Environment for the node's container: file-wide env, then the node's overrides."""
        return {**self.spec.env, **node.env}

    def select(self, names: list[str] | None) -> list[Node]:
        """Nodes by name, address or rank (as given to --nodes); all nodes when `names` is None (an empty
        list is the caller's error to report). Every name a token stands for must be a node. A token is
        matched against the nodes, never expanded (`hostrange.Matcher`): the work is the nodes times the
        tokens, whatever the ranges; only the name reported missing is built."""
        if names is None:
            return list(self.nodes)
        index: dict[str, list[Node]] = {}
        for node in self.nodes:
            for key in dict.fromkeys((node.name, node.address, str(node.rank))):
                index.setdefault(key, []).append(node)
        wanted: dict[int, Node] = {}
        matchers = []
        for token in dict.fromkeys(names):
            try:
                matcher = hostrange.Matcher(token)
                if matcher.size > hostrange.MAX_EXPANSION:  # every name it stands for must be a node: cannot be
                    raise ValueError(f"{token!r} expands to {matcher.size:,} names, more than "
                                     f"{hostrange.MAX_EXPANSION:,}")
            except ValueError as exc:
                raise ConfigError(str(exc), key="--node(s)", fix="write a name, an address, a rank or a range "
                                  "such as node[001-004]") from None
            matchers.append(matcher)
        if hostrange.selection_work(matchers, len(index)) > hostrange.MAX_SELECTION_WORK:
            raise ConfigError(f"{len(matchers):,} node patterns over {len(index):,} names are more than "
                              f"{hostrange.MAX_SELECTION_WORK:,} names to look at", key="--node(s)",
                              fix="name the nodes with fewer, wider ranges")
        for matcher in matchers:
            token = matcher.pattern
            keys = hostrange.names_in(matcher, index)
            if len(keys) < matcher.size:  # some name it stands for is not a node: say the first one
                missing = next((name for name in hostrange.iter_expand(token) if name not in index), None)
                if missing is not None:  # None: the range names some node twice (n[1,1])
                    raise ConfigError(f"no node named {shown(missing)}", file=str(self.path), key="nodes",
                                      fix="use a node name, address or rank from the deployment file")
            for key in keys:
                for node in index[key]:
                    wanted.setdefault(node.rank, node)
        return list(wanted.values())


def _deep_merge(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        merged = dict(base)
        for key, value in over.items():
            merged[key] = _deep_merge(base[key], value) if key in base else value
        return merged
    return over


def _read_with_extends(path: Path) -> dict:
    """The file merged over its `extends:` chain (at most MAX_EXTENDS files). Each file is bounded on its
    own (`load_yaml`), and all of them together: merging walks the data, so the aliases of every file
    count against one budget, and the merged result is measured again before anything else walks it."""
    chain: list[tuple[Path, dict]] = []
    seen: set[Path] = set()
    budget = MAX_VALUES
    current = path
    while True:
        data, size = load_yaml_sized(current)
        if not isinstance(data, dict):
            raise ConfigError("the file must be a mapping (name:, profile:, nodes:, …)", file=str(current),
                              fix="start from one of the files in examples/")
        budget -= size
        if budget < 0:
            raise ConfigError(f"the files of the extends: chain hold more than {MAX_VALUES:,} values together "
                              "once their aliases are expanded", file=str(current), key="extends",
                              line=line_of(data, ("extends",)), fix="expand fewer aliases")
        chain.append((current, data))
        seen.add(current.resolve())
        base_ref = data.get("extends")
        if base_ref is None:
            break
        where = {"file": str(current), "key": "extends", "line": line_of(data, ("extends",))}
        if not isinstance(base_ref, str):
            raise ConfigError("must be a path to another deployment file", **where)
        if text.printable(base_ref) != base_ref:
            raise ConfigError(f"{shown(base_ref)} contains a control character", **where,
                              fix="write the path on one line")
        base_path = (current.parent / os.path.expanduser(base_ref)).resolve()
        if base_path in seen:
            raise ConfigError(f"{shown(base_ref)} extends itself in a loop", **where)
        if base_path.is_dir():
            raise ConfigError(f"{shown(base_ref)} is a directory ({base_path}), not a deployment file", **where,
                              fix="name the YAML file in that directory")
        if not base_path.is_file():
            raise ConfigError(f"base file {shown(base_ref)} not found (looked at {base_path})", **where,
                              fix="the path is relative to the file that names it")
        if len(chain) >= MAX_EXTENDS:
            raise ConfigError(f"more than {MAX_EXTENDS} files in the extends: chain", **where,
                              fix="extend a file that extends fewer files")
        current = base_path
    merged: dict = chain[-1][1]
    for _, data in reversed(chain[:-1]):
        merged = _deep_merge(merged, {k: v for k, v in data.items() if k != "extends"})
    if len(chain) > 1:
        check_bounds(merged, str(path))
    return merged


def _expand_entry(entry: NodeEntry, index: int, section: str = "nodes") -> list[tuple[str, str]]:
    """(name, address) pairs of one `nodes:` (or `spares:`) entry; ranges in name and address zip together."""
    try:
        addresses = hostrange.expand(entry.address)
    except ValueError as exc:
        raise _err(f"{exc}", (section, index, "address")) from None
    names: list[str | None]
    if entry.name is None:
        names = [None] * len(addresses)
    else:
        try:
            names = list(hostrange.expand(entry.name))
        except ValueError as exc:
            raise _err(f"{exc}", (section, index, "name")) from None
        if len(names) != len(addresses):
            raise _err(f"names expand to {len(names)} entries but the address to {len(addresses)}",
                       (section, index, "name"), fix="give the name and the address ranges the same length")
    return [(name or _default_name(addr), addr) for name, addr in zip(names, addresses)]


def _default_name(address: str) -> str:
    """A host name's first label; `node-10-0-0-1` for an IP address."""
    if _MAYBE_IP.fullmatch(address):
        try:
            ipaddress.ip_address(address)
        except ValueError:
            pass
        else:
            return "node-" + re.sub(r"[^0-9A-Za-z]+", "-", address).strip("-")
    return address.split(".")[0]


class _LocError(Exception):
    def __init__(self, message: str, loc: tuple, fix: str | None = None) -> None:
        self.message, self.loc, self.fix = message, loc, fix


def _err(message: str, loc: tuple, fix: str | None = None) -> _LocError:
    return _LocError(message, loc, fix)


def _count_nodes(spec: DeploymentFile) -> list[_LocError]:
    """The server count of the whole file (nodes and spares) from the range sizes, before a name is built."""
    total = 0
    for section, entries in (("nodes", spec.nodes), ("spares", spec.spares)):
        for index, entry in enumerate(entries):
            try:
                total += hostrange.count(entry.address)
            except ValueError:
                total += 1  # reported with its entry
            if total > MAX_NODES:
                return [_err(f"the {section} expand to more than {MAX_NODES:,} servers", (section, index, "address"),
                             fix="check the ranges; a deployment file describes at most "
                                 f"{MAX_NODES:,} servers")]
    return []


def _explicit_ssh(spec: DeploymentFile, entry: NodeEntry | None) -> tuple[dict[str, Any], tuple]:
    """The ssh settings the file itself sets (file-wide, then the entry's): only these win over the ssh
    config. With a hashable form of them (`HopResolver.hop`'s key)."""
    keys = ("user", "port", "identity_file", "known_hosts", "connect_timeout", "proxy_jump")
    explicit = {k: getattr(spec.ssh, k) for k in keys if k in spec.ssh.model_fields_set}
    if entry is not None and entry.ssh is not None:
        explicit.update({k: v for k, v in entry.ssh.model_dump().items() if v is not None})
    return explicit, tuple(sorted(explicit.items()))


def _resolve_nodes(spec: DeploymentFile, profile: HardwareProfile, path: Path, ssh_config: sshconfig.UserConfig
                   ) -> tuple[list[Node], list[Node], list[_LocError]]:
    """The nodes and the spares; a spare is a server like any node, so names and addresses are unique across both."""
    nodes: list[Node] = []
    spares: list[Node] = []
    problems: list[_LocError] = _count_nodes(spec)
    if problems:
        return nodes, spares, problems
    seen_names: dict[str, str] = {}
    seen_endpoints: dict[tuple, str] = {}
    hops = sshconfig.HopResolver(ssh_config, str(path))
    checked_hostnames: set[str] = set()
    all_npus = tuple(range(profile.npu_count))
    file_wide = _explicit_ssh(spec, None)  # for every entry without its own ssh: (a generated file has 51,200)
    for section, entries, out in (("nodes", spec.nodes, nodes), ("spares", spec.spares, spares)):
        for index, entry in enumerate(entries):
            try:
                pairs = _expand_entry(entry, index, section)
            except _LocError as exc:
                problems.append(exc)
                continue
            npus = tuple(entry.npus) if entry.npus is not None else all_npus
            for pos, npu in enumerate(npus):
                if npu >= profile.npu_count:
                    problems.append(_err(f"NPU index {npu} is out of range for {profile.name} "
                                         f"(0-{profile.npu_count - 1})", (section, index, "npus", pos)))
            explicit, explicit_key = file_wide if entry.ssh is None else _explicit_ssh(spec, entry)
            env = dict(entry.env)
            where = f"{section}[{index}]"
            for name, address in pairs:
                try:
                    address = check_address(address)
                except ValueError as exc:
                    problems.append(_err(str(exc), (section, index, "address"), getattr(exc, "fix", None)))
                    continue
                ssh = hops.hop(address, explicit, explicit_key)
                if not 0 < ssh.connect_timeout <= MAX_CONNECT_TIMEOUT:  # nan is neither: refused too
                    problems.append(_err(f"ConnectTimeout {ssh.connect_timeout!r} (from {ssh_config.path} for "
                                         f"{shown(address)}) is out of range: seconds, more than 0 and at most "
                                         f"{MAX_CONNECT_TIMEOUT}", (section, index, "address"),
                                         fix="fix ConnectTimeout in the ssh config, or set ssh.connect_timeout"))
                    continue
                if ssh.hostname != address and ssh.hostname not in checked_hostnames:
                    problem = _check_ssh_hostname(address, ssh.hostname, ssh_config)
                    if problem:  # it becomes the cluster address: msrun_launcher.sh evaluates it
                        problems.append(_err(problem, (section, index, "address")))
                        continue
                    checked_hostnames.add(ssh.hostname)
                endpoint = (ssh.hostname, ssh.port, ssh.via)  # one address behind two jump hosts: two servers
                if endpoint in seen_endpoints:  # before the name: a repeated address repeats its default name
                    problems.append(_err(f"duplicate address {ssh.hostname}:{ssh.port} (also "
                                         f"{seen_endpoints[endpoint]})", (section, index, "address"),
                                         fix="list every server once: a spare is not also a node"))
                    continue
                if not NODE_NAME.fullmatch(name):
                    problems.append(_err(f"{shown(name)} is not a valid node name (letters, digits, '-'; it "
                                         "becomes the container hostname)", (section, index, "name")))
                    continue
                if name in seen_names:
                    problems.append(_err(f"duplicate node name {shown(name)} (also {seen_names[name]})",
                                         (section, index, "name"), fix="every server needs a distinct name"))
                    continue
                seen_names[name] = seen_endpoints[endpoint] = where
                out.append(Node(rank=len(out) if section == "nodes" else -1, name=name, address=address,
                                npus=npus, cluster_address=entry.cluster_address or ssh.hostname, ssh=ssh,
                                env=env))
    return nodes, spares, problems


def _check_ssh_hostname(address: str, hostname: str, ssh_config: sshconfig.UserConfig) -> str | None:
    """The HostName the user's ssh config gives `address`, checked like an address of the file: it is the
    node's cluster address unless the file sets one (master_ip, the rank table)."""
    try:
        check_address(hostname)
    except ValueError as exc:
        return f"HostName {exc} (from {ssh_config.path} for {shown(address)})"
    return None


def _check_cluster_addresses(spec: DeploymentFile, servers: int) -> list[_LocError]:
    """A cluster address other servers reach: never a wildcard (0.0.0.0 would make a broadcast relay listen
    on every interface, and is nobody's address), nor loopback when there are several servers (each would
    reach itself)."""
    problems: list[_LocError] = []
    for section, entries in (("nodes", spec.nodes), ("spares", spec.spares)):
        for index, entry in enumerate(entries):
            value = entry.cluster_address
            try:
                address = ipaddress.ip_address(value.split("%")[0]) if value else None
            except ValueError:
                address = None  # a host name
            if address is None and value not in ("localhost",):
                continue
            if address is not None and address.is_unspecified:
                problems.append(_err(f"{value} is the wildcard address, not one other servers can reach",
                                     (section, index, "cluster_address"),
                                     fix="write the server's address on the cluster network"))
            elif servers > 1 and (address is None or address.is_loopback):
                problems.append(_err(f"{value} is a loopback address: with {servers} servers, each would reach "
                                     "itself", (section, index, "cluster_address"),
                                     fix="write the server's address on the cluster network"))
    return problems


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
    targets = {m.target: f"mounts[{i}]" for i, m in enumerate(spec.mounts)}
    for index, item in enumerate(job.sync):  # docker refuses two mounts on one target
        target = item.target.rstrip("/") or "/"
        if target in targets:
            problems.append(_err(f"target {shown(item.target)} is also the target of {targets[target]}",
                                 ("job", "sync", index, "target"), fix="give the synced directory a target of its "
                                 "own; docker refuses two mounts on one path"))
        targets.setdefault(target, f"job.sync[{index}]")
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


def _ssh_config_path(spec: DeploymentFile, raw: dict, path: Path) -> Path | None:
    try:
        return sshconfig.config_path(spec.ssh.config_file, "config_file" in spec.ssh.model_fields_set, path.parent)
    except ConfigError as exc:
        key = ("ssh", "config_file")
        if "config_file" not in spec.ssh.model_fields_set:
            raise
        raise ConfigError(exc.message, file=str(path), key=format_loc(key), line=line_of(raw, key),
                          fix=exc.fix) from None


def load_deployment(path: str | Path) -> Deployment:
    """Read, merge, validate and resolve a deployment file. Raises ConfigError(s) naming file and key."""
    path = Path(path)
    return deployment_from_data(_read_with_extends(path), path)


def read_merged(path: str | Path) -> dict:
    """The file's data merged over its `extends:` chain, unvalidated (what `--job NAME` keeps of a launch)."""
    return _read_with_extends(Path(path))


def _raise_all(errors: list[ConfigError]) -> None:
    """One error, or all of them in one report; past MAX_ERRORS, the rest are counted, not listed."""
    if len(errors) > MAX_ERRORS:
        rest = len(errors) - MAX_ERRORS + 1
        errors = errors[:MAX_ERRORS - 1] + [ConfigError(f"… and {rest:,} more problems like these",
                                                        file=errors[0].file)]
    raise errors[0] if len(errors) == 1 else ConfigErrors(errors)


def deployment_from_data(raw: dict, path: str | Path = "<memory>") -> Deployment:
    """Validate and resolve already-parsed deployment data (line numbers when `raw` is ruamel data)."""
    path = Path(path)
    file = str(path)
    try:
        spec = DeploymentFile.model_validate(raw)
    except ValidationError as exc:
        errors = []
        for item in exc.errors(include_input=False, include_url=False):
            loc = tuple(item["loc"])
            message = item["msg"].removeprefix("Value error, ")
            fix = getattr(item.get("ctx", {}).get("error"), "fix", None)
            if item["type"] == "extra_forbidden":
                message = "unknown key (typo?)"
            elif item["type"] == "missing":
                message = "required key is missing"
            errors.append(ConfigError(message, file=file, key=format_loc(loc), line=line_of(raw, loc), fix=fix))
        _raise_all(errors)
    try:
        profile = get_profile(spec.profile)
    except ConfigError as exc:  # inside a profile file: say where in it
        inner = ConfigError(exc.message, file=exc.file, key=exc.key, line=exc.line) if exc.file else exc
        raise ConfigError(inner.message if inner is exc else str(inner), file=file, key="profile",
                          line=line_of(raw, ("profile",)), fix=exc.fix) from None
    ssh_config = sshconfig.read_config(_ssh_config_path(spec, raw, path))
    with no_cycle_collection():
        nodes, spares, problems = _resolve_nodes(spec, profile, path, ssh_config)
    problems += _check_job(spec, nodes)
    problems += _check_spares(spec, nodes, spares)
    problems += _check_cluster_addresses(spec, len(nodes) + len(spares))
    if problems:
        _raise_all([ConfigError(p.message, file=file, key=format_loc(p.loc), line=line_of(raw, p.loc), fix=p.fix)
                    for p in problems])
    from ascend_run import secrets

    secrets.register(secrets.proxy_credentials(spec.weights.https_proxy))  # redacted wherever printed
    return Deployment(path=path, spec=spec, profile=profile, nodes=tuple(nodes), spares=tuple(spares))
