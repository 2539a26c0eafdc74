"""Paths a config names (dataset, checkpoints, tokenizer), where they are on the servers, and whether they exist.

A MindFormers config names paths *inside the container*, relative ones against the job's working directory.
With a deployment file, each path is translated through the bind mounts to the path on the server; a path
under no mount can only come from the image, which is worth a warning for data and checkpoints.

Whether the paths exist on every node is asked of a `PathChecker`: a callable that takes the references
and returns, for each, the nodes where it is missing. `check_config` takes one as a parameter, so the
launcher can pass a checker over its SSH transports (`transport_path_checker`) and tests a fake.
"""

from __future__ import annotations

import os
import posixpath
import shlex
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from ascend_run.inputs.common import Mount
from ascend_run.mfconfig.layout import ConfigView, Layout
from ascend_run.mfconfig.yamledit import KeyPath, format_key_path, plain

DEFAULT_WORKDIR = "/home/work/mindformers"

Kind = Literal["file", "dir", "any", "megatron"]


@dataclass(frozen=True)
class PathRef:
    """One path a config names. `host_path` is where it is on a server (None: not under any mount)."""

    key: str
    written: str
    container_path: str
    kind: Kind
    host_path: str | None = None
    required: bool = True    # data and checkpoints must exist; nothing else is checked on the nodes

    def probes(self) -> list[str]:
        """Files that must exist for this reference: a Megatron prefix means its .bin and .idx."""
        base = self.host_path or self.container_path
        if self.kind == "megatron":
            return [base + ".bin", base + ".idx"]
        return [base]


# Result of a path check: for each reference, the nodes where it is missing (absent key: present everywhere).
PathChecker = Callable[[Sequence[PathRef]], Mapping[PathRef, Sequence[str]]]


@dataclass(frozen=True)
class JobContext:
    """Where a config is going to run: what its checks need to know besides the YAML.

    `mounts` None means no deployment file was given: container paths cannot be mapped to the servers, and
    nothing is said about paths under no mount.
    """

    npus: int | None = None                 # the job's device count; None skips the device-count rules
    workdir: str = DEFAULT_WORKDIR          # relative paths in the config are relative to this, in the container
    mounts: tuple[Mount, ...] | None = None  # bind mounts: container paths -> server paths
    npu_memory_gb: int | None = None        # the hardware profile's memory per NPU (bounds max_device_memory)
    path_checker: PathChecker | None = None  # says on which nodes each dataset/checkpoint path is missing

    @classmethod
    def of(cls, deployment: Any, *, npus: int | None = None, path_checker: PathChecker | None = None) -> JobContext:
        """The context of a job of this deployment file (all its NPUs unless `npus` says otherwise)."""
        return cls(npus=deployment.total_npus if npus is None else npus, workdir=workdir_of(deployment),
                   mounts=tuple(deployment.mounts), npu_memory_gb=deployment.profile.npu_memory_gb,
                   path_checker=path_checker)

    def with_checker(self, path_checker: PathChecker | None) -> JobContext:
        return replace(self, path_checker=path_checker)


def workdir_of(deployment: Any) -> str:
    """The directory MindFormers runs in: the job's workdir, else the container's, else the article's."""
    spec = getattr(deployment, "spec", None)
    job = getattr(deployment, "job", None) or getattr(spec, "job", None)
    if job is not None and getattr(job, "workdir", None):
        return job.workdir
    container = getattr(spec, "container", None)
    if container is not None and getattr(container, "workdir", None):
        return container.workdir
    return DEFAULT_WORKDIR


def to_host(container_path: str, mounts: Sequence[Mount]) -> str | None:
    """The server path behind a container path: the longest mount target that contains it, or None."""
    best: Mount | None = None
    for mount in mounts:
        target = mount.target.rstrip("/") or "/"
        inside = container_path == target or container_path.startswith(target.rstrip("/") + "/")
        if inside and (best is None or len(target) > len(best.target.rstrip("/") or "/")):
            best = mount
    if best is None:
        return None
    rest = container_path[len(best.target.rstrip("/")):].lstrip("/")
    return posixpath.join(best.source, rest) if rest else best.source


