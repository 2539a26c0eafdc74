"""Hardware profiles: what an Ascend server exposes to a container, as data.

The profile is the one place that lists device nodes, driver/tool mounts, shm and the Kubernetes
resource name. Docker run scripts, Dockerfiles, Helm charts and the simulated cluster all read it.
"""

from __future__ import annotations

from functools import cache
from importlib import resources
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator

from ascend_run.errors import ConfigError, ProfileError
from ascend_run.inputs import text
from ascend_run.inputs.common import Mount, Strict
from ascend_run.inputs.yamlio import format_loc, line_of, parse_yaml, read_text


class ContainerDefaults(Strict):
    user: str | None = None
    ipc_host: bool = False
    shm_size: str | None = None


class ToolPaths(Strict):
    npu_smi: str
    hccn_tool: str
    hccn_conf: str
    driver_version_file: str
    install_info: str


class KubernetesProfile(Strict):
    resource_name: str
    node_labels: dict[str, str] = Field(default_factory=dict)
    shm_size: str


class HardwareProfile(Strict):
    name: str
    description: str
    role: Literal["train", "infer"]
    npu_count: int = Field(gt=0, le=64)
    npu_memory_gb: int = Field(gt=0)
    npu_device: str
    management_devices: tuple[str, ...]
    mounts: tuple[Mount, ...]
    container: ContainerDefaults
    tools: ToolPaths
    driver_version: str
    kubernetes: KubernetesProfile

    @field_validator("npu_device")
    @classmethod
    def _has_index(cls, value: str) -> str:
        if "{index}" not in value:
            raise text.Invalid("must contain '{index}', e.g. /dev/davinci{index}")
        text.placeholders(value, {"index"})
        return text.absolute_path(value, "of devices")

    @field_validator("management_devices")
    @classmethod
    def _devices(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for path in value:
            text.absolute_path(path, "of devices")
        return value

    def npu_device_path(self, index: int) -> str:
        return self.npu_device.format(index=index)

    def device_paths(self, npus: tuple[int, ...] | list[int] | None = None) -> list[str]:
        """NPU device nodes for `npus` (all of them by default), then the management devices."""
        indices = range(self.npu_count) if npus is None else npus
        return [self.npu_device_path(i) for i in indices] + list(self.management_devices)


def _builtin_dir():
    return resources.files("ascend_run") / "data" / "profiles"


def builtin_profile_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in _builtin_dir().iterdir() if p.name.endswith(".yaml"))


def _parse(source: str, origin: str) -> HardwareProfile:
    """A profile from YAML text; every problem (syntax, keys, values) is a ProfileError naming the line."""
    try:
        data = parse_yaml(source, origin)
    except ConfigError as exc:
        raise ProfileError(exc.message, file=origin, line=exc.line, key=exc.key, fix=exc.fix) from None
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_input=False, include_url=False)[0]
        loc = tuple(first["loc"])
        raise ProfileError(first["msg"].removeprefix("Value error, "), file=origin, key=format_loc(loc),
                           line=line_of(data, loc), fix=getattr(first.get("ctx", {}).get("error"), "fix", None)
                           ) from None


@cache
def get_profile(name: str) -> HardwareProfile:
    """A built-in profile by name, or a profile YAML file by path (a name never reaches outside the
    built-in folder: `../x` is neither)."""
    known = ", ".join(builtin_profile_names())
    if name.endswith((".yaml", ".yml")):
        path = Path(name)
        if not path.is_file():
            raise ProfileError(f"profile file {text.shown(name)} not found", key="profile",
                               fix=f"give a path to a profile .yaml (relative to where you run), or one of: {known}")
        return _parse(read_text(path, "a profile"), name)
    if not text.PROFILE_NAME.fullmatch(name):
        raise ProfileError(f"{text.shown(name)} is not a profile name", key="profile",
                           fix=f"use one of: {known} (or a path to a profile .yaml)")
    candidate = _builtin_dir() / f"{name}.yaml"
    if not candidate.is_file():
        raise ProfileError(f"unknown hardware profile {name!r}", key="profile",
                           fix=f"use one of: {known} (or a path to a profile .yaml)")
    return _parse(candidate.read_text(encoding="utf-8"), f"<builtin profile {name}>")
