"""MindFormers config derivation and validation: the article's hand edits, done safely.

Public API (used by the CLI and by the launcher before it starts a job):

- `check_config(path_or_data, job=JobContext(npus=…, workdir=…, mounts=…, …)) -> CheckReport`
- `derive_config(base, *, preset=None, preset_options=None, sets=(), adds=(), output=None, force=False,
  job=JobContext(…)) -> DeriveResult`
- `JobContext`: where the config will run (NPUs, workdir, mounts, NPU memory, a path checker);
  `JobContext.of(deployment)` builds it from a deployment file
- `CheckReport` (`.ok`, `.errors`, `.warnings`, `.notes`, `.memory`), `Issue` (`key`, `message`, `fix`),
  `ConfigCheckFailed` (a `ConfigError`), `PathRef`/`PathChecker` and two checkers.
"""

from ascend_run.mfconfig.derive import DeriveResult, derive_config, parse_assignment
from ascend_run.mfconfig.layout import ConfigView, Layout, detect_layout
from ascend_run.mfconfig.memory import MemoryEstimate, estimate
from ascend_run.mfconfig.paths import (
                                       JobContext,
                                       PathChecker,
                                       PathRef,
                                       local_path_checker,
                                       transport_path_checker,
                                       workdir_of,
)
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
    "JobContext",
    "PathChecker",
    "PathRef",
    "check_config",
    "derive_config",
    "detect_layout",
    "estimate",
    "local_path_checker",
    "parse_assignment",
    "transport_path_checker",
    "workdir_of",
]