def collect(view: ConfigView, *, workdir: str = DEFAULT_WORKDIR,
            mounts: Sequence[Mount] = ()) -> list[PathRef]:
    """Every path the config names that must exist before launch, resolved in the container and on the host."""
    found: list[tuple[KeyPath, str, Kind, bool]] = []

    def add(path: KeyPath, kind: Kind, required: bool = True) -> None:
        value = view.doc.get(path, None)
        if isinstance(value, str) and value.strip() and value.strip().lower() != "none":
            found.append((path, value.strip(), kind, required))

    loader_path = view.path("data_loader")
    if view.is_train and loader_path is not None:
        loader = view.doc.get(loader_path, None)
        if isinstance(loader, dict):
            config = loader.get("config")
            data_path = config.get("data_path") if isinstance(config, dict) else None
            if isinstance(data_path, list):
                # Megatron blend: [weight, prefix, weight, prefix, …]; a lone list of prefixes also occurs.
                pairs = len(data_path) % 2 == 0 and all(_is_weight(w) for w in data_path[0::2])
                for index, _item in enumerate(data_path):
                    if pairs and index % 2 == 0:
                        continue
                    add(loader_path + ("config", "data_path", index), "megatron")
            elif isinstance(data_path, str):
                add(loader_path + ("config", "data_path"), "megatron")
            for key in ("dataset_dir", "data_dir"):
                add(loader_path + (key,), "any")
    add(("load_checkpoint",), "any")
    add(("src_strategy_path_or_dir",), "any")
    add(("pretrained_model_dir",), "dir")
    if view.layout is Layout.PARALLELISM:
        add(("checkpoint", "load_path"), "any")
    add(("processor", "tokenizer", "vocab_file"), "file")
    add(("processor", "tokenizer", "tokenizer_file"), "file")
    add(("context", "ascend_config", "parallel_speed_up_json_path"), "file", required=False)

    refs = []
    for path, written, kind, required in found:
        container = written if written.startswith("/") else posixpath.normpath(posixpath.join(workdir, written))
        refs.append(PathRef(format_key_path(path), written, container, kind, to_host(container, mounts), required))
    return refs


def _is_weight(value: Any) -> bool:
    try:
        float(plain(value))
        return True
    except (TypeError, ValueError):
        return False


def local_path_checker(node_name: str = "localhost") -> PathChecker:
    """Checks host paths on this machine: for a single server run locally, and for tests."""

    def check(refs: Sequence[PathRef]) -> dict[PathRef, list[str]]:
        return {ref: [node_name] for ref in refs if not all(os.path.exists(p) for p in ref.probes())}

    return check


def probe_argv(paths: Iterable[str]) -> list[str]:
    """One command per node that prints each missing path on its own line (paths are argv, never parsed)."""
    script = 'for p in "$@"; do [ -e "$p" ] || printf "%s\\n" "$p"; done'
    return ["sh", "-c", script, "ascend-run-paths", *paths]


def transport_path_checker(transports: Mapping[str, Any], *, timeout: float = 30.0) -> PathChecker:
    """A checker that runs `probe_argv` on every node through its transport (`run(argv) -> Result`)."""

    def check(refs: Sequence[PathRef]) -> dict[PathRef, list[str]]:
        probes = sorted({p for ref in refs for p in ref.probes()})
        missing_by_node: dict[str, set[str]] = {}
        for name, transport in transports.items():
            result = transport.run(probe_argv(probes), timeout=timeout)
            if result.rc != 0:
                # Could not look: count every path as missing there, and say why in the node name.
                missing_by_node[f"{name} (check failed: {shlex.quote(result.stderr.strip()[:80])})"] = set(probes)
                continue
            missing_by_node[name] = set(result.stdout.splitlines())
        out: dict[PathRef, list[str]] = {}
        for ref in refs:
            nodes = [n for n, missing in missing_by_node.items() if any(p in missing for p in ref.probes())]
            if nodes:
                out[ref] = nodes
        return out

    return check
