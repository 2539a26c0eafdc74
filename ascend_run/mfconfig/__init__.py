"""MindFormers config derivation and validation: the article's hand edits, done safely.

Public API (used by the CLI and by the launcher before it starts a job):

- `check_config(path_or_data, npus, path_checker=None, *, workdir=…, mounts=…) -> CheckReport`
- `derive_config(base, *, preset=None, preset_options=None, sets=(), adds=(), npus=None, output=None, …)
  -> DeriveResult`
- `CheckReport` (`.ok`, `.errors`, `.warnings`, `.notes`, `.memory`), `Issue` (`key`, `message`, `fix`),
  `ConfigCheckFailed` (a `ConfigError`), `PathRef`/`PathChecker` and two checkers.
"""

from ascend_run.mfconfig.derive import DeriveResult, derive_config, parse_assignment
from ascend_run.mfconfig.layout import ConfigView, Layout, detect_layout
from ascend_run.mfconfig.memory import MemoryEstimate, estimate
from ascend_run.mfconfig.paths import (MountSpec, PathChecker, PathRef, local_path_checker, mounts_of,
                                       transport_path_checker, workdir_of)
from ascend_run.mfconfig.presets import PRESETS
from ascend_run.mfconfig.report import CheckReport, ConfigCheckFailed, Issue
from ascend_run.mfconfig.rules import check_config
from ascend_run.mfconfig.yamledit import Document

__all__ = [
    "PRESETS",
    "CheckReport",
    "ConfigCheckFailed",
    "ConfigView",
    "DeriveResult",
    "Document",
    "Issue",
    "Layout",
    "MemoryEstimate",
    "MountSpec",
    "PathChecker",
    "PathRef",
    "check_config",
    "derive_config",
    "detect_layout",
    "estimate",
    "local_path_checker",
    "mounts_of",
    "parse_assignment",
    "transport_path_checker",
    "workdir_of",
]
