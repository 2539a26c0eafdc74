"""How a relaunch resumes: where the checkpoints are, and how the job is told which one to load.

The job's checkpoints are in `<output_dir>/checkpoint/rank_*` as the container sees it; `output_dir` is
`job.output_dir` or the `output_dir` of `job.config` (MindFormers' default `./output`, relative to the job's
working directory). The servers' path behind it comes from the deployment's mounts; a path under no mount
is inside the container, gone with it (`--rm`), so there is nothing to resume from.

The interface, the same for the real trainer and the CPU stand-in (docs/supervisor.md):
- every attempt's containers get `ASCEND_RUN_ATTEMPT=k`; a resumed one also `ASCEND_RUN_RESUME_DIR` (the
  directory holding `rank_*`, as the container sees it), `ASCEND_RUN_RESUME_NAME` (the file name to load,
  rank 0's: each rank puts its own id in it) and `ASCEND_RUN_RESUME_STEP`;
- a job with `job.config` also gets a resume copy of its config, with `load_checkpoint: <that directory>`
  and `resume_training: <that name>` (round-trip edits: anchors and comments kept), uploaded to every server
  and mounted read-only over the config's path in the container. The user's file is never touched.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass

from ascend_run.inputs.common import Mount
from ascend_run.inputs.deployment import Deployment
from ascend_run.launch.plan import SYNC_ROOT, Overrides
from ascend_run.supervise.checkpoints import Choice

DEFAULT_OUTPUT_DIR = "./output"   # MindFormers' default, relative to the working directory


@dataclass(frozen=True)
class CheckpointDir:
    """`<output_dir>/checkpoint` in the container, on the servers (None: inside the container), and where
    output_dir was read."""

    container: str
    host: str | None
    source: str


def _container_path(dep: Deployment, path: str) -> str:
    return posixpath.normpath(path if path.startswith("/") else posixpath.join(dep.job.workdir, path))


def config_output_dir(config_text: str | None) -> str | None:
    """`output_dir` of a MindFormers config (its default when the key is absent), None without a config."""
    if config_text is None:
        return None
    from ascend_run.mfconfig.yamledit import Document, plain

    value = plain(Document(config_text).get(("output_dir",), None))
    return str(value) if isinstance(value, str) and value.strip() else DEFAULT_OUTPUT_DIR


def checkpoint_dir(dep: Deployment, config_text: str | None) -> CheckpointDir | None:
    """Where the job's checkpoints are; None when neither job.output_dir nor job.config says."""
    from ascend_run.mfconfig.paths import to_host

    if dep.job is None:
        return None
    if dep.job.output_dir:
        output, source = dep.job.output_dir, "job.output_dir"
    else:
        output, source = config_output_dir(config_text), "output_dir of job.config"
    if output is None:
        return None
    container = posixpath.join(_container_path(dep, output), "checkpoint")
    return CheckpointDir(container, to_host(container, dep.mounts), source)


def saves_checkpoints(config_text: str) -> bool:
    """Whether a MindFormers config has a CheckpointMonitor callback (the trainer saves nothing without one)."""
    from ascend_run.mfconfig.yamledit import Document, plain

    callbacks = Document(config_text).get(("callbacks",), None)
    if not isinstance(callbacks, list):
        return False
    return any(isinstance(c, dict) and plain(c.get("type")) == "CheckpointMonitor" for c in callbacks)


def pipeline_stages(config_text: str | None) -> int:
    """The config's pipeline stages (1 without a config or when unreadable): for status per stage."""
    if not config_text:
        return 1
    try:
        from ascend_run.mfconfig.layout import ConfigView
        from ascend_run.mfconfig.yamledit import Document, plain

        value = plain(ConfigView(Document(config_text)).get("pp"))
        return int(value) if isinstance(value, int) and value > 0 else 1
    except Exception:  # noqa: BLE001 - a config the check would reject: status shows one stage
        return 1


def resume_config(config_text: str, source: str, load_dir: str, name: str) -> str:
    """The config with `load_checkpoint` and `resume_training` set (added when absent), all else as written."""
    from ascend_run.mfconfig.yamledit import Document

    doc = Document(config_text, source)
    doc.set(("load_checkpoint",), load_dir, create=True, reason="ascend-run: resume")
    doc.set(("resume_training",), name, create=True, reason="ascend-run: resume")
    header = (f"# Written by ascend-run's supervisor from {source}: resume from {name}.\n"
              "# The original file is unchanged; this copy is mounted over it in the job's containers.\n")
    return header + doc.dump()


def config_container_path(dep: Deployment) -> str:
    """Where the job's command finds job.config in the container: as written, or under the working dir."""
    return _container_path(dep, dep.job.config)


def resume_config_server_path(dep: Deployment) -> str:
    return f"{SYNC_ROOT}/{dep.name}/resume/{posixpath.basename(dep.job.config)}"


def attempt_overrides(dep: Deployment, attempt: int, ckpt: CheckpointDir | None = None,
                      choice: Choice | None = None, config_uploaded: bool = False,
                      rank_table_source: str | None = None) -> Overrides:
    """The environment, mounts and rank table of attempt `attempt` (1: a fresh start)."""
    env = {"ASCEND_RUN_ATTEMPT": str(attempt)}
    mounts: tuple[Mount, ...] = ()
    if choice is not None and ckpt is not None:
        env.update({"ASCEND_RUN_RESUME_DIR": ckpt.container, "ASCEND_RUN_RESUME_NAME": choice.name,
                    "ASCEND_RUN_RESUME_STEP": str(choice.step)})
        if config_uploaded:
            mounts = (Mount(source=resume_config_server_path(dep), target=config_container_path(dep),
                            read_only=True),)
    return Overrides(env=env, mounts=mounts, rank_table_source=rank_table_source)
