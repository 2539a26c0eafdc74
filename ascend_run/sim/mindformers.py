"""The real MindFormers on the simulated servers: its CPU image, the tiny job it trains, the job file.

The demo's job (examples/cpu-job) imitates MindFormers; this one is MindFormers. PyPI has `mindformers` 1.9.0
for `mindspore` 2.9.0 on a CPU (NOTES.md section 8), and its trainer trains a tiny legacy Llama there, alone
and under msrun, with two shims for ops without a CPU kernel (examples/mindformers-cpu/cpu_shims.py).

- the image: the generated train Dockerfile (images/train), built as the demo's CPU image is (local Debian
  base, a wheelhouse served on 127.0.0.1), with MindSpore 2.9.0 and step 2b's `MINDFORMERS_WHEEL_VERSION`;
- the config: examples/mindformers-cpu/pretrain_tiny_llama.yaml, made by `config derive` with the
  `cpu-tiny-llama` preset from the article's r1.5.0 pre-training file (`derive_argv` is the command);
- the job file: `job_file()` writes one that `extends:` a simulated cluster's deployment file; checkpoints,
  dataset and MindFormers' resume record live on storage every server mounts (docs/mindformers-cpu.md).
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Mapping
from pathlib import Path

from ascend_run import shipped
from ascend_run.sim.demo import cpu_requirements

MINDSPORE_VERSION = "2.9.0"     # what mindformers 1.9.0 requires (mindspore~=2.9.0)
MINDFORMERS_VERSION = "1.9.0"   # the newest on PyPI without hyper-parallel (not on PyPI)
TAG = f"ascend-run/mindformers-cpu:ms{MINDSPORE_VERSION}-mf{MINDFORMERS_VERSION}"
WHEELHOUSE = Path.home() / ".cache" / "ascend-run" / "wheelhouse-mindformers"

# In the wheel as package data too (pyproject.toml), found as the templates are.
EXAMPLE_DIR = shipped("examples/mindformers-cpu") or Path(__file__).resolve().parents[2] / "examples/mindformers-cpu"
CONFIG = EXAMPLE_DIR / "pretrain_tiny_llama.yaml"
EXAMPLE_JOB = EXAMPLE_DIR / "train-tiny-llama.yaml"   # the deployment file, for a cluster made in .sim/
CONFIG_WORKERS = 2               # the committed config's data_parallel: one worker on each of 2 servers

# In the container: the example directory (job.sync) and the storage every server shares.
EXAMPLE_TARGET = "/opt/ascend-run/mindformers-cpu"
SHARED_TARGET = "/home/work/shared"
OUTPUT_DIR = f"{SHARED_TARGET}/output"            # checkpoint/rank_<r>/, resume_record/, log/
CHECKPOINT_DIR = f"{OUTPUT_DIR}/checkpoint"       # what load_checkpoint names when resuming
DATASET_PREFIX = f"{SHARED_TARGET}/dataset/wiki_64"  # `data prepare --output-prefix`

# Fault injection read by the stand-in run_mindformer.py: raise after step N on rank R.
CRASH_STEP_ENV = "ASCEND_RUN_CRASH_STEP"
CRASH_RANK_ENV = "ASCEND_RUN_CRASH_RANK"


def requirements() -> list[str]:
    """MindSpore 2.9.0 and MindFormers 1.9.0 with the train image's pins (numpy 1.x)."""
    pins = [req for req in cpu_requirements() if not req.startswith("mindspore==")]
    return [f"mindspore=={MINDSPORE_VERSION}", f"mindformers=={MINDFORMERS_VERSION}", *pins]


def build_image(client, on_event: Callable = lambda e: None) -> str:
    """Build the image (cached layers after the first time); returns its tag.

    Some of MindFormers' dependencies exist only as source (jieba, rouge-chinese): the wheelhouse is made
    with `pip wheel` on this machine, whose Python must be the image's (3.11, Debian 12)."""
    from ascend_run.sim.demo import build_cpu_image, ensure_wheelhouse

    wheelhouse = ensure_wheelhouse(WHEELHOUSE, requirements(), build_sdists=True)
    extra = {"MINDSPORE_VERSION": MINDSPORE_VERSION, "MINDFORMERS_WHEEL_VERSION": MINDFORMERS_VERSION}
    return build_cpu_image(client, "train", on_event, extra_args=extra, tag=TAG, wheelhouse=wheelhouse)


def derive_argv(base: str, out: str, npus: int = CONFIG_WORKERS, data_path: str | None = None) -> list[str]:
    """The `config derive` that makes the committed config from the article's r1.5.0 pre-training file."""
    argv = ["ascend-run", "config", "derive", base, "--preset", "cpu-tiny-llama", "--npus", str(npus),
            "--set", "train_dataset.data_loader.sizes=[16, 0, 0]"]
    if data_path:
        argv += ["--data-path", data_path]
    return [*argv, "--out", out]


def train_command(config: str = f"{EXAMPLE_TARGET}/{CONFIG.name}", output_dir: str = OUTPUT_DIR,
                  load_checkpoint: str | None = None, resume_training: bool | str | None = None) -> str:
    """The job's command line: the stand-in run_mindformer.py with the real script's flags."""
    argv = ["python", f"{EXAMPLE_TARGET}/run_mindformer.py", "--config", config, "--output_dir", output_dir]
    if load_checkpoint is not None:
        argv += ["--load_checkpoint", load_checkpoint]
    if resume_training is not None:
        argv += ["--resume_training", str(resume_training)]
    return shlex.join(argv)


def job_file(cluster_dir: Path, image: str, shared_dir: str, *, name: str = "mf-train", command: str | None = None,
             env: Mapping[str, str] | None = None, local_config: Path = CONFIG, workers_per_node: int = 1) -> Path:
    """Write `<name>.yaml` beside a cluster's deployment file: EXAMPLE_JOB for that cluster.

    `shared_dir` is a server directory every server sees (the simulator shares the host's /srv); it is mounted
    at /home/work/shared and named in SHARED_PATHS, so MindFormers treats the checkpoint directory as shared
    and coordinates the resume step across servers (rank 0 reads every rank's meta.json). DEVICE_NUM_PER_NODE
    is the ranks per server: MindFormers assumes 8 and would take a 2-server job for a one-server job. `env`
    adds variables, e.g. the crash injection (`CRASH_STEP_ENV`, `CRASH_RANK_ENV`). `command` replaces the
    training command (`train_command(...)`); `local_config` is the file `launch` checks before it starts."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.width = 110
    data = yaml.load(EXAMPLE_JOB.read_text(encoding="utf-8"))
    data.yaml_set_start_comment(f"Written by ascend_run.sim.mindformers.job_file() from {EXAMPLE_JOB.name}.")
    data.update({"extends": "cluster.yaml", "name": name, "image": image})
    data["container"]["name"] = f"ascend-run-{name}"
    data["mounts"][0]["source"] = shared_dir
    data["env"].update({"DEVICE_NUM_PER_NODE": str(workers_per_node), **(env or {})})
    job = data["job"]
    job.update({"local_workers": workers_per_node, "config": str(Path(local_config).resolve())})
    if command is not None:
        job["command"] = command
    job["sync"][0]["source"] = str(EXAMPLE_DIR)
    path = Path(cluster_dir) / f"{name}.yaml"
    with path.open("w", encoding="utf-8") as fh:
        yaml.dump(data, fh)
    return path
