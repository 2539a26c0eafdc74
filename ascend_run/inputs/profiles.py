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
from ruamel.yaml import YAML

from ascend_run.errors import ProfileError
from ascend_run.inputs.common import Mount, Strict
from ascend_run.inputs.yamlio import format_loc


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
            raise ValueError("must contain '{index}', e.g. /dev/davinci{index}")
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


def _parse(text: str, origin: str) -> HardwareProfile:
    data = YAML(typ="safe").load(text)
    try:
        return HardwareProfile.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ProfileError(first["msg"], file=origin, key=format_loc(first["loc"])) from None


@cache
def get_profile(name: str) -> HardwareProfile:
    """A built-in profile by name, or a profile YAML file by path."""
    if name.endswith((".yaml", ".yml")) and Path(name).is_file():
        return _parse(Path(name).read_text(encoding="utf-8"), name)
    candidate = _builtin_dir() / f"{name}.yaml"
    if not candidate.is_file():
        known = ", ".join(builtin_profile_names())
        raise ProfileError(f"unknown hardware profile {name!r}", key="profile",
                           fix=f"use one of: {known} (or a path to a profile .yaml)")
    return _parse(candidate.read_text(encoding="utf-8"), f"<builtin profile {name}>")
